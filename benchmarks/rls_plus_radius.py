"""Measure where the RLS+ ℓ1 ball binds: how far RLS+ moves each W+ row from its RLS anchor
when the ball is off (radius = inf), in units of sqrt(w_dim) (the radius r of the config:
rows stay within r·sqrt(w_dim) of the anchor, method.md §4).

Radii above the largest distance travelled leave RLS+ unconstrained, so they all give
the same result; the radius sweep (configs/experiment/radius_sweep.yaml) takes its values
below it. Uses the experiment's own generator, flow (trained and cached as evaluate.py
does), data, degradation and RLS+ recipe. Prints per-image travel and writes
benchmarks/results/rls_plus_radius.json.

    python benchmarks/rls_plus_radius.py                         # experiment=radius_sweep
    python benchmarks/rls_plus_radius.py scale=16 corruption=gaussian_noise
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import evaluate  # noqa: E402  (the entry point's prior cache: the same flow as the sweep)
from rls.degradations import build_degradation  # noqa: E402
from rls.search import build_method, search  # noqa: E402
from rls.seeding import seeds_for  # noqa: E402


def main(overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("evaluate", ["experiment=radius_sweep", *overrides])
    torch.set_num_threads(int(cfg.threads or 1))
    G = instantiate(cfg.generator)
    prior, _ = evaluate.load_or_train_prior(cfg, G)
    corruption = OmegaConf.to_container(cfg.corruption, resolve=True)
    D = build_degradation(cfg.scale, **corruption)
    datamodule = instantiate(cfg.data, generator=G, batch_size=int(cfg.data.dataset.n))
    datamodule.setup("test")
    batch = next(iter(datamodule.test_dataloader()))  # every image of the sweep, one batch
    ids = batch["image_id"]
    y = D.observe(batch["hr"].float(), seeds_for(ids, "observe"))
    mcfg = OmegaConf.to_container(cfg.method.rls_plus, resolve=True)
    mcfg.pop("_target_")
    mcfg["radius"] = math.inf  # the ball off: how far does RLS+ go on its own?
    result = search(build_method(**mcfg), G, y, D, seeds_for(ids, "search"), prior=prior)
    moved = (result.latents - result.extras["rls_latents"]).abs().sum(-1) / math.sqrt(G.w_dim)
    per_image = moved.max(dim=1).values  # the row that moved most binds first
    out = {
        "config": {"scale": cfg.scale, "corruption": corruption["name"], "images": len(ids),
                   "resolution": G.img_resolution, "w_dim": G.w_dim,
                   "rls_steps": mcfg["anchor"]["steps"],
                   "rls_plus_steps": result.steps - mcfg["anchor"]["steps"]},
        "travel_per_image_max_row": [round(float(v), 4) for v in per_image],
        "travel_per_row_median": float(moved.median()),
        "travel_max": float(moved.max()),
    }  # fmt: skip
    for image_id, v, rows in zip(ids, per_image, moved):
        print(f"{image_id}: largest row {float(v):.3f}, median row {float(rows.median()):.3f}")
    print(f"ball binds below r = {out['travel_max']:.3f} (largest ℓ1 row distance / sqrt(w_dim))")
    path = ROOT / "benchmarks" / "results" / "rls_plus_radius.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
