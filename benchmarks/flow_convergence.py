"""The default flow recipe trained to its plateau (method.md §2), per generator.

For each generator: the flow that ``python train_flow.py generator=<name>`` trains (the
same Hydra config, the same flow cache, so ``python evaluate.py`` reuses it), its held-out
NLL against every older prior, the steps and wall time it took, why it stopped, and the
held-out NLL curve (one point per validation). With ``--snapshots`` the flow is also saved
at steps 64·2^k and at its best (``<cache dir>/snapshots/``), for the RLS-vs-flow-checkpoint
curve (``benchmarks/flow_rls_curve.py``).

    python benchmarks/flow_convergence.py --generators tiny tiny64 --snapshots
    python benchmarks/flow_convergence.py --generators config_f --max-steps 48   # 512-d, short

``config_f`` is ``generator=ffhq1024 generator.random_init=true`` (the 512-d config-f
mapping network, seeded random weights): on a CPU only a few steps fit, so it runs with
``--max-steps`` and smaller epochs (recorded in the JSON) and reports how far it got.
Results: benchmarks/results/flow_convergence.json (merged per generator).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from callbacks.flow_report import FlowReport
from rls.flows.recipe import FlowRecipe
from rls.lit import cached_flow

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "flow_convergence.json"
GENERATORS = {
    "tiny": ["generator=tiny"],
    "tiny64": ["generator=tiny64"],
    "config_f": ["generator=ffhq1024", "generator.random_init=true"],
}


class Snapshots(pl.Callback):
    """Save the flow (eval-mode statistics as validated) at the first validation at or past
    each step 64·2^k: ``<out_dir>/step_<step>.safetensors``."""

    def __init__(self, out_dir: Path, first: int = 64):
        self.out_dir, self.next = Path(out_dir), first

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.global_step < self.next:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        pl_module.flow.save(self.out_dir / f"step_{trainer.global_step:06d}.safetensors")
        while self.next <= trainer.global_step:
            self.next *= 2


def run(name: str, overrides: list[str], snapshots: bool) -> dict:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train_flow", [*GENERATORS[name], *overrides])
    torch.set_num_threads(int(cfg.threads))
    recipe = FlowRecipe.from_settings(
        OmegaConf.to_container(cfg.flow, resolve=True),
        OmegaConf.to_container(cfg.flow_training, resolve=True),
    )
    G = instantiate(cfg.generator)
    cache = ROOT / cfg.flow_training.cache_dir
    from rls.flows.recipe import flow_cache_dir

    out_dir = flow_cache_dir(cache, G, recipe)
    callbacks = [FlowReport()]
    if snapshots:
        callbacks.append(Snapshots(out_dir / "snapshots"))
    t0 = time.time()
    found = cached_flow(
        G, recipe, cache, generator_name=str(cfg.generator.get("source")), callbacks=callbacks,
        trainer_kwargs={"enable_progress_bar": False, "enable_model_summary": False,
                        "accelerator": "cpu"},
    )  # fmt: skip
    metrics = found.metrics
    nll = metrics["val_nll"]
    curve = metrics.get("curve") or []
    return {
        "generator": name,
        "overrides": [*GENERATORS[name], *overrides],
        "flow_dir": str(out_dir.relative_to(ROOT)),
        "trained_now": found.trained,
        "wall_seconds_this_call": round(time.time() - t0, 1),
        "recipe": {k: v for k, v in recipe.training_kwargs().items()},
        "val_nll": nll,
        "flow_beats_all_older_priors": metrics["flow_beats_all_older_priors"],
        "margin_to_best_older_prior": min(v for k, v in nll.items() if k != "flow") - nll["flow"],
        "steps": metrics["steps"],
        "best_step": metrics.get("best_step"),
        "stopped": metrics.get("stopped"),
        "training_seconds": metrics.get("seconds"),
        "curve": curve,
    }


def summarise_unfinished(name: str, overrides: list[str]) -> dict:
    """The same numbers for a run stopped before its plateau (interrupted; it resumes from
    ``checkpoints/last.ckpt`` when run again): the best checkpoint so far against the older
    priors on the same held-out set, and the curve up to the last checkpoint. The best flow
    so far is also saved as ``snapshots/best_so_far.safetensors``."""
    from rls.flows import WFlow, sample_w
    from rls.flows.recipe import flow_cache_dir
    from rls.lit.flow_module import evaluate_priors, flow_seed, read_checkpoint

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train_flow", [*GENERATORS[name], *overrides])
    recipe = FlowRecipe.from_settings(
        OmegaConf.to_container(cfg.flow, resolve=True),
        OmegaConf.to_container(cfg.flow_training, resolve=True),
    )
    G = instantiate(cfg.generator)
    out_dir = flow_cache_dir(ROOT / cfg.flow_training.cache_dir, G, recipe)
    best = read_checkpoint(out_dir / "checkpoints" / "best.ckpt")
    last = read_checkpoint(out_dir / "checkpoints" / "last.ckpt")
    flow_cfg = {**recipe.flow, "w_dim": G.w_dim}
    if flow_cfg.get("hidden") is None:
        flow_cfg["hidden"] = (2 * G.w_dim, 2 * G.w_dim)
    flow = WFlow(**flow_cfg)
    flow.load_state_dict({k[5:]: v for k, v in best["state_dict"].items()})
    flow.save(out_dir / "snapshots" / "best_so_far.safetensors")
    train0 = sample_w(G, recipe.epoch_size, flow_seed(recipe.seed, "train/0"))
    val_w = sample_w(G, recipe.val_size, flow_seed(recipe.seed, "val"))
    nll = evaluate_priors(flow, train0, val_w)["val_nll"]
    curve = last.get("flow_curve", [])
    best_point = min(curve, key=lambda p: p["val_nll"]) if curve else None
    return {
        "generator": name,
        "overrides": [*GENERATORS[name], *overrides],
        "flow_dir": str(out_dir.relative_to(ROOT)),
        "recipe": recipe.training_kwargs(),
        "val_nll": nll,
        "flow_beats_all_older_priors": all(nll["flow"] < v for k, v in nll.items() if k != "flow"),
        "margin_to_best_older_prior": min(v for k, v in nll.items() if k != "flow") - nll["flow"],
        "steps": int(last["global_step"]),
        "best_step": best_point["step"] if best_point else None,
        "stopped": "interrupted before its plateau (resumable from checkpoints/last.ckpt)",
        "training_seconds": round(float(last.get("flow_seconds", 0.0)), 1),
        "curve": curve,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generators", nargs="+", default=["tiny", "tiny64"], choices=GENERATORS)
    parser.add_argument("--snapshots", action="store_true")
    parser.add_argument("--max-steps", type=int, default=None, help="cap (config_f on a CPU)")
    parser.add_argument("--epoch-size", type=int, default=None)
    parser.add_argument("--val-size", type=int, default=None)
    parser.add_argument(
        "--unfinished", action="store_true",
        help="summarise runs stopped before their plateau from their checkpoints",
    )  # fmt: skip
    args = parser.parse_args()
    overrides = []
    for key, value in (("max_steps", args.max_steps), ("epoch_size", args.epoch_size),
                       ("val_size", args.val_size)):  # fmt: skip
        if value is not None:
            overrides.append(f"flow_training.{key}={value}")
    for name in args.generators:
        if args.unfinished:
            result = summarise_unfinished(name, overrides)
        else:
            result = run(name, overrides, args.snapshots)
        result["machine"] = {
            "platform": platform.platform(), "threads": torch.get_num_threads(),
            "load_average_at_end": list(__import__("os").getloadavg()),
        }  # fmt: skip
        results = json.loads(OUT.read_text()) if OUT.is_file() else {}  # others' runs kept
        results[name] = result
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=2) + "\n")
        nll = result["val_nll"]
        print(
            f"{name}: flow {nll['flow']:.2f} vs "
            + ", ".join(f"{k} {v:.2f}" for k, v in nll.items() if k != "flow")
            + f"; {result['steps']} steps (best {result['best_step']}), stopped: "
            f"{result['stopped']}, {result['training_seconds']} s"
        )


if __name__ == "__main__":
    main()
