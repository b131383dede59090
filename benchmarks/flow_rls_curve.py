"""What the flow prior does to RLS as the flow trains (method.md §2-3).

For each flow checkpoint saved along one training run (``benchmarks/flow_convergence.py
--snapshots``: steps 64·2^k and the best), RLS on the demo's inputs
(``python evaluate.py experiment=demo_tiny method=[rls] prior.path=<checkpoint>``: the 64² tiny
generator, 4 generated targets, ×8, Gaussian noise σ 0.1, RLS from w̄ with the authors'
settings and the demo's 200 steps) and, per checkpoint: RLS's HR PSNR, LR-PSNR and flow NLL
of its code (under that checkpoint, the prior RLS searched with), the checkpoint's held-out
NLL, and where it puts RLS's start: ‖f(w̄)‖ against √w_dim (the typical norm).

    python benchmarks/flow_rls_curve.py --flow-dir .cache/flows/<tiny64 dir> [--steps 64 512]

Each evaluation's run directory is kept (runs/flow_rls_curve/<name>); a checkpoint already
evaluated is read back, not rerun. Results: benchmarks/results/flow_rls_curve.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

from rls.flows import WFlow, sample_w
from rls.generators import load_generator
from rls.lit.flow_module import flow_seed
from rls.search.rls import sample_mean_w

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "flow_rls_curve.json"
RUNS = ROOT / "runs" / "flow_rls_curve"


def checkpoints(flow_dir: Path, steps: list[int] | None) -> dict[str, Path]:
    """``{name: file}``: the snapshots (``step_000064``..., and ``best_so_far`` of a run
    stopped before its plateau) and the final flow (``best``)."""
    found = {p.stem: p for p in sorted((flow_dir / "snapshots").glob("*.safetensors"))}
    if steps:
        found = {k: v for k, v in found.items() if not k.startswith("step_") or int(k[5:]) in steps}
    if (flow_dir / "flow.safetensors").is_file():
        found["best"] = flow_dir / "flow.safetensors"
    return found


def evaluate(name: str, path: Path) -> dict:
    run_dir = RUNS / name
    summary = run_dir / "summary.json"
    if not summary.is_file():
        cmd = [sys.executable, "evaluate.py", "experiment=demo_tiny", "method=[rls]",
               f"prior.path={path}", f"run_dir={run_dir}", "trainer.enable_progress_bar=false",
               "logger=none"]  # fmt: skip
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=os.environ)
        if out.returncode != 0:
            raise RuntimeError(f"{name}: evaluate.py failed:\n{out.stderr[-3000:]}")
    rls = json.loads(summary.read_text())["methods"]["rls"]
    return {k: rls[k]["mean"] for k in ("psnr", "lr_psnr", "flow_nll") if k in rls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flow-dir", type=Path, required=True)
    parser.add_argument("--steps", type=int, nargs="*", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    G = load_generator("tiny", img_resolution=64)  # the demo's generator (generator=tiny64)
    w_bar = sample_mean_w(G)  # RLS's start (the authors': the mean of 1e6 mapped z, seed 0)
    val_w = sample_w(G, 8192, flow_seed(0, "val"))  # the recipe's held-out set
    convergence = ROOT / "benchmarks" / "results" / "flow_convergence.json"
    curve = {}
    if convergence.is_file():  # held-out NLL per step of the same run, when recorded
        run = json.loads(convergence.read_text()).get("tiny64", {})
        curve = {p["step"]: p["val_nll"] for p in run.get("curve", [])}
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    for name, path in checkpoints(args.flow_dir, args.steps).items():
        flow = WFlow.load(path, generator=G).eval()
        with torch.no_grad():
            start_norm = flow.to_gaussian(w_bar[None]).norm().item()
            held_out = flow.nll(val_w).item()
        rls = evaluate(name, path)
        step = int(name.split("_")[1]) if name.startswith("step_") else None
        results[name] = {
            "step": step,
            "checkpoint": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
            "held_out_nll": held_out,
            "held_out_nll_in_training_log": curve.get(step),
            "norm_f_w_bar": start_norm,
            "sqrt_w_dim": math.sqrt(G.w_dim),
            "rls_hr_psnr": rls.get("psnr"),
            "rls_lr_psnr": rls.get("lr_psnr"),
            "rls_flow_nll_of_code": rls.get("flow_nll"),
        }
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=2) + "\n")
        r = results[name]
        print(
            f"{name}: held-out NLL {held_out:.2f}, ‖f(w̄)‖ {start_norm:.1f}; RLS HR "
            f"{r['rls_hr_psnr']:.2f} dB, LR {r['rls_lr_psnr']:.2f} dB, "
            f"NLL {r['rls_flow_nll_of_code']}"
        )


if __name__ == "__main__":
    main()
