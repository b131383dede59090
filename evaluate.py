"""The main job: restore LR images with StyleGAN-prior methods and measure them.

    python evaluate.py experiment=demo                       # offline demo, a few minutes
    python evaluate.py corruption=gaussian_noise scale=16
    python evaluate.py method=[rls,rls_plus,pulse] data=folder data.dataset.root=faces/
    python evaluate.py trainer=ddp                            # images sharded over devices

Writes into the run directory (``run_dir``; by default
``runs/<name>_<methods>_<corruption>_x<scale>_<config hash>``, the same for the same
configuration, so rerunning the command resumes): config.yaml, results.csv, summary.json,
images/ and report.html. See configs/evaluate.yaml.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

# The keys whose values change the results; the others (trainer, logger, threads, ...) do
# not, so e.g. a run started on one device can be resumed with trainer=ddp.
RESULT_KEYS = (
    "generator",
    "flow",
    "flow_training",
    "prior",
    "method",
    "corruption",
    "data",
    "scale",
    "seed",
)


def config_hash(cfg: DictConfig) -> str:
    """A short hash of everything that changes the results of a run."""
    values = {k: OmegaConf.to_container(cfg, resolve=True).get(k) for k in RESULT_KEYS}
    if isinstance(values.get("data"), dict):  # the shards of one run share its directory
        values["data"] = {k: v for k, v in values["data"].items() if k != "shard"}
    precision = str((cfg.get("trainer") or {}).get("precision", "32-true"))
    if precision not in ("32-true", "32"):  # bf16 / TF32 results differ: a run of their own
        values["precision"] = precision
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:8]


def run_name(cfg: DictConfig) -> str:
    """A readable name, the same for the same configuration (so a rerun resumes):
    ``<name>_<methods>_<corruption>_x<scale>_<config hash>``."""
    parts = [cfg.get("name") or "eval", "+".join(cfg.method.keys())]
    parts += [str(cfg.corruption.get("name", "custom")), f"x{cfg.scale}", config_hash(cfg)]
    return "_".join(str(p) for p in parts)


def resolve_run_dir(cfg: DictConfig) -> Path:
    """``cfg.run_dir`` if set, else ``runs/<run_name>`` (absolute, from the launch directory)."""
    base = Path(hydra.utils.get_original_cwd()) if _hydra_running() else Path.cwd()
    run_dir = Path(cfg.run_dir) if cfg.get("run_dir") else Path("runs") / run_name(cfg)
    return run_dir if run_dir.is_absolute() else base / run_dir


def _hydra_running() -> bool:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized()


from callbacks.exit_status import (  # noqa: E402  (re-exported: the entry point's names)
    EveryImageFailed,
    RunFailed,
    _multirun,
    _one_line_error,
    failed_run,
)
from callbacks.prior_setup import (  # noqa: E402
    STEPS_PER_SECOND_64D,
    check_prior_support,
    flow_training_notice,
    load_or_train_prior,
)

__all__ = [
    "STEPS_PER_SECOND_64D", "EveryImageFailed", "RunFailed", "check_prior_support",
    "failed_run", "flow_training_notice", "load_or_train_prior",
]  # fmt: skip


def check_config(cfg: DictConfig) -> None:
    """Clear errors (:class:`rls.preflight.PreflightError`) for the entry point's own
    settings that compose but cannot run: the method list, the logger, the run directory.
    The rest is :func:`rls.preflight.check_evaluation`'s."""
    from callbacks.loggers import KINDS
    from rls.preflight import PreflightError, check_choice

    if "_group_" in cfg or "_group_" in (cfg.get("method") or {}):
        raise PreflightError(
            "method: a configs/method/*.yaml file starts with '# @package _group_._name_', "
            "which Hydra 1.3 does not expand (the methods land in one '_group_._name_' node and "
            "overwrite each other); start it with '# @package method.<name>' instead"
        )
    if not cfg.get("method"):
        raise PreflightError("method: no method configured; pass e.g. method=[rls,rls_plus]")
    logger = cfg.get("logger") or {}
    if logger:
        check_choice(logger.get("kind", "none"), "logger.kind", KINDS)
        if logger.get("kind") == "wandb":
            check_choice(logger.get("mode", "auto"), "logger.mode",
                         ("auto", "online", "offline", "disabled"))  # fmt: skip
    if cfg.get("run_dir") and resolve_run_dir(cfg).is_file():
        raise PreflightError(f"run_dir={cfg.run_dir}: a file; give a folder (new or earlier run)")
    from rls.data.shard import ShardError, parse_shard

    try:
        parse_shard((cfg.get("data") or {}).get("shard"))
    except ShardError as err:
        raise PreflightError(str(err)) from None


def run_owner(cfg: DictConfig) -> str:
    """Who holds the run directory: the whole run, or shard I of N (``data.shard=I/N``)."""
    from rls.data.shard import owner_name, parse_shard
    from rls.reports.run_lock import DEFAULT_OWNER

    shard = parse_shard((cfg.get("data") or {}).get("shard"))
    return DEFAULT_OWNER if shard is None else owner_name(*shard)


def build_methods(cfg: DictConfig) -> dict:
    """``{name: Method}`` from the ``method`` group (one entry per ``method=[...]`` item)."""
    if not cfg.method:
        raise ValueError("no method configured: pass e.g. method=[rls,rls_plus]")
    methods = {}
    for key, mcfg in cfg.method.items():
        if "_target_" not in mcfg:  # e.g. a recipe tuning a method this run did not select
            print(f"[evaluate] method.{key}: settings without a method config; not run")
            continue
        method = instantiate(mcfg)
        methods[getattr(method, "name", key)] = method
    if not methods:
        raise ValueError("no method configured: pass e.g. method=[rls,rls_plus]")
    return methods


def check_anchor_reuse(cfg: DictConfig, methods: dict) -> None:
    """The rule of ``reuse_rls_anchor``: RLS+ reads RLS's results off its anchor only when
    its anchor recipe is RLS's exactly. When a run has both but they differ (e.g.
    ``method.rls.steps=30`` alone), each runs its own RLS: a warning names the differences
    and the settings that would align them, and RLS+'s rows carry a note."""
    import warnings

    from rls.lit.search_module import anchor_differences

    if not cfg.get("reuse_rls_anchor", True):
        return
    keys = {(m.get("name") or k): k for k, m in cfg.method.items() if m}
    for plus, (rls, diff) in anchor_differences(methods).items():
        shown = ", ".join(f"{k} {a} vs {b}" for k, (a, b) in diff.items())
        prefix = f"method.{keys.get(plus, plus)}.anchor"
        fix = " ".join(f"{prefix}.{k}={b}" for k, (_, b) in diff.items())
        note = f"own RLS anchor, not {rls}'s ({shown})"
        methods[plus].notes = "; ".join(filter(None, [methods[plus].notes, note]))
        warnings.warn(
            f"reuse_rls_anchor: {plus}'s RLS anchor differs from {rls} in {shown}, so {plus} "
            f"searches its own anchor and does not start from {rls}'s results; to share one "
            f"RLS pass {fix}",
            stacklevel=2,
        )


def build_metrics(cfg: DictConfig, resolution: int):
    """A factory of per-method ``RestorationMetrics`` sharing one set of networks, the
    LPIPS net of the searches, and the FID/KID protocol (None without FID)."""
    from rls.fid_stats import protocol, reference_features
    from rls.metrics import RestorationMetrics

    mcfg = cfg.metrics
    shared = RestorationMetrics.pretrained(
        lpips=tuple(mcfg.lpips),
        fid=bool(mcfg.fid),
        niqe=bool(mcfg.get("niqe", False)),
        faces=bool(mcfg.get("faces", False)),
        weights_dir=mcfg.get("weights_dir"),
        allow_download=mcfg.get("allow_download"),
        kid_subset_size=mcfg.kid_subset_size,
    )
    nets = dict(shared.lpips_nets.items())
    feature = shared.fid.inception.net if shared.fid is not None else None
    reference, fid_protocol = None, None
    if feature is not None:
        reference_proto = None
        if mcfg.get("fid_reference"):  # a fixed real set: features cached by set + protocol
            reference, reference_proto, path = reference_features(
                mcfg.fid_reference, feature, resolution
            )
            print(f"[evaluate] FID/KID real set: {reference.shape[0]} images ({path})")
        fid_protocol = protocol(feature, resolution, reference_proto)

    def factory():
        return RestorationMetrics(
            nets,
            feature,
            kid_subset_size=mcfg.kid_subset_size,
            niqe=shared.niqe,
            reference=reference,
            faces=shared.faces,
        )

    return factory, nets.get("alex"), fid_protocol


AUTO_BATCH_START = 8  # data.batch_size=auto: the first try, halved while it does not fit


def batch_size_override(cfg: DictConfig) -> dict:
    """``data.batch_size=auto``: load batches of ``AUTO_BATCH_START`` images; the search
    halves a batch that runs out of memory (``SearchModule(split_batches=True)``)."""
    value = cfg.data.get("batch_size")
    if str(value) == "auto":
        return {"batch_size": AUTO_BATCH_START}
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"data.batch_size must be a positive integer or auto, got {value!r}")
    return {}


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list:
    """The ``callbacks`` group, each given the run directory when it takes one."""
    out = []
    for ccfg in (cfg.get("callbacks") or {}).values():
        if not ccfg:
            continue
        extra = {"run_dir": str(run_dir)} if "run_dir" in ccfg else {}
        if "owner" in ccfg:
            extra["owner"] = run_owner(cfg)
        out.append(instantiate(ccfg, **extra))
    return out


def build_trainer(cfg: DictConfig, run_dir: Path):
    """A Lightning Trainer from the ``trainer`` group (keyword arguments), ``logger`` and
    ``callbacks``; ``inference_mode=False`` because the search needs autograd in test."""
    import pytorch_lightning as pl

    from callbacks.loggers import make_logger, sweep_name

    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    logger = make_logger(
        cfg.get("logger"),
        run_dir,
        name=run_dir.name,
        group=sweep_name(),  # the runs of one -m sweep form one W&B group
        job_type="+".join(cfg.method),
        config=OmegaConf.to_container(cfg, resolve=True),
        rewrites_csv=True,  # the ResultsWriter logs the whole run's aggregates every time
    )
    callbacks = build_callbacks(cfg, run_dir)
    if not kwargs.get("enable_progress_bar", True):  # quiet: Lightning refuses a bar then
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
    kwargs.update(
        logger=logger,
        callbacks=callbacks,
        inference_mode=False,
        precision="32-true",  # trainer.precision applies to the generator (rls.speed), not metrics
        default_root_dir=str(run_dir),
    )
    return pl.Trainer(**kwargs)


def evaluate(cfg: DictConfig) -> Path:
    """Run the evaluation described by ``cfg``; returns the path of report.html."""
    import pytorch_lightning as pl

    from rls.preflight import check_evaluation
    from rls.speed import check_precision

    check_config(cfg)
    precision = check_precision(cfg.trainer.get("precision"))  # before any loading
    plain = OmegaConf.to_container(cfg, resolve=True)
    checked = check_evaluation(plain)  # scale, data, LR sizes, methods: before any loading
    methods = build_methods(cfg)
    check_anchor_reuse(cfg, methods)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = resolve_run_dir(cfg)
    owner = run_owner(cfg)
    with hold_run_dir(run_dir, owner):  # a second process on it (or on the shard) stops here
        return _evaluate_in(cfg, run_dir, plain, checked, methods, precision)


def launching_process() -> bool:
    """True in the process that owns the run directory: global rank 0 of a DDP or
    multi-node run, read from the environment (the launchers set it before this runs)."""
    ranks = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")
    return all(os.environ.get(var, "0") in ("", "0") for var in ranks)


@contextlib.contextmanager
def hold_run_dir(run_dir: Path, owner: str = "run"):
    """The run directory (or the ``owner`` part of it: a shard) held for this run
    (:class:`rls.reports.run_lock.RunDirLock`) by the launching process; DDP ranks it
    starts work under its hold. A shard records its N first (:mod:`rls.data.shard`)."""
    from rls.data.shard import claim_sharding, parse_owner
    from rls.reports.run_lock import DEFAULT_OWNER, RunDirLock

    if not launching_process():
        yield
        return
    if owner != DEFAULT_OWNER:
        claim_sharding(run_dir, *parse_owner(owner))
    with RunDirLock(run_dir, owner=owner):
        yield


def _evaluate_in(
    cfg: DictConfig, run_dir: Path, plain: dict, checked: dict, methods: dict, precision
):

    from callbacks.hydra_sweep import note_run_dir
    from rls.degradations import build_degradation
    from rls.lit.search_module import SearchModule, anchor_sources
    from rls.preflight import check_against_generator
    from rls.reports.run_files import atomic_write_bytes, finished_pairs
    from rls.speed import accelerate

    run_dir.mkdir(parents=True, exist_ok=True)
    note_run_dir(run_dir)  # a sweep member: lets the sweep report find it, even if it fails
    atomic_write_bytes(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode())
    print(f"[evaluate] run directory: {run_dir}")

    G = accelerate(instantiate(cfg.generator), precision=precision, **(cfg.get("speed") or {}))
    if checked["resolution"] != G.img_resolution:  # a checkpoint that tells it only now
        check_against_generator(plain, G.img_resolution)
    corruption = OmegaConf.to_container(cfg.corruption, resolve=True)
    D = build_degradation(cfg.scale, **corruption)
    prior, prior_source = load_or_train_prior(cfg, G, run_dir)
    check_prior_support(G, prior, prior_source, methods)
    metrics, lpips_net, fid_protocol = build_metrics(cfg, G.img_resolution)
    done = finished_pairs(run_dir)
    if done:
        print(f"[evaluate] resuming: {len(done)} (image, method) results already in {run_dir}")

    module = SearchModule(
        G,
        methods,
        D,
        prior=prior,
        perceptual=lpips_net,
        metrics=metrics,
        scale=cfg.scale,
        corruption=str(corruption.get("name", "custom")),
        skip=done,
        bicubic_baseline=bool(cfg.get("bicubic_baseline", False)),
        anchor_from=anchor_sources(methods) if cfg.get("reuse_rls_anchor", True) else None,
        split_batches=str(cfg.data.get("batch_size")) == "auto",
    )
    module.fid_protocol = fid_protocol  # into summary.json and the report
    datamodule = instantiate(cfg.data, generator=G, scale=cfg.scale, **batch_size_override(cfg))
    trainer = build_trainer(cfg, run_dir)
    trainer.test(module, datamodule=datamodule, verbose=False)
    report = run_dir / "report.html"
    if trainer.is_global_zero:
        print(f"[evaluate] results: {run_dir / 'results.csv'}")
        print(f"[evaluate] report:  {report}  (open it in a browser)")
    return report


@hydra.main(config_path="configs", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """The command line: exits non-zero (one line, no traceback) on a setting that cannot
    work, on a run in which every image failed, and at the end of a sweep with a failed
    member (the others still run)."""
    try:
        report = evaluate(cfg)
        failure = failed_run(report.parent)
        if failure:
            raise EveryImageFailed(failure)
    except Exception as err:
        one_line = _one_line_error(err)
        if one_line is None:
            raise
        if not _multirun() and os.environ.get("HYDRA_FULL_ERROR") != "1":
            # Hydra would add a line about HYDRA_FULL_ERROR after the message: one line only
            print(one_line, file=sys.stderr)
            raise SystemExit(1) from None
        raise one_line from err


if __name__ == "__main__":
    from callbacks.config_choices import check_group_choices

    check_group_choices(sys.argv[1:], Path(__file__).resolve().parent / "configs")
    main()
