"""The flow cache shared by ``python train_flow.py`` and ``python evaluate.py``: one folder
per (generator, recipe) key, trained once (under a file lock) and then reused."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock, Timeout
from torch import nn

from rls.flows import WFlow
from rls.flows.recipe import FLOW_FILE, FlowRecipe, flow_cache_dir, generator_key
from rls.lit import flow_module

log = logging.getLogger("rls.lit")


@dataclass
class CachedFlow:
    """A flow from the flow cache: where it lives, whether this call trained it, and the
    metrics written with it (``None`` when ``flow`` is ``None``: none cached, none trained)."""

    flow: WFlow | None
    path: Path
    trained: bool
    metrics: dict | None


def _readable_or_set_aside(path: Path) -> bool:
    """True when ``path`` opens as a safetensors file; a damaged one (truncated by a full
    disk or a killed copy) is renamed ``<name>.damaged`` with one warning, so the flow is
    trained again instead of every later run failing on it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
        return True
    except Exception as err:  # safetensors raises its own error types for every damage
        aside = path.with_name(path.name + ".damaged")
        os.replace(path, aside)
        log.warning("%s: damaged (%s); set aside as %s, the flow is trained again",
                    path, str(err).splitlines()[0], aside.name)  # fmt: skip
        return False


def cached_flow(
    G: nn.Module,
    recipe: FlowRecipe,
    cache: str | Path,
    *,
    train_if_missing: bool = True,
    generator_name: str | None = None,
    logger=None,
    callbacks=None,
    trainer_kwargs: dict | None = None,
) -> CachedFlow:
    """The flow for ``G`` and ``recipe`` from ``<cache>/<generator key>-<recipe key>/``:
    loaded when it was trained before (by either entry point), else trained there with
    ``fit_flow`` (resuming an interrupted run of the same recipe) when ``train_if_missing``."""
    out_dir = flow_cache_dir(cache, G, recipe)
    path = out_dir / FLOW_FILE
    metrics_path = out_dir / "metrics.json"
    if path.is_file() and _readable_or_set_aside(path):
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        return CachedFlow(WFlow.load(path, generator=G), path, False, metrics)
    if not train_if_missing:
        return CachedFlow(None, path, False, None)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Two runs wanting the same flow at once (two terminals, an array of jobs): one trains
    # it, the other waits and then loads it, instead of both writing into one folder.
    lock = FileLock(out_dir / ".train.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("%s: another process is training this flow; waiting for it", out_dir)
        lock.acquire()
    with lock:
        if path.exists() and _readable_or_set_aside(path):  # trained by the one we waited for
            metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
            return CachedFlow(WFlow.load(path, generator=G), path, False, metrics)
        record = {"generator": generator_name, "generator_key": generator_key(G), **asdict(recipe)}
        (out_dir / "recipe.json").write_text(json.dumps(record, indent=2) + "\n")
        flow, metrics = flow_module.fit_flow(  # looked up now: tests count its calls
            G,
            recipe.flow,
            output_dir=out_dir,
            logger=logger,
            callbacks=callbacks,
            trainer_kwargs=trainer_kwargs,
            generator_name=generator_name,
            **recipe.training_kwargs(),
        )
    return CachedFlow(flow, path, True, metrics)
