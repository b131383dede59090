"""Benchmark: RLS / RLS+ search speed and memory by batch size and resolution.

Two modes:

- default: RLS on random-weight StyleGAN2 networks at 64² and 256² (official mapping, w_dim
  512; synthesis channels reduced for CPU), batch 1, 4, 8: seconds per step and images/s of
  batch 8 against batch 1. Writes benchmarks/results/search.json.
- ``--generator ffhq1024``: the paper's network (FFHQ config-f 1024², full channels, random
  weights from ``rls.generators.make_random``): seconds per RLS step and per RLS+
  fine-tuning step (per-image weight deltas under vmap), peak memory (RSS sampled on CPU,
  ``max_memory_allocated`` on CUDA), the estimated seconds per image of the authors' recipe
  (500 RLS + 80 RLS+ steps at x8), and, with ``--breakdown``, the step split into generator
  forward, backward, flow, degradation, optimiser, projection and the rest (Python
  overhead). Writes benchmarks/results/search_config_f.json.

Step times come from the search's own per-step callback (the time between two callbacks of
one stage is one full step: render, losses, backward, optimiser, projection). The machine
load (``uptime``) is recorded: on a shared CPU compare ratios measured in one run.

    python benchmarks/search.py                                   # reduced widths, CPU
    python benchmarks/search.py --generator ffhq1024 --batches 1 2 4 --breakdown
    python benchmarks/search.py --generator ffhq1024 --device cuda --tf32 --batches 1 4 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from rls.degradations import build_degradation
from rls.flows import WFlow, sample_w
from rls.generators import build_generator
from rls.search import build_method, search
from rls.search.losses import flow_nll_and_pn, lr_l1, to_unit
from rls.search.projections import project_l1_ball, renormalize
from rls.search.rls_plus import STEPS_BY_SCALE

# timings per step: start from the w_avg set below, not the mean of 1e6 mapped z (a one-off
# cost of minutes on a CPU at 512-d that is not a search step)
START = "w_avg"

RLS_STEPS = 500  # the authors' RLS steps (method.md §3)


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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


@contextmanager
def peak_memory(device: torch.device, out: dict):
    """``out["peak_bytes"]``: CUDA max_memory_allocated, or the CPU RSS peak sampled every
    5 ms by a thread (``out["baseline_bytes"]``: RSS before)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield
        out["peak_bytes"] = torch.cuda.max_memory_allocated(device)
        out["memory_kind"] = "cuda_max_memory_allocated"
        return
    out["baseline_bytes"] = peak = rss_bytes()
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.wait(0.005):
            peak = max(peak, rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        out["peak_bytes"] = max(peak, rss_bytes())
        out["memory_kind"] = "cpu_rss_peak"


def timed_search(method, G, y, D, prior, device) -> tuple[dict[str, list[float]], float]:
    """Run ``method`` once; per stage, the durations of its full steps (callback to callback)
    and the total seconds."""
    stamps: list[tuple[str, float]] = []

    def callback(step, stage, losses):
        sync(device)
        stamps.append((stage, time.perf_counter()))

    t0 = time.perf_counter()
    search(method, G, y, D, torch.arange(y.shape[0]), prior=prior, callback=callback)
    sync(device)
    total = time.perf_counter() - t0
    steps: dict[str, list[float]] = {}
    for (stage_a, ta), (stage_b, tb) in zip(stamps, stamps[1:]):
        if stage_a == stage_b:
            steps.setdefault(stage_a, []).append(tb - ta)
    return steps, total


def median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2] if values else float("nan")


def time_rls(G, prior, batch: int, steps: int, scale: int, device) -> float:
    """Seconds per RLS step for one batch (reduced-width mode; after one warm-up search)."""
    D = build_degradation(scale).to(device)
    lr = G.img_resolution // scale
    y = torch.rand(batch, 3, lr, lr, generator=torch.Generator().manual_seed(batch)).to(device)
    seeds = torch.arange(batch)
    search(build_method("rls", steps=2, start=START), G, y, D, seeds, prior=prior)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    search(build_method("rls", steps=steps, start=START), G, y, D, seeds, prior=prior)
    sync(device)
    return (time.perf_counter() - t0) / steps


def reduced_widths(args, device) -> dict:
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
    return {"benchmark": "rls_search", "rows": rows, "images_per_s_ratio_batch8_vs_batch1": ratios}


def breakdown(G, prior, batch: int, scale: int, device, reps: int) -> dict:
    """Seconds of each part of one RLS step and of one RLS+ step, timed apart (median of
    ``reps``): generator forward and backward (w.r.t. W+ and noise; RLS+: also the
    per-image weight deltas under vmap), flow (both terms, forward + backward at
    batch x 18 x 512), degradation (forward + backward at full resolution), Adam, and RLS+'s
    projection. What a full step takes beyond their sum is the loop's own overhead."""
    from rls.search.base import SearchContext
    from rls.search.rls import fixed_noise
    from rls.search.rls_plus import DELTA

    D = build_degradation(scale).to(device)
    r = G.img_resolution
    y = torch.rand(batch, 3, r // scale, r // scale, device=device)
    ctx = SearchContext(G, y, D, torch.arange(batch), prior, device=device)
    G.requires_grad_(False)
    ws = G.mapping.w_avg.expand(batch, G.num_ws, -1).clone().requires_grad_(True)
    noise = {k: v.requires_grad_(True) for k, v in fixed_noise(ctx).items()}
    v = {"w": ws, **noise}
    theta0 = dict(G.synthesis.named_parameters())
    deltas = {DELTA + n: torch.zeros(batch, *p.shape, device=device) for n, p in theta0.items()}
    v_plus = {**v, **{k: d.requires_grad_(True) for k, d in deltas.items()}}

    def clock(fn) -> float:
        times = []
        for _ in range(reps):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - t0)
        return median(times)

    out = {"rls": _parts(ctx, v, ws, noise, [], False, clock)}
    out["rls_plus"] = _parts(ctx, v_plus, ws, noise, list(deltas.values()), True, clock)
    return out


def _parts(ctx, variables, ws, noise, deltas, tune, clock) -> dict[str, float]:
    """The timed parts of one RLS (``tune=False``) or RLS+ (``tune=True``) step."""
    from rls.search.rls import noise_names
    from rls.search.rls_plus import render_with_deltas

    G, D, y, prior = ctx.G, ctx.D, ctx.y, ctx.prior

    def render():
        return render_with_deltas(ctx, variables, tune).image

    forward = clock(lambda: render().detach())
    fwd_bwd = clock(lambda: render().square().mean().backward())
    x = render().detach().requires_grad_(True)
    part = {"generator_forward": forward, "generator_backward": fwd_bwd - forward}
    part["degradation"] = clock(lambda: (10 * lr_l1(D, to_unit(x), y)).sum().backward())
    tuned_noise = [noise[n] for n in noise_names(G)[:9]]
    if not tune:
        rows = ws.detach().clone().requires_grad_(True)

        def flow_step():
            nll, pn = flow_nll_and_pn(prior, rows)
            (0.002 * nll + 0.004 * pn).sum().backward()

        part["flow"] = clock(flow_step)
        params = [ws]
    else:
        params = [ws, *tuned_noise, *deltas]
    opt = torch.optim.Adam(params, lr=1e-4)
    for p in params:
        p.grad = torch.zeros_like(p)
    part["optimiser"] = clock(opt.step)
    if tune:
        anchor = ws.detach().clone()

        def project():
            with torch.no_grad():
                for n in tuned_noise:
                    n.copy_(renormalize(n))
                ws.copy_(anchor + project_l1_ball(ws - anchor, G.w_dim**0.5))

        part["projection"] = clock(project)
    for p in params:
        p.grad = None
    return part


def config_f(args, device) -> dict:
    from rls.generators.make_random import make_random

    overrides = {"img_resolution": args.img_resolution} if args.img_resolution else {}
    G = make_random(args.generator, seed=0, calibration_samples=0, **overrides).to(device)
    if args.compile:  # the per-sample weights of RLS+ run under vmap: compiled for RLS only
        if "rls_plus" in args.methods:
            raise SystemExit("--compile times RLS only: pass --methods rls")
        G.synthesis.forward = torch.compile(G.synthesis.forward)
    prior = WFlow(G.w_dim, family="maf_paper", hidden=(2 * G.w_dim,) * 2)  # the authors' MAF
    prior = prior.fit_standardisation(sample_w(G, 4096, seed=1)).to(device).eval()
    D = build_degradation(args.scale).to(device)
    r = G.img_resolution
    plus_steps = STEPS_BY_SCALE.get(args.scale, 80)
    rows = []
    if args.bracket:  # per batch: RLS, RLS+, RLS again, so that both see the same load
        plan = [(m, b) for b in args.batches for m in ("rls", "rls_plus", "rls")]
    else:
        plan = [(m, b) for m in args.methods for b in args.batches]
    for method, batch in plan:
        if method == "rls_plus" and batch in args.skip_rls_plus_batches:
            continue
        y = torch.rand(batch, 3, r // args.scale, r // args.scale, device=device)
        if method == "rls":
            m = build_method("rls", steps=args.steps, start=START)
        else:  # one anchor step (not timed), then the fine-tuning steps
            m = build_method("rls_plus", anchor={"steps": 1, "start": START}, steps=args.steps)
        mem: dict = {}
        with peak_memory(device, mem):
            steps, total = timed_search(m, G, y, D, prior, device)
        stage = "rls" if method == "rls" else "rls_plus"
        step = median(steps.get(stage, []))
        row = dict(
            method=method,
            batch=batch,
            s_per_step=step,
            s_per_step_per_image=step / batch,
            steps_timed=len(steps.get(stage, [])),
            search_s=total,
            **mem,
        )
        rows.append(row)
        print(
            f"{method:8s} batch {batch}: {step:.2f} s/step ({step / batch:.2f} per image),"
            f" peak {mem['peak_bytes'] / 2**30:.2f} GiB ({mem['memory_kind']})",
            flush=True,
        )
    by = {}  # (method, batch) -> mean s/step over its runs (RLS runs twice with --bracket)
    for key in {(r["method"], r["batch"]) for r in rows}:
        steps = [r["s_per_step"] for r in rows if (r["method"], r["batch"]) == key]
        by[key] = sum(steps) / len(steps)
    recipe = {}
    ratios = {}
    for batch in args.batches:
        if ("rls", batch) in by and ("rls_plus", batch) in by:
            s = (RLS_STEPS * by[("rls", batch)] + plus_steps * by[("rls_plus", batch)]) / batch
            recipe[str(batch)] = s
            ratios[str(batch)] = by[("rls_plus", batch)] / by[("rls", batch)]
            print(
                f"batch {batch}: authors' recipe ({RLS_STEPS} + {plus_steps} steps at"
                f" x{args.scale}) ~ {s:.0f} s per image; RLS+ step / RLS step ="
                f" {ratios[str(batch)]:.2f}"
            )
    result = {
        "benchmark": "search_config_f",
        "generator": f"{args.generator} architecture, random weights (make_random)",
        "rows": rows,
        "recipe": f"{RLS_STEPS} RLS + {plus_steps} RLS+ steps at x{args.scale}",
        "recipe_s_per_image_by_batch": recipe,
        "rls_plus_over_rls_step_by_batch": ratios,
    }
    if args.breakdown:
        parts = breakdown(G, prior, args.breakdown_batch, args.scale, device, reps=args.reps)
        for kind, part in parts.items():
            step = by.get((kind, args.breakdown_batch))
            if step is not None:
                part["rest_python_overhead"] = step - sum(part.values())
            print(f"{kind} step parts (batch {args.breakdown_batch}):")
            for k, s in part.items():
                share = f" ({100 * s / step:.0f}%)" if step else ""
                print(f"    {k:24s} {s:8.3f} s{share}")
        result["breakdown_batch"] = args.breakdown_batch
        result["breakdown_s"] = parts
    return result


def markdown_table(result: dict) -> str:
    """The config-f result as the Markdown table the README quotes."""
    gib = 2**30
    lines = [
        "| method | batch | s / step | s / step / image | peak memory (GiB) |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['method']} | {r['batch']} | {r['s_per_step']:.1f} |"
            f" {r['s_per_step_per_image']:.1f} | {r['peak_bytes'] / gib:.1f} |"
        )
    for batch, s in result.get("recipe_s_per_image_by_batch", {}).items():
        lines.append(
            f"\nAuthors' recipe ({result['recipe']}), batch {batch}: ~{s:.0f} s per image."
        )
    parts = result.get("breakdown_s", {})
    if parts:
        lines += ["", f"Step parts at batch {result['breakdown_batch']} (s):", ""]
        names = sorted({k for part in parts.values() for k in part})
        lines += ["| part | " + " | ".join(parts) + " |", "|---" * (len(parts) + 1) + "|"]
        for name in names:  # a negative rest: the load changed between the two timings
            cells = [f"{parts[m][name]:.2f}" if parts[m].get(name, -1) >= 0 else "–" for m in parts]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    load = result.get("load_average_1_5_15")
    if load:
        lines.append(
            f"\nLoad average during the run: {load[0]:.1f} on {result['cpu_count']} cores."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--generator", default=None, help="ffhq1024: config-f, random weights")
    parser.add_argument(
        "--img-resolution", type=int, default=None, help="its widths at another size (tests)"
    )
    parser.add_argument("--methods", nargs="+", default=["rls", "rls_plus"])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument(
        "--bracket", action="store_true", help="per batch: RLS, RLS+, RLS (ratios under load)"
    )
    parser.add_argument("--skip-rls-plus-batches", type=int, nargs="*", default=[])
    parser.add_argument("--steps", type=int, default=None, help="timed steps per setting")
    parser.add_argument("--scale", type=int, default=8)
    parser.add_argument("--channel-base", type=int, default=4096)
    parser.add_argument("--channel-max", type=int, default=128)
    parser.add_argument("--breakdown", action="store_true", help="time the parts of a step")
    parser.add_argument("--breakdown-batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=2, help="repeats of each timed part")
    parser.add_argument("--tf32", action="store_true", help="CUDA: TF32 matmul and conv")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the synthesis network (RLS only)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--out", default=None)
    parser.add_argument("--table-from", default=None, help="only print a JSON's Markdown table")
    args = parser.parse_args()
    if args.table_from:
        print(markdown_table(json.loads(Path(args.table_from).read_text())), end="")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    device = torch.device(args.device)
    if args.generator:
        args.batches = args.batches or [1, 2, 4]
        args.steps = args.steps or 3
        result = config_f(args, device)
        default_out = "benchmarks/results/search_config_f.json"
    else:
        args.batches = args.batches or [1, 4, 8]
        args.steps = args.steps or 5
        result = reduced_widths(args, device)
        default_out = "benchmarks/results/search.json"
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    result.update(
        device=str(device),
        device_name=torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(),
        load_average_1_5_15=load,
        tf32=bool(args.tf32),
        compiled=bool(args.compile),
        torch=torch.__version__,
        config=vars(args),
    )
    out = Path(args.out or default_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    if args.generator:
        out.with_suffix(".md").write_text(markdown_table(result))
        print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
