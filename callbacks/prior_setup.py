"""The W prior of an evaluation from its Hydra config: a given file, the flow cache, or a
flow trained into the cache first (the cache itself: :mod:`rls.lit.flow_cache`)."""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf


def _hydra_running() -> bool:
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
