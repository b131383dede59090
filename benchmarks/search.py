"""Benchmark: RLS search speed by batch size and resolution.

Seconds per RLS step (whole batch and per image) and the estimated seconds per image for a
full 500-step RLS, for batch 1, 4, 8 at 64² and 256², on random-weight StyleGAN2 networks
(official mapping, w_dim 512; synthesis channels reduced for CPU) with the authors' flow
architecture (untrained: speed only). Prints a table and the images/s ratio batch 8 vs
batch 1, and writes benchmarks/results/search.json.

    python benchmarks/search.py                       # CPU, defaults
    python benchmarks/search.py --device cuda --channel-max 512
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from rls.degradations import build_degradation
from rls.flows import WFlow, sample_w
from rls.generators import build_generator
from rls.search import build_method, search


def make_generator(resolution: int, channel_base: int, channel_max: int, device) -> torch.nn.Module:
    G = build_generator(
        seed=0,
        z_dim=512,
        c_dim=0,
        w_dim=512,
        img_resolution=resolution,
        img_channels=3,
        num_layers=8,
        channel_base=channel_base,
        channel_max=channel_max,
    )
    with torch.no_grad():  # a centre for the w̄ start, as a trained network has
        G.mapping.w_avg.copy_(sample_w(G, 1024, seed=0).mean(0))
    return G.to(device)


def time_rls(G, prior, batch: int, steps: int, scale: int, device) -> float:
    """Seconds per RLS step for one batch (after one warm-up search)."""
    D = build_degradation(scale).to(device)
    lr = G.img_resolution // scale
    y = torch.rand(batch, 3, lr, lr, generator=torch.Generator().manual_seed(batch)).to(device)
    seeds = torch.arange(batch)
    search(build_method("rls", steps=2), G, y, D, seeds, prior=prior)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    search(build_method("rls", steps=steps), G, y, D, seeds, prior=prior)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--steps", type=int, default=5, help="timed RLS steps per setting")
    parser.add_argument("--scale", type=int, default=8)
    parser.add_argument("--channel-base", type=int, default=4096)
    parser.add_argument("--channel-max", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--out", default="benchmarks/results/search.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    rows = []
    for res in args.resolutions:
        G = make_generator(res, args.channel_base, args.channel_max, device)
        prior = WFlow(G.w_dim).fit_standardisation(sample_w(G, 4096, seed=1)).to(device).eval()
        for batch in args.batches:
            step = time_rls(G, prior, batch, args.steps, args.scale, device)
            rows.append(
                {
                    "resolution": res,
                    "batch": batch,
                    "s_per_step": step,
                    "s_per_step_per_image": step / batch,
                    "s_per_image_500_steps": 500 * step / batch,
                    "images_per_s": batch / (500 * step),
                }
            )
            r = rows[-1]
            print(
                f"{res:4d}²  batch {batch:2d}  {r['s_per_step']:.4f} s/step  "
                f"{r['s_per_step_per_image']:.4f} s/step/image  "
                f"{r['s_per_image_500_steps']:.1f} s/image (500 steps)"
            )
    ratios = {}
    for res in args.resolutions:
        by_batch = {r["batch"]: r for r in rows if r["resolution"] == res}
        if 1 in by_batch and 8 in by_batch:
            ratios[str(res)] = by_batch[8]["images_per_s"] / by_batch[1]["images_per_s"]
            print(f"{res}²: images/s batch 8 / batch 1 = {ratios[str(res)]:.2f}x")
    result = {
        "benchmark": "rls_search",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "config": vars(args),
        "rows": rows,
        "images_per_s_ratio_batch8_vs_batch1": ratios,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
