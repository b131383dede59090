"""Training the project's own StyleGAN2 ``Generator`` on a small image set, as a LightningModule.

The StyleGAN2 recipe (Karras et al. 2020; loss and schedule of NVIDIA stylegan2-ada-pytorch
``training/loss.py``) at small scale:

- non-saturating logistic loss: ``softplus(-D(G(z)))`` for G, ``softplus(D(G(z))) +
  softplus(-D(x))`` for D;
- lazy R1 on the (augmented) reals every ``r1_interval`` D steps, ``gamma/2 · |∇D|²`` scaled
  by the interval, and Adam's lr/betas of D corrected by ``r1_interval / (r1_interval + 1)``
  as upstream (G has no path-length regulariser here, so its Adam settings are plain);
- an EMA copy of G (``torch.optim.swa_utils.AveragedModel`` with
  ``get_ema_multi_avg_fn``; half-life ``ema_kimg`` thousand images, ramped up over the first
  ``ema_rampup`` of the images seen, as upstream); the EMA copy is the generator shipped;
- differentiable augmentation of every image D sees, real and fake alike, from Kornia's
  augmentation module so that gradients flow through it to G: either DiffAugment (Zhao et al.
  2020: translation, cutout, colour at p = 1; ``kind: diffaugment``) or ADA's geometric and
  colour pipeline with an adaptive probability (Karras et al. 2020b, ``kind: ada``: p moves
  by the sign of the overfitting heuristic ``r_t = E[sign D(x_real)]`` against a target,
  0.6 in the paper). One pipeline object serves both (independent random parameters per
  image), so reals and fakes are augmented by the same distribution;
- style mixing regularisation (StyleGAN, Sec. 3.1; upstream ``style_mixing_prob`` 0.9): with
  that probability a batch's W+ rows from a random cutoff on come from a second z.

Not included: path-length regularisation and mixed precision. Manual optimisation: one G
step and one D step per iteration, so Lightning's ``global_step`` (optimiser steps) is twice
the iteration count.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from rls.generators import Generator, build_generator, save_generator
from rls.generators.discriminator import Discriminator


def diff_augment(
    translation: float = 0.125,
    cutout: float = 0.5,
    brightness: float = 0.5,
    contrast: tuple[float, float] = (0.5, 1.5),
    xflip: bool = True,
    resolution: int = 32,
) -> nn.Module:
    """The DiffAugment policy ``color,translation,cutout`` (+ x-flip) for images in [-1, 1].

    - colour: brightness ``x + U(-b, b)`` on the [-1, 1] scale (Kornia's additive brightness;
      DiffAugment's ±0.5) and contrast ``x · U(contrast)`` about mid-grey; no
      saturation (the real faces are grey; a coloured fake is for D to reject);
    - translation by up to ``translation`` of the image size in whole pixels, zero (grey) fill
      (a padded random crop);
    - cutout: one grey square of side ``cutout`` × size at a random place;
    - x-flip with probability 0.5 (faces are mirror-symmetric in distribution).
    Every op is applied to every image (DiffAugment's p = 1) with per-image random draws.
    """
    import kornia.augmentation as K

    pad = int(round(translation * resolution))
    ops: list[nn.Module] = []
    if xflip:
        ops.append(K.RandomHorizontalFlip(p=0.5))
    if brightness > 0:
        # Kornia adds (factor - 1): a shift U(-b, b) on the [-1, 1] scale (DiffAugment: ±0.5).
        ops.append(K.RandomBrightness((1 - brightness, 1 + brightness), clip_output=False, p=1.0))
    if contrast is not None and tuple(contrast) != (1.0, 1.0):
        ops.append(K.RandomContrast(tuple(contrast), clip_output=False, p=1.0))
    if pad > 0:
        ops.append(K.RandomCrop((resolution, resolution), padding=pad, fill=0.0, p=1.0))
    if cutout > 0:
        area = cutout * cutout
        ops.append(K.RandomErasing(scale=(area, area), ratio=(1.0, 1.0), value=0.0, p=1.0))
    return K.AugmentationSequential(*ops) if ops else nn.Identity()


def ada_augment(
    resolution: int = 32,
    xflip: bool = True,
    translation: float = 0.125,
    rotation: float = 180.0,
    scale: tuple[float, float] = (0.75, 1.33),
    brightness: float = 0.2,
    contrast: tuple[float, float] = (0.7, 1.4),
    cutout: float = 0.0,
    **unused,
) -> nn.Module:
    """ADA's ``bgc`` pipeline for grey images in [-1, 1], each op applied with the adaptive
    probability ``p`` (set on the ops by :class:`AdaptiveAugment`; starts at 0).

    - x-flip with probability 0.5 always (dataset mirroring, upstream ``--mirror``);
    - geometric, one affine per image (with probability p): rotation U(±``rotation``°),
      isotropic scale U(``scale``), translation U(±``translation`` of the size), reflection
      padding as upstream (which pads by reflecting too);
    - colour (each with probability p): brightness ``x + U(±b)``, contrast ``x · U(contrast)``
      about mid-grey; no hue or saturation (the faces are grey); no luma flip (it would
      make negatives of faces D must tell from real ones only by p);
    - optional cutout (ADA's ``bgcfnc`` adds it), also with probability p.

    Kornia's ops draw their parameters independently per image; ``p`` is read on every call.
    ``unused`` takes DiffAugment-only keys so one config block serves both kinds.
    """
    import kornia.augmentation as K

    ops: list[nn.Module] = []
    if xflip:
        ops.append(K.RandomHorizontalFlip(p=0.5))
    adaptive: list[nn.Module] = [
        K.RandomAffine(
            degrees=rotation,
            translate=(translation, translation),
            scale=tuple(scale),
            padding_mode="reflection",
            p=0.0,
        ),  # fmt: skip
        K.RandomBrightness((1 - brightness, 1 + brightness), clip_output=False, p=0.0),
        K.RandomContrast(tuple(contrast), clip_output=False, p=0.0),
    ]
    if cutout > 0:
        area = cutout * cutout
        adaptive.append(K.RandomErasing(scale=(area, area), ratio=(1.0, 1.0), value=0.0, p=0.0))
    pipeline = K.AugmentationSequential(*ops, *adaptive)
    pipeline.adaptive_ops = adaptive  # plain attribute: the ops whose p the controller sets
    return pipeline


class AdaptiveAugment(nn.Module):
    """ADA's controller (stylegan2-ada ``training_loop``: ``ada_target``, ``ada_interval``,
    ``ada_kimg``): every ``interval`` iterations, ``p += sign(r_t − target) · images /
    (kimg · 1000)``, clamped to [0, 1], where ``r_t`` is the mean sign of D's logits on the
    (augmented) reals since the last adjustment. ``p`` and the running sums are buffers, so
    a checkpoint resumes them."""

    def __init__(self, pipeline: nn.Module, target: float = 0.6, interval: int = 4,
                 kimg: float = 100.0):  # fmt: skip
        super().__init__()
        self.pipeline = pipeline
        self.target, self.interval, self.kimg = float(target), int(interval), float(kimg)
        self.register_buffer("p", torch.zeros([]))
        self.register_buffer("sign_sum", torch.zeros([]))
        self.register_buffer("count", torch.zeros([]))
        self.register_buffer("rt", torch.zeros([]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pipeline(x)

    def apply_p(self) -> None:
        p = float(self.p)
        for op in self.pipeline.adaptive_ops:
            op.p = p

    @torch.no_grad()
    def accumulate(self, real_logits: torch.Tensor) -> None:
        self.sign_sum += real_logits.sign().sum()
        self.count += real_logits.numel()

    @torch.no_grad()
    def adjust(self, iteration: int, batch_size: int) -> None:
        """Called once per iteration; moves ``p`` every ``interval`` iterations."""
        if (iteration + 1) % self.interval or self.count == 0:
            return
        self.rt.copy_(self.sign_sum / self.count)
        step = torch.sign(self.rt - self.target) * (batch_size * self.interval) / (self.kimg * 1000)
        self.p.copy_((self.p + step).clamp(0, 1))
        self.sign_sum.zero_()
        self.count.zero_()
        self.apply_p()


def pairwise_rmse(images: torch.Tensor) -> torch.Tensor:
    """Mean RMSE over all distinct pairs of ``[N, C, H, W]`` images: the diversity measure
    of docs/generator_lfw32.md (a collapsed generator scores near 0)."""
    flat = images.flatten(1).double()
    d2 = torch.cdist(flat, flat).square() / flat.shape[1]
    n = flat.shape[0]
    off = ~torch.eye(n, dtype=torch.bool, device=flat.device)
    return d2[off].sqrt().mean().float()


def mix_styles(G: Generator, z: torch.Tensor, prob: float) -> torch.Tensor:
    """W+ codes for ``z``; with probability ``prob`` (one draw per batch, as upstream) the
    rows from a random cutoff in [1, num_ws) on come from a second, fresh z."""
    ws = G.mapping(z)
    if prob <= 0:
        return ws
    num_ws = ws.shape[1]
    cutoff = int(torch.randint(1, num_ws, ()))
    if float(torch.rand(())) >= prob:
        return ws
    ws2 = G.mapping(torch.randn_like(z), skip_w_avg_update=True)
    rows = torch.arange(num_ws, device=ws.device)[None, :, None]
    return torch.where(rows < cutoff, ws, ws2)


def r1_penalty(D: nn.Module, real: torch.Tensor, augment: nn.Module | None = None):
    """``(|∇_x D(aug(x))|², logits)`` per image: the squared gradient norm of D's summed
    logits with respect to the un-augmented reals ``x`` (as upstream: the gradient passes
    through the augmentation), and the logits themselves."""
    real = real.detach().requires_grad_(True)
    logits = D(augment(real) if augment is not None else real)
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.square().sum(dim=[1, 2, 3]), logits


def ema_beta(batch_size: int, images_seen: int, ema_kimg: float, ema_rampup: float | None) -> float:
    """Upstream's EMA decay per step: half-life ``ema_kimg`` thousand images, shortened to
    ``ema_rampup × images_seen`` early in training."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, images_seen * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


class GANModule(pl.LightningModule):
    """StyleGAN2 G (+ EMA copy) against a resnet D on a fixed tensor of training images.

    ``G`` and ``D`` are built here from their configs (a checkpoint holds G, D, the EMA copy
    and both optimisers). ``export_path``: where the EMA generator is written in the project's
    safetensors format every ``export_every`` iterations and at the end of training.
    """

    def __init__(
        self,
        generator: dict,
        discriminator: dict,
        batch_size: int = 32,
        lr: float = 0.0025,
        betas: tuple[float, float] = (0.0, 0.99),
        r1_gamma: float = 0.05,
        r1_interval: int = 16,
        ema_kimg: float = 10.0,
        ema_rampup: float | None = 0.05,
        augment: dict | None = None,
        style_mixing: float = 0.0,
        seed: int = 0,
        export_path: str | None = None,
        export_every: int = 200,
        sample_every: int = 200,
        n_samples: int = 64,
        metadata: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["metadata"])
        self.automatic_optimization = False
        self.G: Generator = build_generator(seed=seed, **generator).train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            self.D = Discriminator(**discriminator)
        self.G_ema = AveragedModel(
            self.G, multi_avg_fn=get_ema_multi_avg_fn(0.0), use_buffers=True
        ).eval()
        res = self.G.img_resolution
        augment = dict(augment or {})
        kind = augment.pop("kind", "diffaugment")
        ada = augment.pop("ada", None) or {}
        if kind == "diffaugment":
            self.augment = diff_augment(resolution=res, **augment)
        elif kind == "ada":
            self.augment = AdaptiveAugment(ada_augment(resolution=res, **augment), **ada)
        else:
            raise ValueError(f"gan.augment.kind must be 'diffaugment' or 'ada', got {kind!r}")
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("sample_z", torch.randn(n_samples, self.G.z_dim, generator=gen))
        self.metadata = dict(metadata or {})
        self.real_diversity: float | None = None  # pairwise RMSE of the training images
        self._t0 = None
        self.train_seconds = 0.0  # wall time of training, summed over resumed runs

    # ------------------------------------------------------------------ helpers

    @property
    def iteration(self) -> int:
        return self.global_step // 2  # one G and one D optimiser step per iteration

    def ema_generator(self) -> Generator:
        """A plain ``Generator`` (eval mode, CPU) with the EMA weights and buffers."""
        G = copy.deepcopy(self.G_ema.module).cpu().eval()
        return G

    def export(self, path: str | Path | None = None) -> Path | None:
        path = path or self.hparams.export_path
        if not path:
            return None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {k: str(v) for k, v in self.metadata.items()}
        meta.update(iterations=str(self.iteration), train_seconds=f"{self._elapsed():.0f}")
        save_generator(self.ema_generator(), path, **meta)
        return path

    def _elapsed(self) -> float:
        return self.train_seconds + (time.monotonic() - self._t0 if self._t0 else 0.0)

    def update_ema(self, batch_size: int, images_seen: int) -> float:
        """``G_ema ← β·G_ema + (1 − β)·G`` (parameters and buffers; the first call copies G),
        β from :func:`ema_beta`. Returns β."""
        hp = self.hparams
        beta = ema_beta(batch_size, images_seen, hp.ema_kimg, hp.ema_rampup)
        self.G_ema.multi_avg_fn = get_ema_multi_avg_fn(beta)
        self.G_ema.update_parameters(self.G)
        return beta

    # ------------------------------------------------------------------ Lightning

    def configure_optimizers(self):
        hp = self.hparams
        ratio = hp.r1_interval / (hp.r1_interval + 1) if hp.r1_interval > 0 else 1.0
        opt_g = torch.optim.Adam(self.G.parameters(), lr=hp.lr, betas=tuple(hp.betas), eps=1e-8)
        opt_d = torch.optim.Adam(
            self.D.parameters(), lr=hp.lr * ratio, betas=tuple(b**ratio for b in hp.betas), eps=1e-8
        )
        return [opt_g, opt_d]

    def on_train_start(self) -> None:
        self._t0 = time.monotonic()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["train_seconds"] = float(self._elapsed())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.train_seconds = float(checkpoint.get("train_seconds", 0.0))

    def on_train_batch_start(self, batch, batch_idx) -> None:
        if isinstance(self.augment, AdaptiveAugment):
            self.augment.apply_p()  # after a resume the ops' p comes from the restored buffer

    def training_step(self, batch, batch_idx):
        (real,) = batch if isinstance(batch, list | tuple) else (batch,)
        hp = self.hparams
        opt_g, opt_d = self.optimizers()
        n = real.shape[0]
        z = torch.randn(n, self.G.z_dim, device=self.device)

        # G: non-saturating loss through the augmentation into G.
        self.D.requires_grad_(False)
        # Unfused modulated conv while training, as upstream (faster; same maths).
        ws = mix_styles(self.G, z, hp.style_mixing)
        fake = self.G.synthesis(ws, noise_mode="random", fused_modconv=False)
        loss_g = F.softplus(-self.D(self.augment(fake))).mean()
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()
        self.D.requires_grad_(True)

        # D: logistic loss on fakes and reals (+ lazy R1 on the reals every r1_interval).
        it = self.iteration
        do_r1 = hp.r1_interval > 0 and hp.r1_gamma > 0 and it % hp.r1_interval == 0
        # The G step's fakes, detached (upstream draws new ones; reusing them saves a G
        # forward per iteration, a third of the time on a CPU).
        logits_fake = self.D(self.augment(fake.detach()))
        if do_r1:
            r1, logits_real = r1_penalty(self.D, real, self.augment)
            loss_r1 = (hp.r1_gamma / 2) * r1.mean() * hp.r1_interval
        else:
            logits_real = self.D(self.augment(real))
            loss_r1 = None
        loss_d = F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean()
        total_d = loss_d if loss_r1 is None else loss_d + loss_r1
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(total_d)
        opt_d.step()

        images_seen = (it + 1) * n
        self.update_ema(n, images_seen)
        if isinstance(self.augment, AdaptiveAugment):
            self.augment.accumulate(logits_real.detach())
            self.augment.adjust(it, n)

        logs = {
            "loss/G": loss_g.detach(),
            "loss/D": loss_d.detach(),
            "D/real": logits_real.detach().mean(),
            "D/fake": logits_fake.detach().mean(),
        }
        if loss_r1 is not None:
            logs["loss/R1"] = loss_r1.detach() / hp.r1_interval
        if isinstance(self.augment, AdaptiveAugment):
            logs["ada/p"] = self.augment.p.detach()
            logs["ada/rt"] = self.augment.rt.detach()
        self.log_dict(logs, prog_bar=False)
        self.log("kimg", images_seen / 1000, prog_bar=True)
        self.log("G", loss_g.detach(), prog_bar=True)
        self.log("D", loss_d.detach(), prog_bar=True)
        if it % 50 == 0 and not math.isfinite(float(loss_d.detach())):
            raise FloatingPointError(f"D loss is not finite at iteration {it}")

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        it = self.iteration
        hp = self.hparams
        if hp.export_every and it % hp.export_every == 0:
            self.export()
        if hp.sample_every and it % hp.sample_every == 0:
            self.log_samples()
            self.log_diversity()

    def on_train_end(self) -> None:
        self.train_seconds, self._t0 = self._elapsed(), None
        self.export()
        self.log_samples()

    @torch.no_grad()
    def samples(self) -> torch.Tensor:
        """The EMA generator's images for the fixed ``sample_z`` (values in [-1, 1])."""
        G = self.G_ema.module
        return G(self.sample_z.to(self.device), noise_mode="const").clamp(-1, 1).cpu()

    @torch.no_grad()
    def diversity(self, real: torch.Tensor) -> float:
        """Pairwise RMSE of the fixed-z samples over that of the training images ``real``
        (in [-1, 1]): 1 = as varied as the data; docs/generator_lfw32.md aims at >= 0.8."""
        if self.real_diversity is None:
            self.real_diversity = float(pairwise_rmse((real.float() + 1) / 2))
        return float(pairwise_rmse((self.samples() + 1) / 2)) / self.real_diversity

    def log_diversity(self) -> None:
        self.log("diversity", self.diversity(self.trainer.train_dataloader.dataset.tensors[0]),
                 prog_bar=True)  # fmt: skip

    def log_samples(self) -> Path | None:
        """Sample grid to ``<run>/samples/iter_NNNNNN.png`` and to W&B when logging there."""
        import torchvision

        if self.trainer is None or not self.trainer.is_global_zero:
            return None
        grid = torchvision.utils.make_grid(
            (self.samples() + 1) / 2, nrow=int(math.sqrt(self.hparams.n_samples)), padding=1
        )
        out = Path(self.trainer.default_root_dir) / "samples" / f"iter_{self.iteration:06d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        torchvision.utils.save_image(grid, out)
        from pytorch_lightning.loggers import WandbLogger

        for lg in self.trainer.loggers:
            if isinstance(lg, WandbLogger):
                lg.log_image(key="samples", images=[grid], step=self.global_step)
        return out


def fit_gan(
    images: torch.Tensor,
    generator: dict,
    discriminator: dict,
    output_dir: str | Path,
    iterations: int,
    batch_size: int = 16,
    seed: int = 0,
    iters_per_epoch: int = 500,
    checkpoint_every: int = 100,
    resume: bool = True,
    logger=None,
    callbacks=None,
    trainer_kwargs: dict | None = None,
    **module_kwargs,
) -> GANModule:
    """Train a StyleGAN2 on ``images`` (``[N, C, H, W]`` in [-1, 1]) for ``iterations``
    iterations (each one G and one D step on ``batch_size`` images drawn with replacement).

    Writes under ``output_dir``: ``checkpoints/last.ckpt`` every ``checkpoint_every``
    iterations (a rerun with ``resume`` continues from it), ``generator_ema.safetensors``
    (the EMA generator, every ``export_every`` iterations and at the end) and
    ``samples/iter_*.png``. Returns the trained module.
    """
    from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar
    from torch.utils.data import DataLoader, RandomSampler, TensorDataset

    output_dir = Path(output_dir)
    if images.ndim != 4 or images.shape[-1] != generator.get("img_resolution"):
        raise ValueError(
            f"training images {list(images.shape)} do not match the generator's"
            f" img_resolution={generator.get('img_resolution')}"
        )
    if images.min() < -1.001 or images.max() > 1.001:
        raise ValueError("training images must lie in [-1, 1]")
    pl.seed_everything(seed, workers=True, verbose=False)
    module = GANModule(
        generator, discriminator, batch_size=batch_size, seed=seed,
        export_path=str(output_dir / "generator_ema.safetensors"), **module_kwargs,
    )  # fmt: skip
    dataset = TensorDataset(images.float())
    sampler = RandomSampler(dataset, replacement=True, num_samples=batch_size * iters_per_epoch)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True)
    ckpt_dir = output_dir / "checkpoints"
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir, filename="last", save_last=False,
        every_n_train_steps=2 * checkpoint_every, save_top_k=1, enable_version_counter=False,
    )  # fmt: skip
    kwargs = {
        "max_steps": 2 * iterations,  # optimiser steps: one G and one D per iteration
        "max_epochs": -1,
        "default_root_dir": str(output_dir),
        "logger": logger if logger is not None else False,
        "callbacks": [checkpoint, *(callbacks or [])],
        "log_every_n_steps": 20,
    }
    kwargs.update(trainer_kwargs or {})
    if not kwargs.get("enable_progress_bar", True):
        kwargs["callbacks"] = [c for c in kwargs["callbacks"] if not isinstance(c, ProgressBar)]
    trainer = pl.Trainer(**kwargs)
    last = ckpt_dir / "last.ckpt"
    resume_from = last if resume and last.is_file() else None
    # Intended, so not warned about: the EMA copy stays in eval mode, and checkpoints hold
    # the state after the iteration's optimiser steps (what resuming needs).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    # weights_only=True: a checkpoint is read as tensors and plain containers, never code.
    trainer.fit(module, loader, ckpt_path=str(resume_from) if resume_from else None,
                weights_only=True)  # fmt: skip
    trainer.save_checkpoint(last, weights_only=False)
    return module
