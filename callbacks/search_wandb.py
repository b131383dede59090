"""W&B media for the evaluation job: loss curves, image grids, per-image table, summary.

Does nothing unless the trainer has a ``WandbLogger`` (``logger=wandb``; offline without an
account). Place it after :class:`callbacks.results.ResultsWriter`, whose merged
results.csv and summary.json it uploads at the end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from callbacks.results import image_path, read_rows


def _wandb_logger(trainer):
    from pytorch_lightning.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            return logger
    return None


def comparison_grid(lr: torch.Tensor, solutions: list[torch.Tensor], hr: torch.Tensor | None):
    """One row ``[C, R, R*(n+2)]``: LR (nearest-upscaled) | each solution | HR."""
    size = solutions[0].shape[-1] if solutions else lr.shape[-1]
    up = F.interpolate(lr[None].float(), size=(size, size), mode="nearest")[0]
    tiles = [up, *[s.float() for s in solutions]]
    if hr is not None:
        tiles.append(hr.float())
    return torch.cat([t.clamp(0, 1).cpu() for t in tiles], dim=-1)


def to_uint8_hwc(image: torch.Tensor):
    """``[C, H, W]`` in [0, 1] -> uint8 ``[H, W, C]`` numpy (what W&B renders unambiguously)."""
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return array[:, :, 0] if array.shape[2] == 1 else array


class SearchWandb(pl.Callback):
    """Logs the search to W&B.

    - ``search/<method>/<image>``: per-step loss terms of the first ``curves`` images,
    - ``grids``: LR | each method | HR for the first ``grid_images`` images,
    - ``results``: the per-image table (results.csv, with the solution images),
    - the run summary: mean metrics per method from summary.json.
    """

    def __init__(self, run_dir: str | Path, curves: int = 4, grid_images: int = 8):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.curves = curves
        self.grid_images = grid_images
        self._curves_logged = 0
        self._grids_logged = 0

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        logger = _wandb_logger(trainer)
        if logger is None or not outputs or not trainer.is_global_zero:
            return
        self._log_curves(logger, outputs.get("histories", {}))
        self._log_grids(
            logger,
            outputs.get("images", []),
            list(getattr(pl_module, "methods_and_baselines", pl_module.methods)),
        )

    def _log_curves(self, logger, histories: dict) -> None:
        import wandb

        if self._curves_logged >= self.curves:
            return
        first = next(iter(histories.values()), None)
        if first is None:
            return
        for image_id in first["image_id"]:
            if self._curves_logged >= self.curves:
                break
            for method, hist in histories.items():
                if image_id not in hist["image_id"]:
                    continue
                col = hist["image_id"].index(image_id)
                terms = {k: v[:, col].tolist() for k, v in hist["terms"].items()}
                steps = list(range(len(next(iter(terms.values())))))
                plot = wandb.plot.line_series(
                    xs=steps,
                    ys=list(terms.values()),
                    keys=list(terms),
                    title=f"{method} losses, {image_id}",
                    xname="step",
                )
                logger.experiment.log({f"search/{method}/{image_id}": plot})
            self._curves_logged += 1

    def _log_grids(self, logger, images: list, methods: list[str]) -> None:
        if self._grids_logged >= self.grid_images:
            return
        by_kind = {(kind, image_id): img for kind, image_id, img in images}
        ids = [image_id for kind, image_id, _ in images if kind == "lr"]
        grids, captions = [], []
        for image_id in ids[: self.grid_images - self._grids_logged]:
            solutions = [by_kind[(m, image_id)] for m in methods if (m, image_id) in by_kind]
            if not solutions:
                continue
            hr = by_kind.get(("hr", image_id))
            grids.append(to_uint8_hwc(comparison_grid(by_kind[("lr", image_id)], solutions, hr)))
            shown = [m for m in methods if (m, image_id) in by_kind]
            captions.append(
                f"{image_id}: LR | {' | '.join(shown)}{' | HR' if hr is not None else ''}"
            )
        if grids:
            logger.log_image(key="grids", images=grids, caption=captions)
            self._grids_logged += len(grids)

    def on_test_end(self, trainer, pl_module) -> None:
        logger = _wandb_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        import wandb

        rows = read_rows(self.run_dir / "results.csv")
        if rows:
            columns = list(rows[0]) + ["image"]
            data = []
            for row in rows:
                path = image_path(self.run_dir, row["method"], row["image_id"])
                data.append([*row.values(), wandb.Image(str(path)) if path.exists() else None])
            logger.experiment.log({"results": wandb.Table(columns=columns, data=data)})
        summary_path = self.run_dir / "summary.json"
        if summary_path.exists():
            summary = json.loads(summary_path.read_text())["methods"]
            for method, entry in summary.items():
                for key, value in entry.items():
                    if isinstance(value, dict) and "mean" in value:
                        logger.experiment.summary[f"{method}/{key}"] = value["mean"]
                    elif isinstance(value, int | float):
                        logger.experiment.summary[f"{method}/{key}"] = value
