"""One logger factory for every job: ``make_logger(cfg, save_dir)``.

``cfg`` is a ``configs/logger/*.yaml`` choice (a mapping with ``kind``):
- ``wandb``: ``mode: auto`` runs online when an account is configured (``WANDB_API_KEY``
  or an ``api.wandb.ai`` entry in ~/.netrc) and offline otherwise; ``WANDB_MODE`` in the
  environment (e.g. ``disabled``) always wins. Offline runs sync later with ``wandb sync``.
- ``csv``: Lightning's CSVLogger under ``save_dir``.
- ``none``: no logger (``False`` for ``pl.Trainer(logger=...)``).
"""

from __future__ import annotations

import hashlib
import netrc
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

KINDS = ("wandb", "csv", "none")


def wandb_account_configured() -> bool:
    """True when W&B credentials exist locally; never touches the network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if not path.is_file():
        return False
    try:
        return netrc.netrc(str(path)).authenticators("api.wandb.ai") is not None
    except (netrc.NetrcParseError, OSError):
        return False


def wandb_mode(requested: str = "auto") -> str:
    """The W&B mode to use: the environment's ``WANDB_MODE``, else ``requested``, with
    ``auto`` resolved to ``online`` / ``offline`` by whether an account is configured."""
    mode = os.environ.get("WANDB_MODE") or requested or "auto"
    if mode == "dryrun":
        mode = "offline"
    if mode == "auto":
        mode = "online" if wandb_account_configured() else "offline"
    if mode not in ("online", "offline", "disabled"):
        raise ValueError(f"unknown W&B mode {mode!r}; use auto, online, offline or disabled")
    return mode


def flat_config(config: Mapping, prefix: str = "") -> dict:
    """``{"method.rls.steps": 500, ...}``: a nested config as one level of dotted keys, so
    the W&B runs table can show, filter and group by any setting (lists stay values)."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flat_config(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def sweep_name() -> str | None:
    """Inside a Hydra multirun (``-m``), the sweep's name: its directory (``hydra.sweep.dir``)
    relative to the launch directory. ``None`` for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    launch_dir = Path(HydraConfig.get().runtime.cwd)
    if sweep_dir.is_absolute() and sweep_dir.is_relative_to(launch_dir):
        sweep_dir = sweep_dir.relative_to(launch_dir)
    return sweep_dir.as_posix()


def wandb_run_id(save_dir: str | Path, job_type: str | None = None) -> str:
    """A W&B run id that is the same on every run of the job in ``save_dir``: the
    directory's name (readable) and 10 hex of its absolute path and the job type, so a
    rerun (a resume) continues its own W&B run instead of adding a second one of the same
    name, and another directory or job (train_flow beside evaluate) gets its own."""
    path = Path(save_dir).expanduser().resolve()
    digest = hashlib.sha256(f"{path}\n{job_type or ''}".encode()).hexdigest()[:10]
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", path.name).strip("-")[:48] or "run"
    return f"{name}-{digest}"


def make_logger(
    cfg: Mapping | None,
    save_dir: str | Path,
    name: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    config: Mapping | None = None,
    rewrites_csv: bool = False,
):
    """A Lightning logger for ``cfg`` writing under ``save_dir`` (``False`` for none).

    W&B only: ``group`` (runs of one sweep), ``job_type`` and ``config`` (logged flat, see
    :func:`flat_config`) are the job's defaults; a ``group`` set in ``cfg`` wins. The run's
    id is :func:`wandb_run_id` (``cfg.id`` wins), resumed when it exists: one W&B run per
    run directory and job, however often it is rerun.
    CSV only: ``rewrites_csv`` for a job that logs its complete aggregates on every
    invocation (evaluate.py), so that replacing the previous metrics.csv on a rerun loses
    nothing; Lightning's warning that it will be replaced is then silenced.
    """
    if cfg is None:
        return False
    cfg = dict(cfg)
    kind = cfg.get("kind", "none")
    save_dir = Path(save_dir)
    if kind == "none":
        return False
    if kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        logger = CSVLogger(save_dir=str(save_dir), name=cfg.get("name") or "csv", version="")
        if rewrites_csv:
            log_dir = re.escape(str(Path(logger.log_dir)))
            warnings.filterwarnings("ignore", message=f"Experiment logs directory {log_dir}")
        return logger
    if kind == "wandb":
        from pytorch_lightning.loggers import WandbLogger

        save_dir.mkdir(parents=True, exist_ok=True)
        return WandbLogger(
            project=cfg.get("project") or "rls",
            name=cfg.get("name") or name,
            save_dir=str(save_dir),
            group=cfg.get("group") or group,
            job_type=job_type,
            config=flat_config(config or {}),
            tags=list(cfg.get("tags") or []),
            mode=wandb_mode(cfg.get("mode", "auto")),
            id=cfg.get("id") or wandb_run_id(save_dir, job_type),
            resume="allow",  # a rerun in save_dir continues the same W&B run
        )
    raise ValueError(f"unknown logger kind {kind!r} in the logger config; choose one of {KINDS}")


def finish(logger) -> None:
    """End a logger's W&B run so that the next job of the process starts its own (wandb
    otherwise hands the live run to the next ``WandbLogger``). Other loggers: nothing."""
    from pytorch_lightning.loggers import WandbLogger

    if isinstance(logger, WandbLogger) and logger._experiment is not None:
        logger.experiment.finish()
