"""The flow's pictures (method.md §2), made once the best flow has been evaluated on
the held-out set (``trainer.test`` in ``rls.lit.fit_flow``):

- ``flow/chi2``: histogram of ‖f(w)‖² for the flow and every older prior vs χ²(w_dim),
- ``flow/moments`` and ``flow/qq``: per-dimension moments and QQ plots of the flow's f(w),
- ``flow/nll``: held-out NLL of every prior side by side (bar chart + table).
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from callbacks.media import log_figure, log_table


class FlowReport(pl.Callback):
    """Reads ``pl_module.report`` (see ``rls.lit.evaluate_priors``) at the end of testing."""

    def __init__(self, out_dir: str | Path | None = None, qq_dims: int = 4):
        self.out_dir = out_dir
        self.qq_dims = qq_dims
        self.written: list[Path] = []

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        report = getattr(pl_module, "report", None)
        if not trainer.is_global_zero or not report:
            return
        from rls.flows import chi2_figure, moments_figure, nll_figure, qq_figure

        out_dir = self.out_dir or trainer.default_root_dir
        z = report["z"]
        figures = {
            "flow/chi2": chi2_figure(z),
            "flow/moments": moments_figure(z["flow"]),
            "flow/qq": qq_figure(z["flow"], dims=self.qq_dims),
            "flow/nll": nll_figure(report["val_nll"]),
        }
        for key, fig in figures.items():
            path = log_figure(trainer, key, fig, out_dir)
            if path is not None:
                self.written.append(path)
        columns = ["prior", "val_nll", "sq_norm_mean", "chi2_ks", "abs_skew", "abs_excess_kurtosis"]
        rows = [
            [name, nll, *(report["gaussianity"][name][c] for c in columns[2:])]
            for name, nll in report["val_nll"].items()
        ]
        path = log_table(trainer, "flow/priors", columns, rows, out_dir)
        if path is not None:
            self.written.append(path)
        for lg in trainer.loggers:
            lg.log_metrics(
                {f"final/val_nll/{k}": v for k, v in report["val_nll"].items()},
                step=trainer.global_step,
            )
