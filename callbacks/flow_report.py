"""The flow's pictures (method.md §2).

``FlowDiagnostics``: during training, every few validation rounds, the flow's ‖f(w)‖²
histogram against χ²(w_dim) and Gaussianity numbers on held-out w.

``FlowReport``: once the best flow has been evaluated on the held-out set
(``trainer.test`` in ``rls.lit.fit_flow``):

- ``flow/chi2``: histogram of ‖f(w)‖² for the flow and every older prior vs χ²(w_dim),
- ``flow/moments`` and ``flow/qq``: per-dimension moments and QQ plots of the flow's f(w),
- ``flow/nll``: held-out NLL of every prior side by side (bar chart + table),
- ``flow/nll_curve``: the held-out NLL after every validation of the training (the curve
  the stopping rule read), the older priors as lines, the best step marked.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch

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
        from rls.flows import chi2_figure, moments_figure, nll_curve_figure, nll_figure, qq_figure

        out_dir = self.out_dir or trainer.default_root_dir
        z = report["z"]
        figures = {
            "flow/chi2": chi2_figure(z),
            "flow/moments": moments_figure(z["flow"]),
            "flow/qq": qq_figure(z["flow"], dims=self.qq_dims),
            "flow/nll": nll_figure(report["val_nll"]),
        }
        curve = getattr(pl_module, "curve", None)
        if curve:
            older = {k: v for k, v in report["val_nll"].items() if k != "flow"}
            best = min(curve, key=lambda p: p["val_nll"])["step"]
            figures["flow/nll_curve"] = nll_curve_figure(curve, older, best)
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


class FlowDiagnostics(pl.Callback):
    """Every ``every_n_epochs`` validation rounds: ‖f(w)‖² vs χ²(w_dim) and the moment
    errors of f(w) on the first ``n`` held-out samples (``pl_module.val_w``)."""

    def __init__(self, every_n_epochs: int = 5, n: int = 4096, out_dir: str | Path | None = None):
        self.every_n_epochs = every_n_epochs
        self.n = n
        self.out_dir = out_dir

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if trainer.sanity_checking or not trainer.is_global_zero or epoch % self.every_n_epochs:
            return
        from rls.flows import chi2_figure, gaussianity_stats

        with torch.no_grad():
            w = pl_module.val_w[: self.n].to(pl_module.device)
            z = pl_module.flow.to_gaussian(w).cpu()
        stats = gaussianity_stats(z)
        for lg in trainer.loggers:
            lg.log_metrics(
                {f"val/gaussianity/{k}": v for k, v in stats.items() if k != "w_dim"},
                step=trainer.global_step,
            )
        fig = chi2_figure({"flow": z}, title=f"‖f(w)‖² at step {trainer.global_step}")
        log_figure(
            trainer, "flow/chi2_during_training", fig, self.out_dir or trainer.default_root_dir
        )
