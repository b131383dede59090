"""Training the W-space flow by maximum likelihood (method.md §2) as a LightningModule.

Data: w = mapping(z), z ~ N(0, I), no dataset on disk. Each epoch draws a fresh train
buffer of ``epoch_size`` samples seeded by (seed, epoch). Chosen over an infinite
stream because a map-style buffer is sharded by Lightning's DistributedSampler with no
duplicate samples across ranks, is reshuffled per epoch, runs the mapping network once
per epoch in large batches, and makes resuming exact (the epoch number seeds it). The
held-out set comes from a separate seed and is fixed for the whole run. The stopping and
learning-rate rule: :mod:`rls.lit.flow_stopping`; the cache both entry points share:
:mod:`rls.lit.flow_cache`.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, ProgressBar
from pytorch_lightning.trainer.states import TrainerFn
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rls.flows import WFlow, fit_older_priors, gaussianity_stats, sample_w
from rls.flows.recipe import (
    SCHEDULES,
    check_training_settings,
)
from rls.generators.formats_common import refused_global
from rls.lit.flow_stopping import ADAM_BETAS, AuthorsDecay
from rls.seeding import seed_from_id

log = logging.getLogger("rls.lit")


def flow_seed(seed: int, purpose: str) -> int:
    """Independent seeds for the train buffers and the held-out set of one run."""
    return seed_from_id(str(seed), salt=f"flow/{purpose}") % (2**31)


class FlowModule(pl.LightningModule):
    """Maximum likelihood for a ``WFlow`` on samples of a frozen generator's mapping.

    The generator is held outside the module's state (``self.generator`` is not a
    submodule), so checkpoints hold the flow and optimiser only.
    """

    def __init__(
        self,
        flow: WFlow,
        generator: nn.Module,
        val_w: torch.Tensor,
        epoch_size: int = 16384,
        batch_size: int = 512,
        seed: int = 0,
        lr: float = 1e-4,
        weight_decay: float = 1e-6,
        schedule: str = "authors",
        max_steps: int = 1000,
        sample_batch_size: int = 8192,
        patience: int = 20,
    ):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
        if batch_size > epoch_size:
            raise ValueError(f"batch_size {batch_size} exceeds epoch_size {epoch_size}")
        self.flow = flow
        self.__dict__["generator"] = generator.eval().requires_grad_(False)
        self.val_w = val_w.detach().cpu()
        self._first_buffer: torch.Tensor | None = None  # epoch 0: standardisation, older priors
        self.epoch_size, self.batch_size, self.seed = epoch_size, batch_size, seed
        self.lr, self.weight_decay, self.schedule = lr, weight_decay, schedule
        self.max_steps, self.sample_batch_size = max_steps, sample_batch_size
        self.patience = patience
        self.report: dict | None = None  # filled by the test stage (final evaluation)
        # one entry per validation: step, held-out NLL, learning rate, seconds of training
        self.curve: list[dict] = []
        self._decay: AuthorsDecay | None = None  # schedule="authors": stepped after validation
        self._decay_state: dict | None = None  # its state from a checkpoint, until it exists
        self._seconds_before = 0.0  # training time of earlier invocations (resumed runs)
        self._fit_started: float | None = None

    # ---- data -------------------------------------------------------------------------
    def train_buffer(self, epoch: int) -> torch.Tensor:
        """The ``epoch``'s train samples ``[epoch_size, w_dim]`` (CPU); epoch 0's is kept,
        as the flow's standardisation and the older priors are fitted on it."""
        if epoch == 0 and self._first_buffer is not None:
            return self._first_buffer
        if self._trainer is not None:  # during fit: run the mapping on the training device
            self.generator.to(self.device)
        w = sample_w(
            self.generator,
            self.epoch_size,
            flow_seed(self.seed, f"train/{epoch}"),
            self.sample_batch_size,
        )
        if epoch == 0:
            self._first_buffer = w.cpu()
        return w.cpu()

    def train_dataloader(self) -> DataLoader:
        buffer = self.train_buffer(self.current_epoch)
        order = torch.Generator().manual_seed(flow_seed(self.seed, f"order/{self.current_epoch}"))
        return DataLoader(
            TensorDataset(buffer), self.batch_size, shuffle=True, drop_last=True, generator=order
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.val_w), batch_size=max(self.batch_size, 1024))

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    # ---- steps ------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        nll = -self.flow.log_prob(batch[0]).mean()
        self.log("train/nll", nll, prog_bar=True)
        return nll

    def _eval_step(self, batch, split: str):
        w = batch[0]
        nll = -self.flow.log_prob(w)
        sq_norm = self.flow.to_gaussian(w).square().sum(-1)
        n = w.shape[0]
        self.log(f"{split}/nll", nll.mean(), prog_bar=True, sync_dist=True, batch_size=n)
        # target: w_dim (the mean of χ²(w_dim))
        self.log(f"{split}/sq_norm_mean", sq_norm.mean(), sync_dist=True, batch_size=n)

    def on_validation_epoch_start(self) -> None:
        """Batch-norm flow layers (``maf_paper``): fix their running statistics to this
        epoch's whole train buffer before validating (and checkpointing), as the training
        script of the authors' layers does after each epoch. Every rank holds the whole
        buffer, so every rank computes the same statistics."""
        if not self.trainer.sanity_checking:
            self.flow.set_running_statistics(self.train_buffer(self.current_epoch).to(self.device))

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def on_fit_start(self) -> None:
        self._fit_started = time.monotonic()

    def seconds(self) -> float:
        """Training time so far, over every invocation of a resumed run."""
        since = time.monotonic() - self._fit_started if self._fit_started is not None else 0.0
        return self._seconds_before + since

    def on_validation_end(self) -> None:
        """The NLL curve: held-out NLL after this validation round (Lightning's epoch mean,
        the value early stopping and the best checkpoint read)."""
        if self.trainer.sanity_checking or "val/nll" not in self.trainer.callback_metrics:
            return
        self.curve.append(
            {
                "step": int(self.trainer.global_step),
                "val_nll": float(self.trainer.callback_metrics["val/nll"]),
                "lr": float(self.trainer.optimizers[0].param_groups[0]["lr"]),
                "seconds": round(self.seconds(), 2),
            }
        )
        if self._decay is not None and self.trainer.state.fn == TrainerFn.FITTING:
            self._decay.step(self.trainer.callback_metrics["val/nll"])  # the next epoch's lr

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["flow_curve"] = list(self.curve)
        checkpoint["flow_seconds"] = self.seconds()
        if self._decay is not None:
            checkpoint["authors_decay"] = self._decay.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.trainer.state.fn != TrainerFn.FITTING:  # testing the best: keep the whole curve
            return
        self.curve = list(checkpoint.get("flow_curve", []))
        self._seconds_before = float(checkpoint.get("flow_seconds", 0.0))
        # older checkpoints kept the rule's state where Lightning put its schedulers
        older = (checkpoint.get("lr_schedulers") or [None])[0]
        self._decay_state = checkpoint.get("authors_decay", older)
        if self._decay is not None and self._decay_state is not None:
            self._decay.load_state_dict(self._decay_state)

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        """Final evaluation on the whole held-out set (every rank computes the same)."""
        self.report = evaluate_priors(self.flow, self.train_buffer(0), self.val_w)

    # ---- optimisation -------------------------------------------------------------------
    def configure_optimizers(self):
        opt = torch.optim.Adam(
            self.flow.parameters(), lr=self.lr, betas=ADAM_BETAS, weight_decay=self.weight_decay
        )
        if self.schedule == "authors":
            # Stepped by this module after each validation (on_validation_end), not by
            # Lightning: Lightning steps epoch schedulers after the epoch's checkpoints are
            # written, so a run resumed from its last state would miss one step of the rule.
            self._decay = AuthorsDecay(opt, patience=self.patience)
            if self._decay_state is not None:
                self._decay.load_state_dict(self._decay_state)
            return opt
        if self.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                opt, T_max=max(self.max_steps, 1), eta_min=0.01 * self.lr
            )
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        if self.schedule == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)
            return {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": sched, "monitor": "val/nll", "interval": "epoch"},
            }
        return opt


@torch.no_grad()
def evaluate_priors(flow: WFlow, train_w: torch.Tensor, val_w: torch.Tensor) -> dict:
    """Held-out NLL (nats per w) and Gaussianity of f(w) for the flow and every older
    prior, the older ones fitted on ``train_w`` (the flow's first train buffer)."""
    flow = flow.eval()
    val_w = val_w.to(flow.mu)
    priors = {"flow": flow, **{k: p.to(flow.mu) for k, p in fit_older_priors(train_w).items()}}
    report: dict = {"val_nll": {}, "gaussianity": {}, "z": {}, "n_val": int(val_w.shape[0])}
    for name, prior in priors.items():
        chunks = val_w.split(8192)
        nll = torch.cat([-prior.log_prob(c) for c in chunks]).double().mean().item()
        z = torch.cat([prior.to_gaussian(c) for c in chunks]).cpu()
        report["val_nll"][name] = nll
        report["gaussianity"][name] = gaussianity_stats(z)
        report["z"][name] = z
    return report


def _refused(ckpt_path, err: pickle.UnpicklingError) -> ValueError:
    name = refused_global(err)
    what = f"it asks for the global '{name}'" if name else str(err).splitlines()[0]
    return ValueError(
        f"{ckpt_path}: refused to load this checkpoint: it holds more than tensors and plain"
        f" data ({what}); nothing in it was executed. Delete it or use resume=false"
    )


def read_checkpoint(ckpt_path: Path) -> dict:
    """A Lightning checkpoint read weights-only: tensors and plain data. A file that asks
    the unpickler for anything else (a function to call: code) is refused, naming the file,
    before Lightning ever opens it; nothing in it is executed."""
    try:
        return torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refused(ckpt_path, err) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(
            f"{ckpt_path}: not a readable checkpoint ({type(err).__name__}: {err}); delete it"
            " or use resume=false"
        ) from None


def check_resumable(ckpt_path: Path, flow: WFlow) -> None:
    """Refuse to resume from an unsafe checkpoint or one of another flow (other w_dim or
    architecture), naming the file, instead of failing deep inside ``load_state_dict``."""
    state = read_checkpoint(ckpt_path)["state_dict"]
    expected = {f"flow.{k}": v.shape for k, v in flow.state_dict().items()}
    found = {k: v.shape for k, v in state.items()}
    if found != expected:
        w_dim = found.get("flow.mu", (None,))[0]
        raise ValueError(
            f"{ckpt_path}: checkpoint holds a different flow (w_dim={w_dim}) than the one "
            f"configured (w_dim={flow.w_dim}, {flow.config()}); use another output_dir "
            "or resume=false"
        )


def fit_flow(
    G: nn.Module,
    flow_cfg: dict,
    max_steps: int,
    batch_size: int,
    seed: int,
    val_size: int,
    output_dir: str | Path,
    logger=None,
    callbacks=None,
    trainer_kwargs: dict | None = None,
    *,
    epoch_size: int = 16384,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    schedule: str = "authors",
    patience: int = 20,
    gradient_clip_val: float = 1.0,
    resume: bool = True,
    generator_name: str | None = None,
) -> tuple[WFlow, dict]:
    """Train a ``WFlow`` for generator ``G`` and write ``flow.safetensors`` and
    ``metrics.json`` to ``output_dir``.

    ``flow_cfg``: ``WFlow`` keyword arguments (``family``, ``transforms``, ``hidden``...);
    ``hidden: None`` means the authors' ratio, two hidden layers of 2·w_dim units.
    Training validates on the held-out set after every epoch (``epoch_size`` samples) and
    stops after ``patience`` validations without a lower held-out NLL, or at ``max_steps``;
    the flow kept is the one with the lowest held-out NLL (its checkpoint). With
    ``schedule="authors"`` the learning rate drops to lr/10 and lr/100 on the way
    (``AuthorsDecay``). Settings that cannot train are refused before anything is built.
    Resumes from ``output_dir/checkpoints/last.ckpt`` when ``resume`` and it exists.
    Returns the flow and the metrics written to ``metrics.json`` (with ``curve``: the
    held-out NLL after every validation, and why training stopped).
    """
    check_training_settings(
        max_steps=max_steps, batch_size=batch_size, epoch_size=epoch_size, val_size=val_size,
        lr=lr, weight_decay=weight_decay, schedule=schedule, patience=patience,
        gradient_clip_val=gradient_clip_val,
    )  # fmt: skip
    output_dir = Path(output_dir)
    cfg = dict(flow_cfg)
    if cfg.get("w_dim", G.w_dim) != G.w_dim:
        raise ValueError(f"flow_cfg w_dim={cfg['w_dim']} but the generator has w_dim={G.w_dim}")
    cfg["w_dim"] = G.w_dim
    if cfg.get("hidden") is None:
        cfg["hidden"] = (2 * G.w_dim, 2 * G.w_dim)
    cfg.setdefault("generator", generator_name)

    with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG untouched
        torch.manual_seed(flow_seed(seed, "init"))
        flow = WFlow(**cfg)
    val_w = sample_w(G, val_size, flow_seed(seed, "val"))
    module = FlowModule(
        flow,
        G,
        val_w,
        epoch_size=epoch_size,
        batch_size=batch_size,
        seed=seed,
        lr=lr,
        weight_decay=weight_decay,
        schedule=schedule,
        max_steps=max_steps,
        patience=patience,
    )
    flow.fit_standardisation(module.train_buffer(0))  # restored as-is when resuming
    ckpt_dir = output_dir / "checkpoints"
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/nll", mode="min")
    # checked after validation only: a run resumed at an epoch boundary has no fresh val/nll
    early_stop = EarlyStopping(
        monitor="val/nll", mode="min", patience=patience, check_on_train_epoch_end=False
    )
    # The state after every epoch's validation, what a resume continues from (Lightning's
    # save_last rewrites last.ckpt only with a new best); after the stopping rule's count.
    latest = ModelCheckpoint(
        dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
        enable_version_counter=False,
    )  # fmt: skip
    kwargs = {
        "max_steps": max_steps,
        "max_epochs": -1,
        "reload_dataloaders_every_n_epochs": 1,
        "gradient_clip_val": gradient_clip_val,
        "default_root_dir": str(output_dir),
        "logger": logger if logger is not None else False,
        "callbacks": [checkpoint, early_stop, latest, *(callbacks or [])],
    }
    kwargs.update(trainer_kwargs or {})
    if not kwargs.get("enable_progress_bar", True):  # Lightning refuses a bar it must not show
        kwargs["callbacks"] = [c for c in kwargs["callbacks"] if not isinstance(c, ProgressBar)]
    trainer = pl.Trainer(**kwargs)
    last = ckpt_dir / "last.ckpt"
    resume_from = last if resume and last.is_file() else None
    if resume_from is not None:
        check_resumable(resume_from, flow)
    # weights_only=True explicitly: Lightning passes None on to torch.load, which
    # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 in the environment would turn into a full unpickle.
    trainer.fit(module, ckpt_path=str(resume_from) if resume_from else None, weights_only=True)
    stopped = "max_steps" if trainer.global_step >= max_steps else "plateau"
    best = checkpoint.best_model_path or None  # a resumed run takes this path from last.ckpt
    try:
        trainer.test(module, ckpt_path=best, verbose=False, weights_only=True)
    except pickle.UnpicklingError as err:
        raise _refused(best, err) from None

    report = module.report
    curve = module.curve
    best_point = min(curve, key=lambda p: p["val_nll"]) if curve else None
    metrics = {
        "generator": generator_name,
        "w_dim": G.w_dim,
        "flow": flow.config(),
        "n_val": report["n_val"],
        "val_nll": report["val_nll"],
        "flow_beats_all_older_priors": all(
            report["val_nll"]["flow"] < v for k, v in report["val_nll"].items() if k != "flow"
        ),
        "gaussianity": report["gaussianity"],
        "steps": trainer.global_step,
        "best_checkpoint": best,
        "best_step": best_point["step"] if best_point else None,
        "stopped": stopped,
        "seconds": round(module.seconds(), 1),
        "curve": curve,
    }
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        flow.save(output_dir / "flow.safetensors")
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return flow.eval(), metrics
