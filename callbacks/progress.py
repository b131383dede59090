"""Progress for long runs: Lightning's tqdm progress bar, counting what a person waits for.

- Evaluation (``trainer.test`` of ``SearchModule``): one bar over the (image, method)
  results still to compute — on a resumed run only what is left — with rate and ETA for
  the whole run, and one bar for the search in flight: method, image ids, steps done,
  current loss (the batch mean of the total), and the steps per search once known.
- Training (the flow fitted by train_flow.py or inside evaluate.py, the GAN of
  train_generator.py): one bar over ``max_steps`` (from the resumed step on), with the
  logged NLL and the latest validation NLL, instead of one per epoch; no bar for each
  epoch's validation, nor for Lightning's sanity check.

Quiet with ``trainer.enable_progress_bar=false``. The loss is read off the device every
``refresh_rate`` steps only, never per step.
"""

from __future__ import annotations

import sys
from typing import Any

from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm


def _ids_text(image_ids: list[str], shown: int = 3) -> str:
    more = f" +{len(image_ids) - shown}" if len(image_ids) > shown else ""
    return ",".join(image_ids[:shown]) + more


def pending_pairs(dataloader, methods: list[str], skip: set) -> int:
    """(image, method) results this rank will compute: its images × methods − done."""
    dataset = dataloader.dataset
    ids = getattr(dataset, "image_ids", None)
    indices = list(iter(dataloader.sampler)) if dataloader.sampler is not None else None
    if ids is None or indices is None:
        return len(dataset) * len(methods) - len(skip)
    return sum((ids[i], m) not in skip for i in indices for m in methods)


class RunProgressBar(TQDMProgressBar):
    """The progress bar of evaluate.py and train_flow.py (see the module docstring).

    ``refresh_rate``: redraw (and read the loss) every this many search or training steps.
    """

    def __init__(self, refresh_rate: int = 10, process_position: int = 0):
        super().__init__(refresh_rate=refresh_rate, process_position=process_position)
        self.run_bar: Tqdm | None = None
        self.search_bar: Tqdm | None = None
        self._steps: dict[str, int] = {}  # method -> steps of one search (learnt)
        self._done = self._within = self._k = 0  # pairs done; in this batch; in flight

    # ---------------------------------------------------------------- training: steps

    def on_train_epoch_start(self, trainer, *_: Any) -> None:
        bar = self._train_progress_bar
        if bar is None or trainer.max_steps in (None, -1):
            return super().on_train_epoch_start(trainer, *_)
        if bar.total != trainer.max_steps:  # first epoch: one bar for the whole fit
            bar.reset(total=trainer.max_steps)
            bar.initial = trainer.global_step  # resumed: counts only what is left
            bar.n = trainer.global_step
            bar.set_description("training")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bar = self._train_progress_bar
        if bar is None or trainer.max_steps in (None, -1):
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        step = trainer.global_step
        if step % self.refresh_rate == 0 or step >= trainer.max_steps:
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    # ---------------------------------------------------------------- training: validation

    def on_sanity_check_start(self, *_: Any) -> None:
        self.train_progress_bar = Tqdm(disable=True)  # Lightning's placeholder; no val bar

    def on_sanity_check_end(self, *_: Any) -> None:
        self.train_progress_bar.close()

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn != "fit":  # trainer.validate(): a bar of its own, as Lightning
            super().on_validation_start(trainer, pl_module)

    def on_validation_batch_start(self, trainer, pl_module, *args: Any, **kwargs: Any) -> None:
        if trainer.state.fn != "fit":
            super().on_validation_batch_start(trainer, pl_module, *args, **kwargs)

    def on_validation_batch_end(self, trainer, pl_module, *args: Any, **kwargs: Any) -> None:
        if trainer.state.fn != "fit":
            super().on_validation_batch_end(trainer, pl_module, *args, **kwargs)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn != "fit":
            return super().on_validation_end(trainer, pl_module)
        self.reset_dataloader_idx_tracker()
        bar = self._train_progress_bar
        if bar is not None and not trainer.sanity_checking:  # the latest held-out NLL
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=True)

    # ---------------------------------------------------------------- evaluation: searches

    def on_test_start(self, trainer, pl_module) -> None:
        if not hasattr(pl_module, "methods_and_baselines"):  # not a search: Lightning's bar
            return super().on_test_start(trainer, pl_module)
        if self.is_disabled:
            return
        methods = list(getattr(pl_module, "methods_and_baselines", []))
        skip = set(getattr(pl_module, "skip", ()))
        total = sum(pending_pairs(dl, methods, skip) for dl in _loaders(trainer))
        left = "" if not skip else f" ({len(skip)} already done)"
        self.run_bar = Tqdm(
            desc=f"restoring{left}", total=total, unit="img·method", position=0,
            dynamic_ncols=True, file=sys.stdout, smoothing=0.1,
        )  # fmt: skip
        self.search_bar = Tqdm(
            desc="search", total=None, unit="step", position=1, leave=False,
            dynamic_ncols=True, file=sys.stdout,
        )  # fmt: skip
        self._done, self._within, self._k = 0, 0, 0
        if hasattr(pl_module, "progress"):
            pl_module.progress = self

    def on_test_batch_start(self, trainer, pl_module, *args: Any, **kwargs: Any) -> None:
        if not hasattr(pl_module, "methods_and_baselines"):
            super().on_test_batch_start(trainer, pl_module, *args, **kwargs)
        # a search: the bars move with the searches (search_start / search_step)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_: Any) -> None:
        if not hasattr(pl_module, "methods_and_baselines"):
            return super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, *_)
        if self.run_bar is None:
            return
        self._done += len((outputs or {}).get("rows", []))
        self._within = 0
        self.run_bar.n = self._done
        self.run_bar.refresh()

    def on_test_end(self, trainer, pl_module) -> None:
        if not hasattr(pl_module, "methods_and_baselines"):
            return super().on_test_end(trainer, pl_module)
        if getattr(pl_module, "progress", None) is self:
            pl_module.progress = None
        for bar in (self.search_bar, self.run_bar):
            if bar is not None:
                bar.close()
        self.run_bar = self.search_bar = None

    # the SearchModule's progress hooks

    def search_start(self, method: str, image_ids: list[str]) -> None:
        if self.search_bar is None:
            return
        self._k = len(image_ids)
        self.search_bar.reset(total=self._steps.get(method))
        self.search_bar.set_description(f"{method} on {_ids_text(image_ids)}")

    def search_step(self, step: int, stage: str, losses: dict) -> None:
        if self.search_bar is None or (step + 1) % self.refresh_rate:
            return
        loss = float(losses["total"].detach().float().mean())  # one sync per refresh
        self.search_bar.n = step + 1
        self.search_bar.set_postfix(stage=stage, loss=f"{loss:.4g}", refresh=False)
        self.search_bar.refresh()
        total = self.search_bar.total
        if total:  # move the run bar within the search too (a smoother ETA)
            self.run_bar.n = self._done + self._within + self._k * min(1.0, (step + 1) / total)
            self.run_bar.refresh()

    def search_end(self, method: str, steps: int) -> None:
        self._steps[method] = steps
        self._within += self._k


def _loaders(trainer) -> list:
    loaders = trainer.test_dataloaders
    if loaders is None:
        return []
    return list(loaders) if isinstance(loaders, list | tuple) else [loaders]
