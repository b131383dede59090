"""W&B content of the evaluation job: loss curves, image grids, results and summary tables.

Does nothing unless the trainer has a ``WandbLogger`` (``logger=wandb``; offline without an
account). Place it after :class:`callbacks.results.ResultsWriter`, whose merged
results.csv and summary.json it uploads at the end, so the W&B numbers cover every image
of the run directory, including those of earlier (resumed) invocations.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from rls.reports.run_files import METRIC_COLUMNS, image_path, read_rows

STEP_KEY = "search/step"  # the x axis of the mean loss curves ``search/<method>/<term>``
SUMMARY_COLUMNS = ["method", "count", "ok", "failed"]


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


def term_steps(terms: dict) -> dict[str, range]:
    """The step of every value of every loss term on the method's shared axis (that of
    ``total``): a stage's terms ``<stage>/<term>`` start where the earlier stages ended."""
    starts, start = {}, 0
    for key, values in terms.items():
        stage, _, term = key.rpartition("/")
        if stage and term == "total":
            starts[stage] = start
            start += len(values)
    steps = {}
    for key, values in terms.items():
        first = starts.get(key.rpartition("/")[0], 0)
        steps[key] = range(first, first + len(values))
    return steps


def _number(value):
    """A results.csv cell as a number (``None`` when empty or not finite)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def typed_row(row: dict) -> dict:
    """A results.csv row with its numeric columns as numbers (csv holds text)."""
    out = dict(row)
    for column in ("scale", *METRIC_COLUMNS):
        if column in out:
            out[column] = _number(out[column])
    for column in ("scale", "steps"):
        if out.get(column) is not None and float(out[column]).is_integer():
            out[column] = int(out[column])
    return out


def summary_table(summary: dict) -> tuple[list[str], list[list]]:
    """summary.json's methods as table rows: counts, then mean and std of each metric,
    then set-level numbers (FID, KID)."""
    metrics = [c for c in METRIC_COLUMNS if any(c in e for e in summary.values())]
    extra = sorted(
        {k for e in summary.values() for k, v in e.items() if isinstance(v, int | float)}
        - set(SUMMARY_COLUMNS)
    )
    columns = [*SUMMARY_COLUMNS, *(f"{m}{s}" for m in metrics for s in ("", "_std")), *extra]
    rows = []
    for method, entry in summary.items():
        row = [method, *(entry.get(c) for c in SUMMARY_COLUMNS[1:])]
        for m in metrics:
            row += [entry[m]["mean"], entry[m]["std"]] if m in entry else [None, None]
        rows.append(row + [entry.get(k) for k in extra])
    return columns, rows


class SearchWandb(pl.Callback):
    """Logs the search to W&B.

    - ``search/<method>/<term>`` against ``search/step``: each loss term averaged over the
      first ``curves`` images of each method (the report's loss curves), and
      ``curves/<method>/<image>``: every term of each of those images as a line chart,
    - ``grids``: LR | each method | HR for the first ``grid_images`` images,
    - ``results``: the per-image table (results.csv, numbers as numbers, with the images),
    - ``summary``: mean / std per method and metric (summary.json), also as the artifact
      ``summary-<run directory name>`` with summary.json and results.csv,
    - the run summary: ``<method>/<metric>`` means (and ``_std``) from summary.json.

    The W&B run is finished when the test ends, so a sweep's next member starts its own.
    """

    def __init__(self, run_dir: str | Path, curves: int = 4, grid_images: int = 8):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.curves = curves
        self.grid_images = grid_images
        self._curves: dict[str, list[dict]] = {}  # method -> terms [steps, k] per batch
        self._curves_logged: set[str] = set()
        self._line_charts = 0
        self._grids_logged = 0

    def on_test_start(self, trainer, pl_module) -> None:
        logger = _wandb_logger(trainer)
        if logger is not None and trainer.is_global_zero:
            logger.experiment.define_metric(STEP_KEY)
            logger.experiment.define_metric("search/*", step_metric=STEP_KEY)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        logger = _wandb_logger(trainer)
        if logger is None or not outputs or not trainer.is_global_zero:
            return
        histories = outputs.get("histories", {})
        self._log_line_charts(logger, histories)
        self._collect_curves(logger, histories)
        self._log_grids(
            logger,
            outputs.get("images", []),
            list(getattr(pl_module, "methods_and_baselines", pl_module.methods)),
        )

    def _log_line_charts(self, logger, histories: dict) -> None:
        import wandb

        first = next(iter(histories.values()), None)
        if first is None:
            return
        for image_id in first["image_id"]:
            if self._line_charts >= self.curves:
                break
            for method, hist in histories.items():
                if image_id not in hist["image_id"]:
                    continue
                col = hist["image_id"].index(image_id)
                steps = term_steps(hist["terms"])
                plot = wandb.plot.line_series(
                    xs=[list(steps[k]) for k in hist["terms"]],
                    ys=[v[:, col].tolist() for v in hist["terms"].values()],
                    keys=list(hist["terms"]),
                    title=f"{method} losses, {image_id}",
                    xname="step",
                )
                logger.experiment.log({f"curves/{method}/{image_id}": plot})
            self._line_charts += 1

    def _collect_curves(self, logger, histories: dict) -> None:
        """Keep each method's curves until ``curves`` images are in, then log their mean."""
        for method, hist in histories.items():
            if method in self._curves_logged or not hist["image_id"]:
                continue
            self._curves.setdefault(method, []).append(hist["terms"])
            if sum(t["total"].shape[1] for t in self._curves[method]) >= self.curves:
                self._log_mean_curves(logger, method)

    def _log_mean_curves(self, logger, method: str) -> None:
        batches = self._curves.pop(method)
        self._curves_logged.add(method)
        first = batches[0]
        batches = [b for b in batches if all(b[k].shape[0] == v.shape[0] for k, v in first.items())]
        terms = {
            k: torch.cat([b[k] for b in batches], dim=1)[:, : self.curves].float().nanmean(1)
            for k in first
        }
        rows: dict[int, dict] = {}
        for key, steps in term_steps(terms).items():
            for step, value in zip(steps, terms[key].tolist()):
                rows.setdefault(step, {STEP_KEY: step})[f"search/{method}/{key}"] = value
        for step in sorted(rows):
            logger.experiment.log(rows[step])

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
        for method in list(self._curves):  # fewer than ``curves`` images in the whole run
            self._log_mean_curves(logger, method)
        self._log_results(logger)
        self._log_summary(logger)

    def _log_results(self, logger) -> None:
        import wandb

        rows = [typed_row(row) for row in read_rows(self.run_dir / "results.csv")]
        if not rows:
            return
        data = []
        for row in rows:
            path = image_path(self.run_dir, row["method"], row["image_id"])
            data.append([*row.values(), wandb.Image(str(path)) if path.exists() else None])
        logger.experiment.log({"results": wandb.Table(columns=[*rows[0], "image"], data=data)})

    def _log_summary(self, logger) -> None:
        import wandb

        path = self.run_dir / "summary.json"
        if not path.exists():
            return
        summary = json.loads(path.read_text())["methods"]
        for method, entry in summary.items():
            for key, value in entry.items():
                if isinstance(value, dict) and "mean" in value:
                    logger.experiment.summary[f"{method}/{key}"] = value["mean"]
                    logger.experiment.summary[f"{method}/{key}_std"] = value["std"]
                elif isinstance(value, int | float):
                    logger.experiment.summary[f"{method}/{key}"] = value
        columns, data = summary_table(summary)
        table = wandb.Table(columns=columns, data=data)
        logger.experiment.log({"summary": table})
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"summary-{self.run_dir.name}")
        artifact = wandb.Artifact(name, type="summary", description="mean/std per method")
        artifact.add(table, "summary")
        for file in (path, self.run_dir / "results.csv"):
            if file.exists():
                artifact.add_file(str(file))
        logger.experiment.log_artifact(artifact)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        _finish(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        _finish(trainer, exit_code=1)


def _finish(trainer, exit_code: int = 0) -> None:
    """End the job's W&B run (``logger._experiment``: never start one just to end it)."""
    logger = _wandb_logger(trainer)
    if logger is not None and trainer.is_global_zero and logger._experiment is not None:
        logger.experiment.finish(exit_code=exit_code)
