"""``python -m rls.reports``: rebuild the reports from run and sweep directories.

    python -m rls.reports run runs/eval_...                  # <run dir>/report.html
    python -m rls.reports merge runs/eval_...                # fold shards: results, summary, report
    python -m rls.reports sweep outputs/sweeps/<time>        # sweep.csv/json, sweep_report.html
    python -m rls.reports sweep runs/a runs/b --out DIR      # the same from run directories
    python -m rls.reports wandb outputs/sweeps/<time> --entity ME [--dry-run]   # W&B Report

``python -m callbacks.sweep ...`` and ``python -m callbacks.wandb_report ...`` are the
``sweep`` and ``wandb`` commands under their older names.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SWEEP_DESCRIPTION = (
    "A sweep's runs as one table: load the members of a Hydra multirun (or any run directories\n"
    "of ``evaluate.py``), find what varied between them, and aggregate their results."
)


def run_main(argv: list[str] | None = None, prog: str = "python -m rls.reports run") -> Path:
    """(Re)write ``report.html`` of a run directory from its results.csv, summary.json and
    images/ (what the evaluation's ReportWriter writes at the end of a run)."""
    from rls.reports.run_html import build_report

    parser = argparse.ArgumentParser(prog=prog, description=run_main.__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run directory of evaluate.py")
    parser.add_argument("--title", help="the page's title (default: from the directory name)")
    args = parser.parse_args(argv)
    if not (Path(args.run_dir) / "results.csv").exists():
        parser.error(f"{args.run_dir}: no results.csv (not a finished run directory)")
    path = build_report(args.run_dir, args.title)
    print(f"[report] {path}")
    return path


def merge_main(argv: list[str] | None = None, prog: str = "python -m rls.reports merge") -> Path:
    """Fold every finished or crashed part of a run directory (the shards of
    ``data.shard=I/N`` jobs) into results.csv, then write summary.json and report.html: what
    the last shard to finish does. Shards still running keep their rows until they end."""
    from rls.reports.run_files import merge, write_summary
    from rls.reports.run_html import build_report

    parser = argparse.ArgumentParser(prog=prog, description=merge_main.__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run directory of evaluate.py")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        parser.error(f"{run_dir}: not a directory")
    rows = merge(run_dir)
    if not rows:
        parser.error(f"{run_dir}: no results (no results.csv, no shards)")
    write_summary(run_dir, rows)
    path = build_report(run_dir)
    images = len({r["image_id"] for r in rows})
    print(f"[merge] {len(rows)} rows of {images} images: {run_dir / 'results.csv'}; report {path}")
    return path


def sweep_main(argv: list[str] | None = None, prog: str = "python -m rls.reports sweep"):
    """sweep.csv, sweep.json and sweep_report.html of a Hydra sweep or of run directories."""
    from rls.reports.sweep import is_sweep_dir, load_sweep
    from rls.reports.sweep_html import write_sweep

    parser = argparse.ArgumentParser(prog=prog, description=SWEEP_DESCRIPTION)
    parser.add_argument("sources", nargs="+", help="Hydra sweep directories or run directories")
    parser.add_argument("--out", help="where to write (default: the one sweep directory given)")
    args = parser.parse_args(argv)
    out = args.out
    if out is None:
        sweep_dirs = [s for s in args.sources if is_sweep_dir(Path(s))]
        if len(args.sources) != 1 or not sweep_dirs:
            parser.error("--out is needed unless exactly one Hydra sweep directory is given")
        out = sweep_dirs[0]
    sweep = load_sweep(args.sources)
    paths = write_sweep(sweep, out)
    done = sum(m.status == "done" for m in sweep.members)
    print(f"[sweep] {done} of {len(sweep.members)} members done; columns: {sweep.columns}")
    print(f"[sweep] report: {paths['html']}")
    return paths


def wandb_main(argv: list[str] | None = None, prog: str = "python -m rls.reports wandb") -> None:
    from rls.reports import wandb_report

    wandb_report.main(argv, prog=prog)


COMMANDS = {
    "run": (run_main, "report.html of one run directory"),
    "merge": (merge_main, "fold a sharded run's parts: results.csv, summary.json, report"),
    "sweep": (sweep_main, "sweep.csv, sweep.json, sweep_report.html"),
    "wandb": (wandb_main, "a sweep's W&B Report (needs wandb-workspaces)"),
}


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        lines = [__doc__.split("\n\n")[0], "", "commands:"]
        lines += [f"  {name:<6} {what}" for name, (_, what) in COMMANDS.items()]
        lines.append("\n`python -m rls.reports COMMAND -h` for a command's arguments.")
        print("\n".join(lines), file=sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr)
        raise SystemExit(0 if argv[:1] in (["-h"], ["--help"]) else 2)
    command, _ = COMMANDS[argv[0]]
    return command(argv[1:], prog=f"python -m rls.reports {argv[0]}")
