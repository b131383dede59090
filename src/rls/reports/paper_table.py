"""The paper's results table from a sweep: methods as rows, (sweep column × metric) as
columns, e.g. ``experiment=paper``'s ×8 / ×16 / ×32 / ×64 each with PSNR, SSIM, LPIPS,
NIQE, FID and KID. Written as Markdown, LaTeX (booktabs) and CSV into the sweep directory.

Every value is read from the members' own ``summary.json`` (means over the images that
succeeded; FID/KID over the set), so the table says exactly what each member's report says.
A member without a summary yet (not run, failed before any image) leaves its cells empty.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from rls.reports.run_files import atomic_write_bytes

# (method, label) in the paper's order; other methods follow in the sweep's order
PAPER_METHODS = (
    ("bicubic", "Bicubic"),
    ("pulse_rls_paper", "PULSE"),
    ("pulse", "PULSE (ours)"),
    ("brgm", "BRGM"),
    ("ilo", "ILO"),
    ("rls", "RLS"),
    ("rls_plus", "RLS+"),
    ("ground_truth", "Ground truth"),
)
# (summary key, label, higher is better, decimals)
PAPER_METRICS = (
    ("psnr", "PSNR", True, 2),
    ("ssim", "SSIM", True, 3),
    ("lpips", "LPIPS", False, 3),
    ("niqe", "NIQE", False, 2),
    ("fid", "FID", False, 2),
    ("kid_mean", "KID", False, 4),
    ("face_detected", "Face found", True, 2),  # dlib: rls.metrics.faces
    ("identity_distance", "ID dist.", False, 3),
    ("landmark_distance", "LMD (px)", False, 2),
)
TABLE_FILES = ("paper_table.md", "paper_table.tex", "paper_table.csv")
REFERENCE_ROWS = ("ground_truth",)  # never "best": it is not a restoration


def _value(entry: dict | None, key: str) -> float | None:
    if not entry or key not in entry:
        return None
    value = entry[key]["mean"] if isinstance(entry[key], dict) else entry[key]
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def paper_table(sweep) -> dict:
    """``{"columns": [...], "metrics": [key...], "methods": [...], "labels": {method: label},
    "cells": {method: {column: {metric: value | None}}}, "best": {(column, metric): method}}``
    from a :class:`rls.reports.sweep.Sweep` (its members' summary.json files)."""
    summaries: dict[str, dict] = {}
    for member in sweep.members:
        path = member.run_dir / "summary.json" if member.run_dir else None
        if path is not None and path.is_file():
            summaries[member.column] = json.loads(path.read_text())["methods"]
    columns = [c for c in sweep.columns if c in summaries]
    present = list(dict.fromkeys(m for s in summaries.values() for m in s))
    order = [m for m, _ in PAPER_METHODS if m in present]
    methods = order + [m for m in present if m not in order]
    labels = {m: dict(PAPER_METHODS).get(m, m) for m in methods}
    cells = {
        m: {c: {k: _value(summaries[c].get(m), k) for k, *_ in PAPER_METRICS} for c in columns}
        for m in methods
    }
    metrics = [k for k, *_ in PAPER_METRICS if any(cells[m][c][k] is not None
                                                   for m in methods for c in columns)]  # fmt: skip
    best = {}
    higher = {k: h for k, _, h, _ in PAPER_METRICS}
    for c in columns:
        for k in metrics:
            scored = [(cells[m][c][k], m) for m in methods
                      if m not in REFERENCE_ROWS and cells[m][c][k] is not None]  # fmt: skip
            if scored:
                best[(c, k)] = (max if higher[k] else min)(scored)[1]
    return {"columns": columns, "metrics": metrics, "methods": methods, "labels": labels,
            "cells": cells, "best": best}  # fmt: skip


def _fmt(value: float | None, key: str) -> str:
    if value is None:
        return ""
    decimals = {k: d for k, _, _, d in PAPER_METRICS}[key]
    return f"{value:.{decimals}f}"


def _label(key: str) -> str:
    arrow = {k: "↑" if h else "↓" for k, _, h, _ in PAPER_METRICS}[key]
    return f"{dict((k, lab) for k, lab, *_ in PAPER_METRICS)[key]} {arrow}"


def to_markdown(table: dict) -> str:
    """One header row ``×8 PSNR ↑ | ×8 SSIM ↑ | …``; the best of each column in bold."""
    cols = [(c, k) for c in table["columns"] for k in table["metrics"]]
    lines = [
        "| method | " + " | ".join(f"{c} {_label(k)}" for c, k in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for m in table["methods"]:
        cells = []
        for c, k in cols:
            text = _fmt(table["cells"][m][c][k], k) or "–"
            cells.append(f"**{text}**" if table["best"].get((c, k)) == m else text)
        lines.append(f"| {table['labels'][m]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _tex_escape(text: str) -> str:
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("_", r"\_"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("#", r"\#"),
        ("×", r"$\times$"),
        ("↑", r"$\uparrow$"),
        ("↓", r"$\downarrow$"),
    ):
        text = text.replace(a, b)
    return text  # fmt: skip


def to_latex(table: dict) -> str:
    """A booktabs tabular: a header row of sweep columns (×8 …) over the metric names."""
    n = len(table["metrics"])
    spec = "l" + ("|" + "r" * n) * len(table["columns"])
    groups = " & ".join(rf"\multicolumn{{{n}}}{{c}}{{{_tex_escape(c)}}}" for c in table["columns"])
    rules = " ".join(
        rf"\cmidrule(lr){{{2 + i * n}-{1 + (i + 1) * n}}}" for i in range(len(table["columns"]))
    )
    names = " & ".join(_tex_escape(_label(k)) for _ in table["columns"] for k in table["metrics"])
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", f" & {groups} \\\\", rules,
             f"Method & {names} \\\\", r"\midrule"]  # fmt: skip
    for m in table["methods"]:
        if m in REFERENCE_ROWS:
            lines.append(r"\midrule")
        cells = []
        for c in table["columns"]:
            for k in table["metrics"]:
                text = _fmt(table["cells"][m][c][k], k) or "--"
                cells.append(rf"\textbf{{{text}}}" if table["best"].get((c, k)) == m else text)
        lines.append(f"{_tex_escape(table['labels'][m])} & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_csv(table: dict) -> str:
    """``method, <column> <metric>, …`` with the full-precision values (empty: none)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    cols = [(c, k) for c in table["columns"] for k in table["metrics"]]
    writer.writerow(["method", *[f"{c} {k}" for c, k in cols]])
    for m in table["methods"]:
        values = [table["cells"][m][c][k] for c, k in cols]
        writer.writerow([m, *["" if v is None else repr(v) for v in values]])
    return buffer.getvalue()


def write_paper_table(sweep, out_dir: str | Path) -> dict[str, Path] | None:
    """paper_table.md / .tex / .csv in ``out_dir``; None when no member has a summary."""
    table = paper_table(sweep)
    if not table["columns"]:
        return None
    out_dir = Path(out_dir)
    paths = dict(zip(("md", "tex", "csv"), (out_dir / f for f in TABLE_FILES)))
    for kind, text in (("md", to_markdown(table)), ("tex", to_latex(table)),
                       ("csv", to_csv(table))):  # fmt: skip
        atomic_write_bytes(paths[kind], text.encode("utf-8"))
    return paths
