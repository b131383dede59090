"""``sweep_report.html``: one self-contained page for a whole sweep (opens from disk).

Sections: the members (overrides, status, run directory, error), one table per metric
with methods as rows and the sweep's columns (corruptions, scales, ...) as columns (mean ±
std, the best per column marked, missing and failed members shown as such), the
realism–fidelity trade-off per column (:mod:`rls.reports.tradeoff`), and one image grid per
column (LR | each method | HR, the same images in every column). :func:`write_sweep` writes
it with the sweep's CSV and JSON (:mod:`rls.reports.sweep`).
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

from rls.reports.paper_table import write_paper_table
from rls.reports.run_files import atomic_write_bytes, image_path
from rls.reports.sweep import SWEEP_FILES, TABLE_METRICS, Sweep, sweep_csv
from rls.reports.tradeoff import families, fidelity_metric, figure_uri, method_configs

GRID_IMAGES = 4  # per column; the same ids in every column where they exist
_LABELS = {
    "psnr": "PSNR (dB) ↑",
    "ssim": "SSIM ↑",
    "lpips": "LPIPS ↓",
    "lr_psnr": "LR-PSNR (dB) ↑",
    "flow_nll": "flow NLL of the code ↓",
    "face_detected": "face found ↑",
    "identity_distance": "identity distance ↓",
}
_CSS = """
body { font-family: system-ui, sans-serif; margin: 16px; color: #222; max-width: 1400px; }
h1 { font-size: 1.4em; overflow-wrap: anywhere; } h2 { font-size: 1.15em; margin-top: 1.6em; }
h3 { font-size: 1em; margin: 1.2em 0 0.4em; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
td.wrap { white-space: normal; min-width: 12em; text-align: left; }
td.best { font-weight: bold; background: #e6f4e6; }
td.missing { color: #888; font-style: italic; text-align: center; }
td.failed, span.failed, .failed { color: #b00; }
.grid td { text-align: center; vertical-align: top; border: none; padding: 3px; }
.grid img { width: min(96px, 17vw); height: auto; image-rendering: pixelated; display: block; }
.caption { font-size: 0.7em; color: #555; }
img.plot { max-width: 100%; height: auto; }
code { overflow-wrap: anywhere; font-size: 0.85em; }
"""


def _uri(path: Path) -> str | None:
    if not path.exists():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _esc(text) -> str:
    return html.escape(str(text))


def _members(sweep: Sweep) -> str:
    lists = [m.overrides for m in sweep.members if m.overrides]
    common = [o for o in lists[0] if all(o in rest for rest in lists[1:])] if lists else []
    head = "<tr><th class='text'>column</th><th class='text'>its overrides</th><th>status</th>"
    head += "<th>rows</th><th class='text'>run directory / error</th></tr>"
    lines = (
        [f"<p>Common to every member: <code>{_esc(' '.join(common))}</code></p>"] if common else []
    )
    lines += ["<div class='scroll'><table>", head]
    for m in sweep.members:
        own = [o for o in m.overrides if o not in common]
        where = _esc(m.run_dir) if m.run_dir else ""
        if m.error:
            where += f"<br><span class='failed'>{_esc(m.error)}</span>"
        status = m.status if m.status == "done" else f"<span class='failed'>{m.status}</span>"
        lines.append(
            f"<tr><td class='text'>{_esc(m.column)}</td><td class='wrap'>"
            f"{_esc(' '.join(own))}</td><td>{status}</td><td>{len(m.rows)}</td>"
            f"<td class='wrap'>{where}</td></tr>"
        )
    lines.append("</table></div>")
    return "\n".join(lines)


def _metric_table(sweep: Sweep, metric: str, table: dict, best: dict) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in sweep.columns)
    lines = [f"<div class='scroll'><table><tr><th class='text'>method</th>{head}</tr>"]
    status = {c: sweep.column_status(c) for c in sweep.columns}
    for method in sweep.methods:
        cells = [f"<td class='text'>{_esc(method)}</td>"]
        for column in sweep.columns:
            stats = table[metric][method][column]
            if stats is not None and math.isfinite(stats["mean"]):
                mark = best.get(metric, {}).get(column) == method
                text = f"{stats['mean']:.4g} ± {stats['std']:.2g}" + (" ★" if mark else "")
                cells.append(f"<td class='{'best' if mark else ''}'>{text}</td>")
            elif status[column] in ("missing", "failed", "incomplete"):
                cells.append(f"<td class='missing failed'>{status[column]}</td>")
            else:
                cells.append("<td class='missing'>–</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</table></div>")
    return "\n".join(lines)


def _means(sweep: Sweep, column: str) -> dict[str, dict]:
    out = {}
    for method in sweep.methods:
        cell = sweep.cell(method, column) or {}
        out[method] = {
            k: (cell.get(k) or {}).get("mean", math.nan) for k in ("psnr", "lr_psnr", "flow_nll")
        }
    return out


def _tradeoff(sweep: Sweep) -> str:
    """A trade-off panel per column; plus, when only method settings varied, one panel
    where each method's points across the columns form its curve."""
    panels = []
    for column in sweep.columns:
        configs = {}
        for m in sweep.members:
            if m.column == column:
                configs.update(method_configs(m.tree))
        means = _means(sweep, column)
        x = fidelity_metric(means)
        panels.append((column, families(means, configs, x), x))
    if sweep.varied and all(k.startswith("method.") for k in sweep.varied):
        panels.append(("across the sweep", _across_columns(sweep), "psnr"))
    uri = figure_uri(panels)
    if uri is None:
        return "<p>No method has both a fidelity measure and a flow NLL.</p>"
    return (
        "<p>Each curve is one method family, its points labelled with the swept setting; "
        "single methods (RLS, plain W+, ...) are reference points (◆).</p>"
        f"<img class='plot' alt='realism-fidelity trade-off' src='{uri}'>"
    )


def _across_columns(sweep: Sweep) -> list:
    from rls.reports.tradeoff import Family, Point

    out = []
    for method in sweep.methods:
        points = []
        for column in sweep.columns:
            mean = _means(sweep, column)[method]
            if math.isfinite(mean["psnr"]) and math.isfinite(mean["flow_nll"]):
                points.append(Point(method, mean["psnr"], mean["flow_nll"], column))
        if points:
            out.append(Family(method, points, list(sweep.varied)))
    return out


def _grids(sweep: Sweep) -> str:
    ok = [r for r in sweep.rows if r.get("status") == "ok"]
    per_column = {c: sorted({r["image_id"] for r in ok if r["column"] == c}) for c in sweep.columns}
    present = [set(ids) for ids in per_column.values() if ids]
    common = sorted(set.intersection(*present)) if present else []
    out = []
    for column in sweep.columns:
        ids = [i for i in common if i in per_column[column]] or per_column[column]
        ids = ids[:GRID_IMAGES]
        out.append(f"<h3>{_esc(column)}</h3>")
        if not ids:
            out.append(f"<p class='failed'>No images ({sweep.column_status(column)}).</p>")
            continue
        mine = {(r["image_id"], r["method"]): r for r in ok if r["column"] == column}
        head = "".join(f"<th>{_esc(h)}</th>" for h in ["LR", *sweep.methods, "HR"])
        lines = [f"<div class='scroll'><table class='grid'><tr>{head}</tr>"]
        for image_id in ids:
            any_dir = next(Path(r["run_dir"]) for k, r in mine.items() if k[0] == image_id)
            cells = [_cell(_uri(image_path(any_dir, "lr", image_id)), f"{image_id} LR")]
            for method in sweep.methods:
                row = mine.get((image_id, method))
                if row is None:
                    cells.append("<td class='missing'>–</td>")
                    continue
                uri = _uri(image_path(row["run_dir"], method, image_id))
                caption = f"PSNR {_num(row.get('psnr'))}"
                cells.append(_cell(uri, caption))
            cells.append(_cell(_uri(image_path(any_dir, "hr", image_id)), "HR"))
            lines.append("<tr>" + "".join(cells) + "</tr>")
        lines.append("</table></div>")
        out += lines
    return "\n".join(out)


def _num(value) -> str:
    try:
        return f"{float(value):.2f}"
    except (TypeError, ValueError):
        return "–"


def _cell(uri: str | None, caption: str) -> str:
    img = f"<img src='{uri}' alt='{_esc(caption)}'>" if uri else "<div>(no image)</div>"
    return f"<td>{img}<div class='caption'>{_esc(caption)}</div></td>"


def sweep_report_html(sweep: Sweep, title: str) -> str:
    """The whole page as a string (no external resource: images are data URIs)."""
    counts = {s: sum(m.status == s for m in sweep.members) for s in ("done", "failed")}
    other = len(sweep.members) - counts["done"] - counts["failed"]
    varied = ", ".join(sweep.varied) or "nothing (one column)"
    meta = (
        f"{len(sweep.members)} members: {counts['done']} done, {counts['failed']} failed, "
        f"{other} missing or incomplete · varied: {varied}"
    )
    table, best = sweep.table(), sweep.best()
    measured = [
        m for m in TABLE_METRICS if any(c for per in table[m].values() for c in per.values())
    ]
    tables = "\n".join(
        f"<h3>{_esc(_LABELS[m])}</h3>\n{_metric_table(sweep, m, table, best)}" for m in measured
    )
    unmeasured = [_LABELS[m].rstrip(" ↑↓") for m in TABLE_METRICS if m not in measured]
    if unmeasured:
        tables += f"<p>Not measured in any member: {_esc(', '.join(unmeasured))}.</p>"

    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title><style>{_CSS}</style></head><body>
<h1>{_esc(title)}</h1>
<p>{_esc(meta)}</p>
<h2>Members</h2>
{_members(sweep)}
<h2>Results: methods × {_esc(varied)} (mean ± std over images; ★ best per column)</h2>
{tables}
<h2>Realism–fidelity trade-off per column</h2>
{_tradeoff(sweep)}
<h2>Images: LR | each method | HR</h2>
{_grids(sweep)}
</body></html>
"""


def write_sweep(sweep: Sweep, out_dir: str | Path, title: str | None = None) -> dict[str, Path]:
    """Write sweep.csv, sweep.json and sweep_report.html into ``out_dir`` (atomically), and
    the paper's table (:mod:`rls.reports.paper_table`: paper_table.md/.tex/.csv) once a
    member has a summary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = dict(zip(("csv", "json", "html"), (out_dir / f for f in SWEEP_FILES)))
    data = json.dumps(sweep.to_json(), indent=2, default=str, allow_nan=True)
    atomic_write_bytes(paths["csv"], sweep_csv(sweep).encode("utf-8"))
    atomic_write_bytes(paths["json"], data.encode("utf-8"))
    title = title or f"Sweep report: {out_dir.name}"
    atomic_write_bytes(paths["html"], sweep_report_html(sweep, title).encode("utf-8"))
    table = write_paper_table(sweep, out_dir)  # methods x (column x metric)
    if table is not None:
        paths["paper_table"] = table["md"]
    return paths
