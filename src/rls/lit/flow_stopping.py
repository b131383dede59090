"""When the flow's training lowers its rate and stops: the rule of the authors'
flow-training script, as a scheduler Lightning drives from the held-out NLL."""

from __future__ import annotations

import torch

# the authors' flow-training optimiser (CPFLOW_lib/train_tab_w.py at 73103a4: Adam, betas 0.9/0.99,
# weight decay added to the gradient)
ADAM_BETAS = (0.9, 0.99)


class AuthorsDecay(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """The learning-rate rule of the authors' flow-training script (CPFLOW_lib/train_tab_w.py,
    ``update_lr``): after each validation without a lower held-out NLL (strictly lower, no
    threshold), the count since the last improvement is compared with the early-stopping
    patience P: past P//3 the rate becomes lr/10, past 2·(P//3) lr/100; an improvement
    resets the count but never raises the rate again. Training stops after P such
    validations (the early-stopping callback, same count).

    Written by hand: ``ReduceLROnPlateau`` resets its count after each decay (so its second
    decay comes after 2·(P//3 + 1) bad validations, not 2·(P//3) + 1) and its relative
    threshold misjudges improvements of a negative NLL. Subclassed for its state handling
    (``state_dict`` holds ``ndecs`` too); the flow module steps it after each validation and
    keeps its state in the checkpoints."""

    def __init__(self, optimizer: torch.optim.Optimizer, patience: int):
        super().__init__(optimizer, mode="min", factor=0.1, patience=patience)
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.ndecs = 0

    def step(self, metrics, epoch=None):  # noqa: ARG002 - the signature Lightning calls
        current = float(metrics)
        self.last_epoch += 1
        if current < self.best:
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
            third = self.patience // 3
            if self.ndecs == 0 and self.num_bad_epochs > third:
                self.ndecs = 1
            elif self.ndecs == 1 and self.num_bad_epochs > 2 * third:
                self.ndecs = 2
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base / 10**self.ndecs
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
