"""Per-image search inside Lightning's test loop (method.md §3-6): the evaluation job.

Each test batch is a set of images; for every configured method the module observes the
LR input once (``D.observe`` with per-image seeds, so every method sees the identical y),
runs :func:`rls.search.search`, measures the solutions and returns rows + images for the
callbacks (results writer, report, W&B). Lightning shards the images over devices; the
per-image seeds make each result independent of batch and rank. Run it with
``Trainer(inference_mode=False)``: the search needs autograd inside the test loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rls.search import Method, search
from rls.search.losses import flow_nll
from rls.seeding import seeds_for

OBSERVE_SALT = "observe"  # the corruption noise of image i comes from seed_from_id(i, this)
SEARCH_SALT = "search"  # starts, noise maps and restarts of image i


class SearchModule(pl.LightningModule):
    """Restores every test image with every method and measures the results.

    Args:
        generator: the StyleGAN2 prior G (frozen; never modified).
        methods: ``{name: Method}``; all run on the same inputs, in this order.
        degradation: the forward model D (``D(x)`` in the loss, ``D.observe`` makes y).
        prior: the W prior (a ``WFlow``): given to the search and used for ``flow_nll``.
        perceptual: LPIPS-like net for methods with a perceptual term (``None`` = off).
        metrics: ``name -> RestorationMetrics`` factory, called once per method (per-image
            PSNR/SSIM/LPIPS/LR-PSNR and DDP-synced means, FID/KID when available).
        scale, corruption: written into every row.
        skip: (image_id, method) pairs already done (resume): not computed again.
        history_images: how many images per batch return their loss curves (for W&B).
        bicubic_baseline: also score bicubic upsampling of y as the method ``bicubic``
            (the reference every search must beat on HR PSNR).
    """

    def __init__(
        self,
        generator: nn.Module,
        methods: Mapping[str, Method],
        degradation: nn.Module,
        prior: nn.Module | None = None,
        perceptual: nn.Module | None = None,
        metrics: Callable[[], nn.Module] | None = None,
        scale: int | None = None,
        corruption: str = "none",
        skip: Iterable[tuple[str, str]] = (),
        history_images: int = 4,
        bicubic_baseline: bool = False,
    ):
        super().__init__()
        if not methods:
            raise ValueError("SearchModule needs at least one method")
        self.G = generator
        self.D = degradation
        self.prior = prior
        self.perceptual = perceptual
        self.methods = dict(methods)
        names = ["bicubic", *self.methods] if bicubic_baseline else list(self.methods)
        self.metrics = nn.ModuleDict({n: metrics() for n in names}) if metrics else None
        self.scale = scale if scale is not None else getattr(degradation, "scale", None)
        self.corruption = corruption
        self.skip = set(skip)
        self.history_images = history_images
        self.baselines = ["bicubic"] if bicubic_baseline else []
        self.methods_and_baselines = [*self.baselines, *self.methods]
        self.dataset_metrics: dict[str, dict[str, float]] = {}
        for module in (self.G, self.D, self.prior, self.perceptual):
            if module is not None:
                module.requires_grad_(False).eval()

    # -------------------------------------------------------------------------------------

    def _row(self, image_id: str, method: str, **values) -> dict:
        row = {"image_id": image_id, "method": method, "scale": self.scale}
        row["corruption"] = self.corruption
        row.update(values)
        return row

    def observe(self, batch: dict) -> Tensor:
        """The observed LR batch: given (LR folders) or ``D.observe(hr)`` with seeded noise."""
        if "lr" in batch:
            return batch["lr"].float()
        seeds = seeds_for(batch["image_id"], OBSERVE_SALT)
        return self.D.observe(batch["hr"].float(), seeds).float()

    @torch.no_grad()
    def latent_nll(self, latents: Tensor) -> Tensor:
        """``[B]`` (1/L) Σ_i −log p_F((w_i − μ)/σ) of each solution: the RLS prior term
        (method.md §3) unweighted, so methods compare on one realism scale (NaN: no prior)."""
        if self.prior is None:
            return torch.full((latents.shape[0],), math.nan, device=latents.device)
        return flow_nll(self.prior, latents.float())

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        rows, images, histories = [], [], {}
        for image_id, error in batch.get("failures", []):
            for name in self.methods_and_baselines:
                if (image_id, name) not in self.skip:
                    rows.append(self._row(image_id, name, status="failed", notes=error))
        ids = list(batch.get("image_id", []))
        if not ids:
            return {"rows": rows, "images": images, "histories": histories}
        pending = {
            name: [i for i, image_id in enumerate(ids) if (image_id, name) not in self.skip]
            for name in self.methods_and_baselines
        }
        if not any(pending.values()):
            return {"rows": rows, "images": images, "histories": histories}

        y = self.observe(batch)
        hr = batch.get("hr")
        w_true = batch.get("w")
        seeds = seeds_for(ids, SEARCH_SALT)
        todo_ids = sorted({i for rows_ in pending.values() for i in rows_})
        for i in todo_ids:
            images.append(("lr", ids[i], y[i].cpu()))
            if hr is not None:
                images.append(("hr", ids[i], hr[i].cpu()))

        if self.baselines and pending["bicubic"]:
            rows += self._bicubic(ids, pending["bicubic"], y, hr, images)

        for name, method in self.methods.items():
            index = pending[name]
            if not index:
                continue
            sel = torch.tensor(index, device=y.device)
            result = search(
                method, self.G, y[sel], self.D, seeds[index], self.prior, self.perceptual
            )
            sr = result.images
            hr_sel = hr[sel] if hr is not None else None
            w_sel = w_true[sel] if w_true is not None else None
            measured = self._measure(name, sr, hr_sel, y[sel], result.latents, w_sel)
            nll = self.latent_nll(result.latents)
            seconds = result.seconds / len(index)  # the batch ran together: share its time
            for j, i in enumerate(index):
                status = result.status[j]
                notes = [result.notes] if result.notes else []
                if status == "restarted":
                    notes.append("restarted after a non-finite loss")
                if status == "failed":
                    notes.append("non-finite loss on every restart")
                rows.append(
                    self._row(
                        ids[i],
                        name,
                        **{k: v[j] for k, v in measured.items()},
                        flow_nll=nll[j],
                        steps=result.steps,
                        seconds=seconds,
                        status="failed" if status == "failed" else "ok",
                        notes="; ".join(notes),
                    )
                )
                if status != "failed":  # never write the fallback image of a failed search
                    images.append((name, ids[i], sr[j].cpu()))
                samples = result.extras.get("samples")
                if samples is not None and status != "failed":
                    for k in range(1, samples.shape[1]):
                        images.append((f"{name}_samples", f"{ids[i]}_s{k}", samples[j, k].cpu()))
            keep = min(self.history_images, len(index))
            histories[name] = {
                "image_id": [ids[i] for i in index[:keep]],
                "terms": {k: v[:, :keep].detach().cpu() for k, v in result.history.items()},
            }
        return {"rows": rows, "images": images, "histories": histories}

    def _bicubic(self, ids, index, y, hr, images) -> list[dict]:
        """Rows (and images) of bicubic upsampling of y: the no-prior reference."""
        sel = torch.tensor(index, device=y.device)
        size = (hr.shape[-2], hr.shape[-1]) if hr is not None else None
        if size is None:
            size = tuple(s * self.D.scale for s in y.shape[-2:])
        up = F.interpolate(y[sel], size=size, mode="bicubic", align_corners=False).clamp(0, 1)
        hr_sel = hr[sel] if hr is not None else None
        measured = self._measure("bicubic", up, hr_sel, y[sel], None, None)
        rows = []
        for j, i in enumerate(index):
            values = {k: v[j] for k, v in measured.items()}
            rows.append(self._row(ids[i], "bicubic", **values, steps=0, status="ok"))
            images.append(("bicubic", ids[i], up[j].cpu()))
        return rows

    def _measure(self, name, sr, hr, y, latents, w_true) -> dict[str, Tensor]:
        """Per-image metrics as the results columns (``lpips`` = LPIPS-AlexNet)."""
        if self.metrics is None:
            from rls.metrics import per_image_metrics

            values = per_image_metrics(sr, hr, y, self.D)
        else:
            values = self.metrics[name].update(sr, hr, y, self.D, latents, w_true)
        out = {k: v.detach().float() for k, v in values.items()}
        if "lpips_alex" in out:
            out["lpips"] = out.pop("lpips_alex")
        return {k: v.cpu() for k, v in out.items()}

    def on_test_epoch_end(self) -> None:
        """Set-level metrics per method (means, FID, KID), synced across ranks, logged."""
        if self.metrics is None:
            return
        for name, metrics in self.metrics.items():
            values = {k: float(v) for k, v in metrics.compute().items()}
            for key, value in values.items():
                self.log(f"test/{name}/{key}", value, sync_dist=True)  # equal on all ranks
            self.dataset_metrics[name] = {
                k: v for k, v in values.items() if k in ("fid", "kid_mean", "kid_std")
            }
            metrics.reset()
