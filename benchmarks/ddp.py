"""Benchmark: evaluate.py throughput with 2 CPU processes (trainer=ddp, gloo) against 1.

Both runs restore the same images with the same recipe, one torch thread per process,
after a warm-up run that trains and caches the flow (so neither run trains it). Images/s is
over the whole command (process start, model build and report writing included) and over
the search alone (results.csv ``seconds``: per process, the sum over its images; the
slowest process sets the pace). Writes benchmarks/results/ddp.json; the machine load is
recorded: on a shared CPU, read the ratio, not the absolute numbers.

    python benchmarks/ddp.py [--images 8] [--steps 200] [--generator tiny]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(overrides: list[str], run_dir: Path) -> float:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "evaluate.py", *overrides, f"run_dir={run_dir}"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def search_seconds(run_dir: Path) -> float:
    with open(run_dir / "results.csv") as f:
        return sum(float(r["seconds"] or 0) for r in csv.DictReader(f) if r["method"] != "bicubic")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--generator", default="tiny")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/ddp.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rls_ddp_"))
    common = [
        f"generator={args.generator}",
        "method=[rls]",
        f"method.rls.steps={args.steps}",
        f"data.dataset.n={args.images}",
        f"data.batch_size={args.batch_size}",
        "threads=1",
        "logger=none",
        "metrics.lpips=[]",
        "metrics.fid=false",
        "trainer.enable_progress_bar=false",
        "flow_training.max_steps=50",
        f"flow_training.cache_dir={work / 'flows'}",
        f"hydra.run.dir={work / 'hydra'}",
    ]
    run([*common, "data.dataset.n=1", "method.rls.steps=1"], work / "warmup")  # the flow
    load_before = os.getloadavg()
    wall = {
        "1 process": run([*common, "trainer.accelerator=cpu"], work / "single"),
        "2 processes (ddp, gloo)": run(
            [*common, "trainer=ddp", "trainer.accelerator=cpu"], work / "ddp"
        ),
    }
    single_search = search_seconds(work / "single")
    ddp_search = search_seconds(work / "ddp") / 2  # two ranks share the images evenly
    rows = {name: {"wall_s": s, "images_per_s": args.images / s} for name, s in wall.items()}
    rows["1 process"]["search_images_per_s"] = args.images / single_search
    rows["2 processes (ddp, gloo)"]["search_images_per_s"] = args.images / ddp_search
    ratio = wall["1 process"] / wall["2 processes (ddp, gloo)"]
    search_ratio = single_search / ddp_search
    print(f"images/s, 2 processes / 1: {ratio:.2f}x whole command, {search_ratio:.2f}x search")
    result = {
        "benchmark": "evaluate_ddp_cpu",
        "config": vars(args) | {"out": str(args.out)},
        "rows": rows,
        "images_per_s_ratio_2_vs_1": ratio,
        "search_images_per_s_ratio_2_vs_1": search_ratio,
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15_before": load_before,
        "load_average_1_5_15_after": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
