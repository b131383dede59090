"""Benchmark: the speed settings of ``rls.speed`` on the real work, one RLS step and one RLS+
step (per-image weights under vmap), at config-f widths.

For each variant (``eager``: the default; ``compiled``: ``torch.compile`` of the synthesis;
``bf16``: bfloat16 autocast; ``channels_last``) and each method, on its own copy of the
same random-weight generator: one search of 2 steps (for ``compiled`` this pays the
compilation: its wall time minus 2 steady steps is reported as ``compile_s``), then a
timed search of ``--steps`` steps (median step from the search's own per-step callback).
The images of the timed search are compared with eager's (same seeds): ``max_abs_diff``
in [0, 1]. Variants run one after another per method, so on a shared CPU compare the
ratios of one run (the load average is recorded).

    python benchmarks/speed.py --img-resolution 256 --steps 3
    python benchmarks/speed.py --device cuda --img-resolution 1024 --variants eager compiled bf16
Writes benchmarks/results/speed_<resolution>.json (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from search import START, median, sync, timed_search  # benchmarks/ is the script's folder

from rls.degradations import build_degradation
from rls.flows import WFlow, sample_w
from rls.search import build_method
from rls.speed import accelerate

VARIANTS = {
    "eager": {},
    "compiled": {"compile": True},
    "bf16": {"precision": "bf16-mixed"},
    "channels_last": {"channels_last": True},
    "compiled_bf16": {"compile": True, "precision": "bf16-mixed"},
}


def make_method(method: str, steps: int):
    if method == "rls":
        return build_method("rls", steps=steps, start=START)
    return build_method("rls_plus", anchor={"steps": 1, "start": START}, steps=steps)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--generator", default="ffhq1024")
    parser.add_argument("--img-resolution", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--scale", type=int, default=8)
    parser.add_argument("--methods", nargs="+", default=["rls", "rls_plus"])
    parser.add_argument("--variants", nargs="+", default=["eager", "compiled"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    from rls.generators.make_random import make_random

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    res = args.img_resolution
    D = build_degradation(args.scale).to(device)
    y = torch.rand(args.batch, 3, res // args.scale, res // args.scale, device=device)
    prior = None
    rows = []
    for method in args.methods:
        eager_images = None
        for variant in args.variants:
            G = make_random(args.generator, seed=0, calibration_samples=0, img_resolution=res)
            G = G.to(device)
            if prior is None:  # the authors' MAF, on this generator's W
                prior = WFlow(G.w_dim, family="maf_paper", hidden=(2 * G.w_dim,) * 2)
                prior = prior.fit_standardisation(sample_w(G, 4096, seed=1)).to(device).eval()
            accelerate(G, **VARIANTS[variant])
            stage = "rls" if method == "rls" else "rls_plus"
            t0 = time.perf_counter()
            warm, warm_total = timed_search(make_method(method, 2), G, y, D, prior, device)
            first_s = time.perf_counter() - t0
            times: dict = {}

            def search_once(times=times, G=G, method=method, prior=prior, stage=stage):
                from rls.search import search

                stamps = []

                def callback(step, name, losses):
                    sync(device)
                    stamps.append((name, time.perf_counter()))

                result = search(
                    make_method(method, args.steps), G, y, D, torch.arange(args.batch),
                    prior=prior, callback=callback,
                )  # fmt: skip
                sync(device)
                for (a, ta), (b, tb) in zip(stamps, stamps[1:]):
                    if a == b == stage:
                        times.setdefault(stage, []).append(tb - ta)
                return result

            result = search_once()
            step = median(times.get(stage, []))
            images = result.images.float().cpu()
            if variant == "eager":
                eager_images = images
            diff = (images - eager_images).abs().max().item() if eager_images is not None else None
            row = {
                "method": method,
                "variant": variant,
                "settings": VARIANTS[variant],
                "s_per_step": step,
                "steps_timed": len(times.get(stage, [])),
                "first_search_s": first_s,
                # the 2-step first search minus 2 steady steps (and RLS+'s anchor step)
                "compile_s": max(0.0, warm_total - (2 + (method != "rls")) * step)
                if VARIANTS[variant].get("compile")
                else None,
                "max_abs_diff_vs_eager": diff,
            }
            rows.append(row)
            eager = next(
                (r for r in rows if r["method"] == method and r["variant"] == "eager"), None
            )
            if eager:
                row["speedup_vs_eager"] = eager["s_per_step"] / step
            print(json.dumps(row), flush=True)
            del G, warm
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    out = {
        "benchmark": "speed_settings",
        "generator": f"{args.generator} widths at {res}², random weights (make_random)",
        "batch": args.batch,
        "scale": args.scale,
        "rows": rows,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": load,
        "torch": torch.__version__,
        "config": vars(args),
    }
    path = Path(args.out or f"benchmarks/results/speed_{res}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
