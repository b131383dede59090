"""The evaluation's results writer: per-image rows and images into the run directory.

A thin Lightning adapter: the run directory's layout, its crash safety and resume rules,
and every function that reads or writes it live in :mod:`rls.reports.run_files`.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch

from rls.reports.run_files import (
    SET_LEVEL_KEYS,
    ShardWriter,
    image_path,
    load_png,
    merge,
    read_summary,
    save_pasted,
    save_png,
    summary_metrics,
    write_summary,
)
from rls.reports.run_lock import DEFAULT_OWNER


class ResultsWriter(pl.Callback):
    """Writes what the search module returns from each test step into the run directory.

    The module's ``test_step`` returns ``{"rows": [dict, ...], "images": [(kind, image_id,
    tensor [C, H, W] in [0, 1]), ...]}``. Images are written before their rows, so a row
    on disk always has its images. At the end rank 0 merges every rank's shard into
    ``results.csv``, writes ``summary.json`` (adding the module's ``dataset_metrics``,
    e.g. FID/KID per method, when it has any) and logs :func:`summary_metrics` to the
    trainer's loggers.

    Resumed runs: every aggregate covers all rows of the run. FID/KID of a method that
    restored new images are computed over those and the earlier ones (read back from
    ``images/``); a method with nothing new keeps the values summary.json already had.
    """

    def __init__(
        self,
        run_dir: str | Path,
        save_images: bool = True,
        chunk: int = 16,
        owner: str | None = None,
    ):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.owner = owner or DEFAULT_OWNER  # a shard (data.shard=I/N) writes as its own owner
        self.save_images = save_images
        self.chunk = chunk
        self._shard: ShardWriter | None = None
        self.summary: dict = {}

    def on_test_start(self, trainer, pl_module) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._shard = ShardWriter(self.run_dir, rank=trainer.global_rank, owner=self.owner)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not outputs:
            return
        if self.save_images:
            for kind, image_id, image in outputs.get("images", []):
                save_png(image_path(self.run_dir, kind, image_id), image)
            save_pasted(self.run_dir, outputs.get("images", []), batch)
        self._shard.write(outputs.get("rows", []))

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        """Before the module computes FID/KID: add the images of earlier invocations."""
        metrics = getattr(pl_module, "metrics", None)
        if metrics is None or not getattr(pl_module, "skip", None):
            return
        for name in metrics:
            if getattr(metrics[name], "fid", None) is None:
                continue
            if pl_module.images_measured(name) == 0 or not trainer.is_global_zero:
                continue  # nothing new: the earlier values stand (rank 0 adds for all)
            earlier = sorted(image_id for image_id, method in pl_module.skip if method == name)
            pairs = [
                (image_path(self.run_dir, name, i), image_path(self.run_dir, "hr", i))
                for i in earlier
            ]
            pairs = [(sr, hr) for sr, hr in pairs if sr.exists() and hr.exists()]
            for start in range(0, len(pairs), self.chunk):
                part = pairs[start : start + self.chunk]
                sr = torch.stack([load_png(p) for p, _ in part])
                hr = torch.stack([load_png(p) for _, p in part])
                pl_module.add_earlier_images(name, sr, hr)

    def on_test_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier("results_merge")
        if trainer.is_global_zero:
            previous = read_summary(self.run_dir)
            rows = merge(self.run_dir, self.owner)  # every shard's rows so far: the last one
            dataset_metrics = dict(getattr(pl_module, "dataset_metrics", None) or {})  # to end
            if self.owner != DEFAULT_OWNER:  # one shard's FID/KID is not the run's
                dataset_metrics, previous = {}, {}
            for method, entry in previous.items():  # nothing new for it: keep its FID/KID
                if method not in dataset_metrics:
                    kept = {k: entry[k] for k in SET_LEVEL_KEYS if k in entry}
                    dataset_metrics[method] = kept
            protocol = getattr(pl_module, "fid_protocol", None)
            self.summary = write_summary(self.run_dir, rows, dataset_metrics, protocol)
            flat = summary_metrics(self.summary)
            for logger in trainer.loggers:
                logger.log_metrics(flat, step=trainer.global_step)
                logger.save()
        trainer.strategy.barrier("results_merged")
