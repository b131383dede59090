"""The evaluation's ``report.html`` writer: a thin Lightning adapter over
:func:`rls.reports.run_html.build_report` (also ``python -m rls.reports run RUN_DIR``)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from rls.reports.run_html import build_report


class ReportWriter(pl.Callback):
    """Builds report.html on rank 0 once the results are merged (after ResultsWriter)."""

    def __init__(self, run_dir: str | Path, title: str | None = None):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.title = title
        self.path: Path | None = None

    def on_test_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.path = build_report(self.run_dir, self.title)
