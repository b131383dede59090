"""Sample diversity and ADA's augmentation strength along train_generator.py runs
(docs/generator_lfw32.md): reads each run's csv/metrics.csv files.

    .venv/bin/python benchmarks/lfw32_training_curves.py \\
        "no noise inputs (shipped)=runs/train_generator/lfw32_ada_nonoise" \\
        "noise inputs=runs/train_generator/lfw32_ada"

Writes docs/generator_lfw32_diversity.png.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def read(run: Path) -> list[dict]:
    rows = []
    files = sorted((run / "csv").glob("metrics_*.csv")) + [run / "csv" / "metrics.csv"]
    for path in files:
        if path.is_file():
            with open(path) as f:
                rows += list(csv.DictReader(f))
    return rows


def main(argv: list[str]) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), dpi=110)
    ax_div, ax_p = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for spec in argv:
        label, _, path = spec.partition("=")
        rows = read(Path(path))
        div = [(float(r["kimg"]), float(r["diversity"])) for r in rows if r.get("diversity")]
        ada = [(float(r["kimg"]), float(r["ada/p"])) for r in rows if r.get("ada/p")]
        if div:
            ax_div.plot(*zip(*div), label=label)
        if ada:
            ax_p.plot(*zip(*ada), label=label, lw=0.8)
    ax_div.axhline(0.8, color="grey", ls="--", lw=0.8)
    ax_div.axhline(0.46, color="C3", ls=":", lw=0.8, label="first lfw32 (collapsed)")
    ax_div.set_xlabel("thousands of images shown")
    ax_div.set_ylabel("diversity (pairwise RMSE / data's)")
    ax_div.legend(fontsize=7)
    ax_p.set_xlabel("thousands of images shown")
    ax_p.set_ylabel("ADA augmentation probability p")
    ax_p.legend(fontsize=7)
    fig.tight_layout()
    out = ROOT / "docs" / "generator_lfw32_diversity.png"
    fig.savefig(out)
    print(out)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
