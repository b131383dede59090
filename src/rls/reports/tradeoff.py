"""The realism–fidelity trade-off as the paper draws it: one connected curve per method
family in the (fidelity, realism) plane — fidelity HR PSNR (LR-PSNR when there is no HR),
realism the flow NLL of the solution's code — each point labelled with its swept value
(RLS+ radius r, RLS λ_logp...). Methods alone in their family (RLS, plain W+, PULSE...)
are reference points.

A family is the set of a run's methods built from the same registry key (``method:`` in
``configs/method/*.yaml``); its swept keys are the settings that differ between them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

# How the swept settings are written next to their points.
SHORT_KEYS = {"radius": "r", "lambda_logp": "λ_logp", "anchor.lambda_logp": "λ_logp"}


@dataclass
class Point:
    method: str
    x: float  # fidelity (PSNR or LR-PSNR, dB)
    y: float  # realism (flow NLL, lower = more realistic)
    label: str  # the swept value(s), e.g. "r=0.5"; the method name for a reference point


@dataclass
class Family:
    name: str  # the registry key, e.g. "rls_plus"
    points: list[Point]  # ordered by the swept value
    swept: list[str]  # config keys that differ between the points ([] for a reference)

    @property
    def is_curve(self) -> bool:
        return len(self.points) > 1


def _flat(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def method_configs(config: dict) -> dict[str, dict]:
    """``{display name: method config}`` from a run's resolved config (config.yaml)."""
    out = {}
    for key, mcfg in (config.get("method") or {}).items():
        if isinstance(mcfg, dict) and "_target_" in mcfg:
            out[str(mcfg.get("name", key))] = mcfg
    return out


def fidelity_metric(means: dict[str, dict]) -> str:
    """``psnr`` when every method with a flow NLL has an HR PSNR, else ``lr_psnr``."""
    pts = [m for m in means.values() if math.isfinite(m.get("flow_nll", math.nan))]
    return "psnr" if pts and all(math.isfinite(m.get("psnr", math.nan)) for m in pts) else "lr_psnr"


def _sort_key(values: list):
    return [(0, v, "") if isinstance(v, int | float) else (1, 0, str(v)) for v in values]


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def families(
    means: dict[str, dict], configs: dict[str, dict], x_metric: str | None = None
) -> list[Family]:
    """The trade-off families of one run (or one column of a sweep).

    ``means``: ``{method: {"psnr": mean, "lr_psnr": mean, "flow_nll": mean}}``;
    ``configs``: ``{method: its config}`` (methods without one, e.g. bicubic, and methods
    without a finite flow NLL are left out: they have no place on the realism axis).
    """
    x_metric = x_metric or fidelity_metric(means)
    groups: dict[str, list[str]] = {}
    for method, cfg in configs.items():
        m = means.get(method, {})
        if math.isfinite(m.get(x_metric, math.nan)) and math.isfinite(m.get("flow_nll", math.nan)):
            groups.setdefault(str(cfg.get("method", method)), []).append(method)
    out = []
    for family, names in groups.items():
        flat = {n: {k: v for k, v in _flat(configs[n]).items() if k != "name"} for n in names}
        keys = sorted({k for f in flat.values() for k in f}) if len(names) > 1 else []
        swept = [
            k
            for k in keys
            if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat.values()}) > 1
        ]
        names = sorted(names, key=lambda n: _sort_key([flat[n].get(k) for k in swept]))
        points = []
        for n in names:
            label = ", ".join(f"{SHORT_KEYS.get(k, k)}={_fmt(flat[n].get(k))}" for k in swept)
            points.append(Point(n, means[n][x_metric], means[n]["flow_nll"], label or n))
        out.append(Family(family, points, swept))
    return out


MIN_DB_SPAN = 0.5  # a PSNR axis spans at least this: closer values look equal, as they are


def readable_db_axis(ax, values) -> None:
    """A PSNR axis whose ticks read as plain dB: at least :data:`MIN_DB_SPAN` wide, at most
    six ticks, no offset notation (``1e-5+2.24431e1``) when the values lie close together."""
    from matplotlib.ticker import MaxNLocator

    values = [v for v in values if math.isfinite(v)]
    if values and max(values) - min(values) < MIN_DB_SPAN:
        middle = (max(values) + min(values)) / 2
        ax.set_xlim(middle - MIN_DB_SPAN / 2, middle + MIN_DB_SPAN / 2)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
    ax.ticklabel_format(axis="x", useOffset=False, style="plain")


def draw(ax, fams: list[Family], x_metric: str = "psnr", title: str | None = None) -> None:
    """Curves (connected, labelled points) and reference points on a matplotlib axis."""
    for fam in fams:
        xs = [p.x for p in fam.points]
        ys = [p.y for p in fam.points]
        if fam.is_curve:
            (line,) = ax.plot(xs, ys, "-o", ms=5, lw=1.5, label=fam.name)
            for p in fam.points:
                ax.annotate(p.label, (p.x, p.y), textcoords="offset points", xytext=(4, 4),
                            fontsize=7, color=line.get_color())  # fmt: skip
        else:
            p = fam.points[0]
            ax.scatter([p.x], [p.y], marker="D", s=40, edgecolors="k", zorder=3, label=p.method)
            ax.annotate(p.method, (p.x, p.y), textcoords="offset points", xytext=(4, -10),
                        fontsize=7)  # fmt: skip
    ys = [p.y for f in fams for p in f.points]
    if ys and min(ys) > 0 and max(ys) / min(ys) > 100:
        ax.set_yscale("log")  # unregularised codes sit orders of magnitude higher
    ax.margins(0.15)  # room for the point labels
    readable_db_axis(ax, [p.x for f in fams for p in f.points])
    ax.set_xlabel(f"{'HR PSNR' if x_metric == 'psnr' else 'LR-PSNR'} (dB) → more faithful")
    ax.set_ylabel("flow NLL of the code → less realistic")
    ax.grid(alpha=0.3)
    if fams:
        ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)


def figure_uri(panels: list[tuple[str, list[Family], str]], ncols: int = 3) -> str | None:
    """One PNG (data URI) with a trade-off panel per ``(title, families, x_metric)``;
    None when no panel has a point."""
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.8 * nrows), squeeze=False)
    for ax, (title, fams, x_metric) in zip(axes.flat, panels):
        draw(ax, fams, x_metric, title)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
