"""HR PSNR of the tiny demo (random weights) against bicubic, with and without its noise.

    .venv/bin/python benchmarks/demo_vs_bicubic.py        # about 5 minutes on 2 CPU cores

Runs ``python evaluate.py experiment=demo_tiny method=[rls,rls_plus,wplus]`` (W+ search with
the demo's 200 RLS steps) once with the demo's own corruption (Gaussian noise σ = 0.1) and
once with ``corruption=none``, and records the mean HR PSNR, LR-PSNR and flow NLL per method
in benchmarks/results/demo_vs_bicubic.json.

Why a benchmark and not a test: without corruption the tiny generator's noise inputs cap
HR PSNR (the targets use its constant noise maps, the search its own seeded ones; even the
true w then scores below bicubic), so "RLS beats bicubic on HR PSNR" holds in the demo
(noise) and on noise-free targets (tests/test_search_recovery.py) but not here. This script
records the numbers instead of asserting an ordering the tiny generator cannot give.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

import evaluate  # noqa: E402

CORRUPTIONS = ("gaussian_noise", "none")
METHODS = ("bicubic", "rls", "rls_plus", "wplus")
METRICS = ("psnr", "lr_psnr", "flow_nll")


def run(corruption: str, run_dir: Path) -> dict:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(
            config_name="evaluate",
            overrides=[
                "experiment=demo_tiny",
                f"corruption={corruption}",
                "method=[rls,rls_plus,wplus]",
                "method.wplus.steps=200",  # as the demo's RLS
                "logger=none",
                f"run_dir={run_dir}",
            ],
        )
    evaluate.evaluate(cfg)
    summary = json.loads((run_dir / "summary.json").read_text())["methods"]
    return {
        m: {k: round(summary[m][k]["mean"], 2) for k in METRICS if k in summary[m]}
        for m in METHODS
        if m in summary
    }


def main() -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for corruption in CORRUPTIONS:
            results[corruption] = run(corruption, Path(tmp) / corruption)
            print(corruption)
            for method, values in results[corruption].items():
                print(f"  {method:9s} " + "  ".join(f"{k} {v:7.2f}" for k, v in values.items()))
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    record = {
        "what": "experiment=demo_tiny (4 images, x8, 200 RLS steps), mean per method",
        "date": datetime.date.today().isoformat(),
        "commit": commit,
        "results": results,
        "rls_beats_bicubic_on_hr_psnr": {
            c: results[c]["rls"]["psnr"] > results[c]["bicubic"]["psnr"] for c in CORRUPTIONS
        },
    }
    out = ROOT / "benchmarks" / "results" / "demo_vs_bicubic.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
