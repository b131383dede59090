"""Benchmark: one Adam step on RLS+'s per-image weight deltas (FFHQ config-f synthesis,
28.3M parameters per image): torch's default (foreach) Adam against the fused one the
search loop uses, alternated so that both see the same machine load, and the largest
difference of the parameters after 3 steps. Writes benchmarks/results/optimizer.json.

    python benchmarks/optimizer.py [--batch 1] [--rounds 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from rls.generators import Generator
from rls.generators.make_random import official_config


def adam(shapes, batch: int, device, fused: bool | None, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.zeros(batch, *s, device=device, requires_grad=True) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen).to(device)
    return torch.optim.Adam(params, lr=1e-4, fused=fused), params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/optimizer.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    shapes = [p.shape for p in Generator(**official_config("ffhq1024")).synthesis.parameters()]
    runs = {"foreach (default)": adam(shapes, args.batch, device, None)}
    runs["fused"] = adam(shapes, args.batch, device, True)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds + 1):  # the first round is a warm-up
        for name, (opt, _) in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - t)
    best = {name: min(t[1:]) for name, t in times.items()}
    diff = max(
        (a - b).abs().max().item() for a, b in zip(runs["foreach (default)"][1], runs["fused"][1])
    )
    speedup = best["foreach (default)"] / best["fused"]
    n = sum(p.numel() for p in runs["fused"][1])
    print(f"Adam step on {n:,} parameters: {best} s; fused is {speedup:.1f}x faster;"
          f" max |difference| after {args.rounds + 1} steps {diff:.1e}")  # fmt: skip
    result = dict(
        benchmark="adam_rls_plus_deltas",
        parameters=n,
        best_s=best,
        speedup_fused=speedup,
        max_abs_difference=diff,
        device=str(device),
        threads=torch.get_num_threads(),
        load_average_1_5_15=os.getloadavg(),
        config=vars(args) | {"out": str(args.out)},
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
