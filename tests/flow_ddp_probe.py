"""A Lightning callback for the DDP flow test: each rank saves the train rows it saw."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch


class RecordTrainRows(pl.Callback):
    """Saves ``{epoch: rows [n, w_dim]}`` of this rank's train batches to
    ``<out_dir>/rank<r>.pt`` when training ends."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.rows: dict[int, list[torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.rows.setdefault(trainer.current_epoch, []).append(batch[0].detach().cpu())

    def on_train_end(self, trainer, pl_module):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        rows = {epoch: torch.cat(chunks) for epoch, chunks in self.rows.items()}
        torch.save(rows, self.out_dir / f"rank{trainer.global_rank}.pt")
