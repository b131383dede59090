"""Time the StyleGAN2 generator: synthesis forward, and forward + backward w.r.t. W+.

The search methods run thousands of such passes per image, so this is their inner cost.
Networks use the channel widths of FFHQ config-f (channel_base 32768, channel_max 512,
8 mapping layers) at each resolution, random weights, noise_mode 'const'. Prints a table and
writes JSON (default benchmarks/results/generator.json).

    .venv/bin/python benchmarks/generator.py                      # 64², 256² (batch 1, 4)
    .venv/bin/python benchmarks/generator.py --cases 64x1 64x4 256x1 256x4 1024x1 1024x4
    .venv/bin/python benchmarks/generator.py --device cuda
    .venv/bin/python benchmarks/generator.py --cases 1024x1 --nvidia /path/to/stylegan2-ada-pytorch

``--nvidia DIR`` also times NVIDIA's own networks (a local checkout of
NVlabs/stylegan2-ada-pytorch, never part of this project; on the CPU its ops run their
reference implementations) with the same weights and W+, alternating the two so that both
see the same machine load, and records the speed-up (NVIDIA time / ours) and the largest
image difference. Writes benchmarks/results/generator_vs_nvidia.json by default.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from rls.generators import Generator, normalize_config


def config_f(resolution: int) -> dict:
    """FFHQ config-f widths at ``resolution`` (the 1024² case is the official network)."""
    return normalize_config(
        dict(
            z_dim=512,
            c_dim=0,
            w_dim=512,
            img_resolution=resolution,
            img_channels=3,
            mapping_kwargs=dict(num_layers=8),
            synthesis_kwargs=dict(channel_base=32768, channel_max=512, conv_clamp=256),
        )
    )


def wall_times(fn, device: torch.device, budget_s: float, max_reps: int = 50) -> dict:
    """Median and best wall time of ``fn`` after one warm-up, repeating until ``budget_s``
    (at least 2 reps). On a shared machine the best time is the steadier number."""

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 2 or (time.perf_counter() - start < budget_s and len(times) < max_reps):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return dict(median=statistics.median(times), best=min(times), reps=len(times))


def bench(resolution: int, batch: int, device: torch.device, budget_s: float) -> dict:
    # Structure only (no init needed for timing): uninitialised weights would be garbage, so
    # fill them with standard normals quickly on the target device.
    G = Generator(**config_f(resolution)).eval().requires_grad_(False).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in G.parameters():
            p.normal_(generator=gen)
        for name, b in G.named_buffers():
            if name.endswith("noise_const"):
                b.normal_(generator=gen)
    ws = torch.randn(batch, G.num_ws, G.w_dim, device=device, generator=gen)

    def forward():
        with torch.no_grad():
            G.synthesis(ws)

    def forward_backward():
        w = ws.clone().requires_grad_(True)
        G.synthesis(w).square().mean().backward()

    fwd = wall_times(forward, device, budget_s)
    fb = wall_times(forward_backward, device, budget_s)
    return dict(
        resolution=resolution,
        batch=batch,
        forward_s=fwd["median"],
        forward_best_s=fwd["best"],
        forward_backward_s=fb["median"],
        forward_backward_best_s=fb["best"],
        forward_reps=fwd["reps"],
        forward_backward_reps=fb["reps"],
    )


def compare_nvidia(resolution: int, batch: int, device, reps: int, nvidia_dir: Path) -> dict:
    """Forward + backward w.r.t. W+, ours against NVIDIA's networks with the same weights,
    alternated ``reps`` times; best times (the steadier number on a shared machine)."""
    import sys

    sys.path.insert(0, str(nvidia_dir))
    from training.networks import Generator as NvidiaGenerator  # a local checkout, not ours

    cfg = config_f(resolution)
    G = Generator(**cfg).eval().requires_grad_(False).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in G.parameters():
            p.normal_(generator=gen).mul_(0.5)
        for name, b in G.named_buffers():
            if name.endswith("noise_const"):
                b.normal_(generator=gen)
    N = NvidiaGenerator(**cfg).eval().requires_grad_(False).to(device)
    N.load_state_dict(G.state_dict())
    ws = torch.randn(batch, G.num_ws, G.w_dim, device=device, generator=gen)
    nets = {
        "ours": lambda w: G.synthesis(w, noise_mode="const"),
        "nvidia": lambda w: N.synthesis(w, noise_mode="const", force_fp32=True),
    }
    with torch.no_grad():
        diff = (nets["ours"](ws) - nets["nvidia"](ws)).abs().max().item()
    times: dict[str, list[float]] = {name: [] for name in nets}
    for _ in range(reps + 1):  # the first round is a warm-up
        for name, net in nets.items():
            w = ws.clone().requires_grad_(True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            net(w).square().mean().backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - t)
    best = {name: min(t[1:]) for name, t in times.items()}
    return dict(
        resolution=resolution,
        batch=batch,
        ours_forward_backward_best_s=best["ours"],
        nvidia_forward_backward_best_s=best["nvidia"],
        speedup_nvidia_over_ours=best["nvidia"] / best["ours"],
        reps=reps,
        max_abs_image_difference=diff,
    )


def cpu_name() -> str:
    """The CPU model (Linux /proc/cpuinfo), else whatever ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--cases", nargs="+", default=None, help="RESxBATCH pairs, instead of the grid above"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--nvidia", type=Path, default=None, help="stylegan2-ada-pytorch dir")
    parser.add_argument("--reps", type=int, default=3, help="--nvidia: alternated rounds")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.nvidia:
        cases = [tuple(int(v) for v in c.split("x")) for c in (args.cases or ["256x1"])]
        rows = []
        for res, batch in cases:
            rows.append(compare_nvidia(res, batch, device, args.reps, args.nvidia))
            r = rows[-1]
            print(
                f"{res}² batch {batch}: fwd+bwd ours {r['ours_forward_backward_best_s']:.2f} s,"
                f" NVIDIA {r['nvidia_forward_backward_best_s']:.2f} s:"
                f" {r['speedup_nvidia_over_ours']:.2f}x"
                f" (max |diff| {r['max_abs_image_difference']:.1e})",
                flush=True,
            )
        load = os.getloadavg() if hasattr(os, "getloadavg") else None
        report = dict(device=str(device), torch=torch.__version__, threads=torch.get_num_threads(),
                      load_average_1_5_15=load, results=rows)  # fmt: skip
        out = args.out or Path("benchmarks/results/generator_vs_nvidia.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"wrote {out}")
        return
    args.out = args.out or Path("benchmarks/results/generator.json")

    if args.cases:
        cases = [tuple(int(v) for v in case.split("x")) for case in args.cases]
    else:
        cases = [(res, batch) for res in args.resolutions for batch in args.batches]
    rows = []
    print(f"{'res':>5} {'batch':>5} {'forward [s]':>16} {'fwd+bwd [s]':>16}   (median / best)")
    for res, batch in cases:
        row = bench(res, batch, device, args.budget)
        rows.append(row)
        print(
            f"{res:>5} {batch:>5} {row['forward_s']:>7.3f} / {row['forward_best_s']:<6.3f}"
            f" {row['forward_backward_s']:>7.3f} / {row['forward_backward_best_s']:<6.3f}",
            flush=True,
        )
    report = dict(
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        config="FFHQ config-f widths (channel_base 32768, channel_max 512), noise_mode const, "
        "frozen weights (unfused modulated conv)",
        results=rows,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
