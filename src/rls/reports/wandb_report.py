"""A W&B Report for a sweep, built with the ``wandb-workspaces`` reports API.

    python -m rls.reports wandb outputs/sweeps/2026-01-01_00-00-00 --entity ME
    python -m rls.reports wandb runs/a runs/b --entity ME --dry-run   # print, no upload

(``python -m callbacks.wandb_report ...`` is the same command.)

The report holds the sweep's aggregated table (methods × columns, mean ± std, best per
column in bold; from :mod:`rls.reports.sweep`), one realism–fidelity scatter per method
(flow NLL against PSNR, one point per member), the image grids, the loss curves of each
method, the per-image results tables and, when the sweep trained its flow, the flow's NLL
curves, prior comparison and χ²/QQ diagnostics. Its panels show the sweep's W&B runs
(their group, or their ids), read from the members' local W&B files (``wandb/`` in each
run directory): so the same report comes from online runs right after the sweep
(``callbacks.wandb_report.PublishReport``, a Hydra callback) and from offline runs after
``wandb sync``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from rls.reports.paper_table import paper_table, to_markdown
from rls.reports.sweep import TABLE_METRICS, load_sweep
from rls.reports.wandb_offline import OfflineRun, find_runs, read_run

FLOW_JOB = "train_flow"
METRIC_LABELS = {
    "psnr": "PSNR (dB) ↑",
    "ssim": "SSIM ↑",
    "lpips": "LPIPS ↓",
    "lr_psnr": "LR-PSNR (dB) ↑",
    "flow_nll": "flow NLL ↓",
}


def sweep_runs(sweep) -> tuple[list[OfflineRun], list[OfflineRun]]:
    """The evaluation runs (the latest per member: a resumed run directory holds one W&B
    run per invocation, and the last one's tables and summary cover every image) and the
    flow-training runs of a loaded sweep's members."""
    evaluations, flows = [], []
    for member in sweep.members:
        if member.run_dir is None:
            continue
        runs = [read_run(p) for p in find_runs(member.run_dir)]
        flows += [r for r in runs if r.job_type == FLOW_JOB]
        mine = [r for r in runs if r.job_type != FLOW_JOB and r.history]
        if mine:
            evaluations.append(mine[-1])
    return evaluations, flows


def runs_filter(runs: list[OfflineRun]) -> str:
    """A runset filter selecting ``runs`` (all evaluations, or all flow trainings): their
    group and job kind when they share a group, else their ids."""
    groups = {r.group for r in runs}
    if len(groups) == 1 and "" not in groups:
        kind = "=" if runs[0].job_type == FLOW_JOB else "!="
        return f"Group = '{groups.pop()}' and JobType {kind} '{FLOW_JOB}'"
    return "ID in [" + ", ".join(f"'{r.run_id}'" for r in runs) + "]"


def markdown_table(sweep, metric: str) -> str:
    """One metric of the sweep as a Markdown table: methods × columns, mean ± std, the best
    mean of each column in bold, ``–`` where a member has no value."""
    table, best = sweep.table()[metric], sweep.best()[metric]
    lines = [
        "| method | " + " | ".join(sweep.columns) + " |",
        "|---|" + "---|" * len(sweep.columns),
    ]
    for method in sweep.methods:
        cells = []
        for column in sweep.columns:
            stats = table[method][column]
            if stats is None or not math.isfinite(stats["mean"]):
                cells.append("–")
                continue
            text = f"{stats['mean']:.4g} ± {stats['std']:.2g}"
            cells.append(f"**{text}**" if best.get(column) == method else text)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _keys(runs: list[OfflineRun], where: str) -> set[str]:
    if where == "history":
        return set().union(*(r.history_keys() for r in runs)) if runs else set()
    return {k for r in runs for k, v in r.summary.items() if isinstance(v, int | float)}


def build_report(paths: list[str | Path], entity: str, project: str | None = None, title=None):
    """The report (a ``wandb_workspaces.reports.v2.Report``, not saved) for the sweep
    directories and/or run directories ``paths``."""
    import wandb_workspaces.reports.v2 as wr

    sweep = load_sweep([Path(p) for p in paths])
    runs, flow_runs = sweep_runs(sweep)
    if not runs:
        raise ValueError(
            f"{', '.join(map(str, paths))}: no W&B run in the members' run directories; "
            "run the sweep with logger=wandb"
        )
    project = project or runs[0].project or "rls"
    group = runs[0].group if len({r.group for r in runs}) == 1 else ""
    name = group or ", ".join(r.name for r in runs)

    def grid(panels, selected=runs, label="sweep"):
        runset = wr.Runset(
            entity=entity, project=project, name=label, filters=runs_filter(selected)
        )
        return wr.PanelGrid(runsets=[runset], panels=panels)

    varied = ", ".join(sweep.varied) or "nothing"
    not_done = [f"{m.label}: {m.status}" for m in sweep.members if m.status != "done"]
    blocks: list[Any] = [
        wr.P(
            f"{len(sweep.members)} members varying {varied} (columns: "
            f"{', '.join(sweep.columns)}); methods: {', '.join(sweep.methods)}."
        ),
    ]
    if not_done:
        blocks.append(wr.P("Not done: " + "; ".join(not_done) + "."))
    blocks.append(wr.H2("Results: mean ± std over images, best per column in bold"))
    table = sweep.table()
    for metric, label in METRIC_LABELS.items():
        if any(s is not None for per in table[metric].values() for s in per.values()):
            blocks += [wr.H3(label), wr.MarkdownBlock(text=markdown_table(sweep, metric))]
    paper = paper_table(sweep)  # the members' summary.json, as paper_table.md
    if paper["columns"]:
        blocks += [
            wr.H2("The paper's table: methods × (column × metric), best in bold"),
            wr.MarkdownBlock(text=to_markdown(paper)),
        ]

    summary = _keys(runs, "summary")
    scatters = [
        wr.ScatterPlot(title=f"{m}: realism (flow NLL ↓) vs fidelity (PSNR ↑)", x=x, y=y)
        for m in sweep.methods
        if (x := f"{m}/psnr") in summary and (y := f"{m}/flow_nll") in summary
    ]
    if scatters:
        blocks += [
            wr.H2("Realism–fidelity: one point per member"),
            grid([*scatters, wr.WeavePanelSummaryTable(table_name="summary")]),
        ]
    history = _keys(runs, "history")
    if "grids" in history:
        blocks += [
            wr.H2("Image grids: LR | each method | HR"),
            grid([wr.MediaBrowser(media_keys=["grids"])]),
        ]
    curves = []
    for m in sweep.methods:
        ys = sorted(k for k in history if k.startswith(f"search/{m}/"))
        if ys:
            curves.append(wr.LinePlot(title=f"{m} loss terms", x="search/step", y=ys))
    if curves:
        blocks += [wr.H2("Loss curves: mean over the first images of each member"), grid(curves)]
    if "results" in history:
        blocks += [
            wr.H2("Per-image results"),
            grid([wr.WeavePanelSummaryTable(table_name="results")]),
        ]
    if flow_runs:
        flow_history = _keys(flow_runs, "history")
        nll = [k for k in ("train/nll", "val/nll") if k in flow_history]
        media = [
            k for k in ("flow/nll", "flow/chi2", "flow/qq", "flow/moments") if k in flow_history
        ]
        panels = [wr.LinePlot(title="flow NLL", y=nll)] if nll else []
        panels += [wr.MediaBrowser(title="held-out NLL and χ²/QQ diagnostics", media_keys=media)]
        panels += [wr.WeavePanelSummaryTable(table_name="flow/priors")]
        blocks += [wr.H2("The flow prior trained for this sweep"), grid(panels, flow_runs, "flow")]
    return wr.Report(
        entity=entity,
        project=project,
        title=title or f"rls sweep {name}"[:128],
        description=f"{len(runs)} runs, metrics: {', '.join(TABLE_METRICS)}",
        blocks=blocks,
    )


def publish(report) -> str:
    """Upload the report (needs a W&B account and the network); returns its URL."""
    report.save()
    return report.url


def outline(report) -> str:
    """The report's blocks as text (what ``--dry-run`` prints)."""
    lines = [f"{report.title}  ({report.entity}/{report.project})"]
    for block in report.blocks:
        kind = type(block).__name__
        if hasattr(block, "panels"):
            panels = ", ".join(type(p).__name__ for p in block.panels)
            lines.append(f"  {kind} [{block.runsets[0].filters}]: {panels}")
        else:
            lines.append(f"  {kind}: {getattr(block, 'text', '')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "python -m rls.reports wandb") -> None:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Build (and publish) the W&B Report of a sweep from its runs' W&B files.",
    )
    parser.add_argument("paths", nargs="+", help="a Hydra sweep directory or run directories")
    parser.add_argument("--entity", help="W&B entity (default: the logged-in user's)")
    parser.add_argument("--project", help="W&B project (default: the runs' project)")
    parser.add_argument("--title")
    parser.add_argument("--dry-run", action="store_true", help="print the report, upload nothing")
    args = parser.parse_args(argv)
    entity = args.entity
    if entity is None:
        if args.dry_run:
            entity = "<entity>"
        else:
            import wandb

            entity = wandb.Api().default_entity
    report = build_report(args.paths, entity, args.project, args.title)
    print(outline(report))
    if not args.dry_run:
        print(f"published: {publish(report)}")
