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
from hydra.errors import CompactHydraException
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


# Measured on this project's 2-core CPU, one torch thread: the authors' MAF on a 64-d W
# (generator=tiny / lfw32) trains at about 25 steps/s at batch 512.
STEPS_PER_SECOND_64D = 25.0


def flow_training_notice(cfg: DictConfig, G: torch.nn.Module) -> str:
    """What is about to be trained, roughly how long it can take here, and the key that caps
    it: a first run on a new generator trains its flow before restoring anything."""
    ft = cfg.flow_training
    every = max(int(ft.epoch_size) // int(ft.batch_size), 1)
    rate = STEPS_PER_SECOND_64D * (64 / G.w_dim) ** 2  # the MAF's layers grow as w_dim²
    minutes = int(ft.max_steps) / rate / 60
    return (
        f"[evaluate] prior: the flow ({cfg.flow.get('family', '?')}, w_dim={G.w_dim}) trains "
        f"to its held-out plateau: a validation every {every} steps, stop after "
        f"{ft.patience} without a lower NLL, at most {ft.max_steps} steps (up to ~{minutes:.0f}"
        f" min on a 2-core CPU at ~{rate:.0f} steps/s; a GPU is far faster). Cap it with "
        f"flow_training.max_steps=1500 (the demo's), or train it once ahead with "
        f"python train_flow.py generator=...; it is cached and reused."
    )


def load_or_train_prior(cfg: DictConfig, G: torch.nn.Module, run_dir: Path | None = None):
    """The W prior of the search: ``prior.path`` (with ``prior.stats``: a checkpoint of the
    authors' code), else the flow for G and the recipe (``flow`` + ``flow_training``) from
    the flow cache, the same cache ``python train_flow.py`` writes; trained there first
    when missing and ``prior.train_if_missing``, its curves and diagnostics then going to
    the run's W&B logger (a run of its own, job type ``train_flow``, beside the
    evaluation's in ``run_dir``). Without either, methods needing a prior will say so.
    Returns ``(prior or None, the file it came from or None)``."""
    from dataclasses import asdict

    from rls.flows import load_prior
    from rls.flows.recipe import FlowRecipe
    from rls.lit import cached_flow

    pcfg = cfg.prior
    if pcfg.get("path"):
        prior = load_prior(pcfg.path, generator=G, stats=pcfg.get("stats"))
        print(f"[evaluate] prior: loaded {pcfg.path}")
        return prior, str(pcfg.path)
    recipe = FlowRecipe.from_settings(
        OmegaConf.to_container(cfg.flow, resolve=True),
        OmegaConf.to_container(cfg.flow_training, resolve=True),
    )
    cache = Path(cfg.flow_training.cache_dir)
    if not cache.is_absolute() and _hydra_running():
        cache = Path(hydra.utils.get_original_cwd()) / cache
    found = cached_flow(G, recipe, cache, train_if_missing=False)
    if found.flow is not None:
        print(
            f"[evaluate] prior: reusing the flow trained for this generator, recipe: {found.path}"
        )
        return found.flow, str(found.path)
    if not pcfg.get("train_if_missing"):
        print(
            f"[evaluate] prior: none (no {found.path}: run python train_flow.py with the same "
            "generator and recipe, or set prior.path, or prior.train_if_missing=true)"
        )
        return None, None
    from callbacks.flow_report import FlowDiagnostics, FlowReport
    from callbacks.loggers import finish, make_logger, sweep_name
    from callbacks.progress import RunProgressBar

    out_dir = found.path.parent
    print(f"[evaluate] prior: no flow for this generator and recipe yet; training {found.path}")
    print(flow_training_notice(cfg, G))
    logger = None  # W&B only: a csv logger would share the run's csv/metrics.csv
    if (cfg.get("logger") or {}).get("kind") == "wandb":
        logger = make_logger(
            cfg.logger, run_dir or out_dir, f"flow-{out_dir.name}", sweep_name(), "train_flow",
            {"generator": OmegaConf.to_container(cfg.generator, resolve=True),
             "flow_training": asdict(recipe)},
        )  # fmt: skip
    found = cached_flow(
        G,
        recipe,
        cache,
        generator_name=str(cfg.generator.get("source")),
        logger=logger,
        # steps, NLL and ETA of the fit (dropped when quiet), the flow's pictures
        callbacks=[RunProgressBar(), FlowReport(), FlowDiagnostics()],
        trainer_kwargs={
            "enable_progress_bar": cfg.trainer.get("enable_progress_bar", True),
            "enable_model_summary": False,
        },
    )
    finish(logger)
    nll = found.metrics.get("val_nll", {})
    print(f"[evaluate] prior: trained in {found.metrics.get('steps')} steps; held-out NLL {nll}")
    return found.flow, str(found.path)


def check_prior_support(G: torch.nn.Module, prior, source: str | None, methods: dict) -> None:
    """Warn once, and note in each affected method's results rows and report entry, when a
    method starts far off the support of the prior (``rls.flows.support``)."""
    if prior is None:
        return
    import warnings

    from rls.search.flow_start import check_flow_starts

    off = {name: c for name, c in check_flow_starts(G, prior, methods).items() if c.outside}
    for name, check in off.items():
        note = (
            f"start off the prior's support: ‖f(start)‖ {check.start_norm:.3g} vs "
            f"√d {check.shell:.3g} ({source})"
        )
        methods[name].notes = "; ".join(filter(None, [methods[name].notes, note]))
    if off:
        check = next(iter(off.values()))
        warnings.warn(
            f"{', '.join(off)}: the start code lies far outside the prior {source}: "
            f"{check.summary()}. Its flow terms will pull the search away from the data fit "
            "(RLS underfits). Fix: a flow whose support holds the start (flow=maf_paper, the "
            "authors', which evaluate.py and train_flow.py train by default), or a start "
            "inside this flow's support.",
            stacklevel=2,
        )


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


def failed_run(run_dir: Path) -> str | None:
    """A one-line account of a run in which every image failed (no ``ok`` row of any
    searched method in results.csv), else ``None``."""
    from collections import Counter

    from rls.reports.run_files import read_rows

    rows = [r for r in read_rows(run_dir / "results.csv") if r["method"] != "bicubic"]
    if not rows or any(r["status"] != "failed" for r in rows):
        return None
    reasons = Counter(r.get("notes") or "no reason recorded" for r in rows)
    reason, count = reasons.most_common(1)[0]
    return (
        f"every image failed ({len(rows)} failed rows; {count} of them: {reason}); "
        f"the reasons of each are in {run_dir / 'results.csv'} and {run_dir / 'report.html'}"
    )


class EveryImageFailed(RuntimeError):
    """The run ended, but no image has a result (:func:`failed_run`)."""


class RunFailed(CompactHydraException):
    """A setting that cannot work or a run that produced nothing, as one line: Hydra prints
    the message alone and exits with status 1; ``HYDRA_FULL_ERROR=1`` shows the traceback
    (and that of the error it wraps)."""


def _one_line_error(err: Exception) -> RunFailed | None:
    """What the command line shows for ``err`` escaping :func:`evaluate`: an operator
    mistake (:class:`rls.preflight.PreflightError`) as its message alone; inside a sweep
    (``-m``), any error as one line naming the member and the sweep report (the traceback
    is in the report's member.json); ``None``: let it through with its traceback."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import InstantiationException

    from rls.data.shard import ShardError
    from rls.generators.formats_common import CheckpointError
    from rls.preflight import PreflightError
    from rls.reports.run_lock import RunDirBusy
    from rls.weights import MissingWeightsError

    mistakes = (
        PreflightError
        | EveryImageFailed
        | RunDirBusy
        | CheckpointError
        | MissingWeightsError
        | ShardError
    )
    if isinstance(err, InstantiationException) and isinstance(err.__cause__, mistakes):
        err = err.__cause__  # a bad file met while Hydra built a configured object
    plain = isinstance(err, mistakes)
    message = str(err) if plain else f"{type(err).__name__}: {err}"
    if _multirun():
        from rls.reports.sweep import SWEEP_FILES

        hydra_cfg = HydraConfig.get()
        member = " ".join(hydra_cfg.overrides.task) or "(no overrides)"
        report = Path(hydra_cfg.sweep.dir) / SWEEP_FILES[-1]
        return RunFailed(
            f"[evaluate] sweep member #{hydra_cfg.job.num} '{member}' failed: {message}; "
            f"every member's outcome: {report}"
        )
    if plain:
        return RunFailed(f"[evaluate] {message}")
    return None


def _multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


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
