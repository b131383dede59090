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

from rls.metrics import GROUND_TRUTH
from rls.search import Method, SearchResult
from rls.search.losses import flow_nll
from rls.search.memory import search_fitting
from rls.seeding import seeds_for

OBSERVE_SALT = "observe"  # the corruption noise of image i comes from seed_from_id(i, this)
SEARCH_SALT = "search"  # starts, noise maps and restarts of image i


def anchor_sources(methods: Mapping[str, Method]) -> dict[str, str]:
    """``{rls_name: rls_plus_name}`` where an RLS+ method's anchor stage is exactly an RLS
    method of the run (same config, one sample): its anchor is then that method's result,
    so it need not be searched twice (method.md §4: RLS+ starts from the RLS solution)."""
    found = {}
    for target, m in methods.items():
        for source, other in methods.items():
            anchor = other.config.get("anchor") if isinstance(other.config, dict) else None
            if (
                target != source
                and target not in found
                and anchor is not None
                and dict(anchor) == dict(m.config)
                and m.num_samples == other.num_samples == 1
            ):
                found[target] = source
    return found


def anchor_differences(methods: Mapping[str, Method]) -> dict[str, tuple[str, dict]]:
    """``{rls_plus_name: (rls_name, {key: (anchor value, RLS value)})}`` for each RLS+
    method whose anchor is *not* an RLS method of the run although one with the same
    recipe keys is there (e.g. ``method.rls.steps=30`` changed RLS but not the anchor):
    the two then differ, and :func:`anchor_sources` cannot reuse one for the other."""
    matched = anchor_sources(methods)
    out = {}
    for target, m in methods.items():
        anchor = m.config.get("anchor") if isinstance(m.config, dict) else None
        if not anchor or target in matched.values():
            continue
        for source, other in methods.items():
            config = other.config if isinstance(other.config, dict) else {}
            if source == target or source in matched or "anchor" in config or not config:
                continue
            if set(config) == set(anchor):
                diff = {k: (anchor[k], config[k]) for k in anchor if anchor[k] != config[k]}
                out[target] = (source, diff)
                break
    return out


def stage_result(
    result: SearchResult, stage: str, rows: list[int], notes: str = ""
) -> SearchResult:
    """The intermediate ``stage`` of a multi-stage search as a result of its own (rows
    ``rows``): images/latents from its extras, its loss curves, its share of the time."""
    history = {k: v[:, rows] for k, v in result.history.items() if k.startswith(f"{stage}/")}
    history["total"] = history[f"{stage}/total"]
    steps = history["total"].shape[0]
    return SearchResult(
        images=result.extras[f"{stage}_images"][rows],
        latents=result.extras[f"{stage}_latents"][rows],
        history=history,
        status=[result.status[r] for r in rows],
        steps=steps,
        seconds=result.seconds * steps / max(result.steps, 1) * len(rows) / len(result.status),
        notes=notes,
    )


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
        anchor_from: ``{method: source}``: take ``method``'s results from the ``rls`` stage
            of ``source`` instead of searching again (RLS from RLS+'s anchor; only valid
            when the anchor's config equals the method's: :func:`anchor_sources`).
        split_batches: a batch that runs out of memory is searched in halves (then
            smaller) instead of failing with ``BatchTooLargeError`` (``data.batch_size=auto``);
            images never interact, so per-image results are the same.

    ``progress`` (set by a progress bar, e.g. ``callbacks.progress.RunProgressBar``): an
    object with ``search_start(method, image_ids)``, ``search_step(step, stage, losses)``
    (the search loop's per-step callback: ``[B]`` loss tensors, no sync made for it) and
    ``search_end(method, steps)``; None: no reporting.
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
        anchor_from: Mapping[str, str] | None = None,
        split_batches: bool = False,
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
        self.anchor_from = dict(anchor_from or {})
        self.split_batches = split_batches
        self._chunks: dict[str, int] = {}  # per method: the chunk size that fitted
        for target, source in self.anchor_from.items():
            if target not in self.methods or source not in self.methods:
                raise ValueError(f"anchor_from: {target!r} <- {source!r}: both must be methods")
        self.baselines = ["bicubic"] if bicubic_baseline else []
        # NIQE of the HR images themselves (no reference needed): the ground truth's row,
        # when the generator's images are large enough for it (NIQE: 96² patches)
        first = next(iter(self.metrics.values())) if self.metrics else None
        self.niqe = getattr(first, "niqe", None)
        side = getattr(generator, "img_resolution", None)
        min_side = getattr(self.niqe, "min_size", 1)
        if self.niqe is not None and (side is None or side >= min_side):
            self.baselines.append(GROUND_TRUTH)
        self.methods_and_baselines = [*self.baselines, *self.methods]
        self.dataset_metrics: dict[str, dict[str, float]] = {}
        self._computed: dict[str, int] = {}  # images measured per method in this run
        self.progress = None
        self._earlier: dict[str, int] = {}  # ... and read back from an earlier invocation
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

        if "bicubic" in self.baselines and pending["bicubic"]:
            rows += self._bicubic(ids, pending["bicubic"], y, hr, images)
        if GROUND_TRUTH in self.baselines and pending[GROUND_TRUTH] and hr is not None:
            rows += self._ground_truth(ids, pending[GROUND_TRUTH], hr)

        derived = {  # methods read off another's intermediate stage (same images only)
            name: source
            for name, source in self.anchor_from.items()
            if pending[name] and set(pending[name]) <= set(pending[source])
        }
        out = (ids, y, hr, w_true, rows, images, histories)
        for name, method in self.methods.items():
            index = pending[name]
            if not index or name in derived:
                continue
            sel = torch.tensor(index, device=y.device)
            progress = self.progress
            if progress is not None:
                progress.search_start(name, [ids[i] for i in index])
            result, chunk = search_fitting(
                method, self.G, y[sel], self.D, seeds[index], self.prior, self.perceptual,
                split=self.split_batches, chunk=self._chunks.get(name),
                callback=progress.search_step if progress is not None else None,
            )  # fmt: skip
            if progress is not None:
                progress.search_end(name, result.steps)
            if chunk < len(index) and chunk != self._chunks.get(name):
                print(
                    f"[search] {name}: a batch of {len(index)} images did not fit in memory;"
                    f" running chunks of {chunk} (set data.batch_size={chunk} next time)"
                )
            self._chunks[name] = chunk
            self._emit(name, index, result, *out)
            for target in (t for t, source in derived.items() if source == name):
                where = [index.index(i) for i in pending[target]]
                notes = "; ".join(filter(None, [self.methods[target].notes, f"= {name}'s anchor"]))
                anchor = stage_result(result, "rls", where, notes)
                self._emit(target, pending[target], anchor, *out)
        return {"rows": rows, "images": images, "histories": histories}

    def _emit(self, name, index, result, ids, y, hr, w_true, rows, images, histories) -> None:
        """Measure one method's solutions for images ``index`` of the batch; add rows,
        images and loss curves to the step's outputs."""
        sel = torch.tensor(index, device=y.device)
        sr = result.images
        hr_sel = hr[sel] if hr is not None else None
        w_sel = w_true[sel] if w_true is not None else None
        measured = self._measure(name, sr, hr_sel, y[sel], result.latents, w_sel)
        self._computed[name] = self._computed.get(name, 0) + len(index)
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

    def _ground_truth(self, ids, index, hr) -> list[dict]:
        """Rows of the HR images' own no-reference scores (NIQE): the reference line."""
        from rls.metrics import niqe_scores

        scores = niqe_scores(self.niqe, hr[torch.tensor(index, device=hr.device)].float())
        return [
            self._row(ids[i], GROUND_TRUTH, niqe=scores[j].cpu(), steps=0, status="ok")
            for j, i in enumerate(index)
        ]

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

    def add_earlier_images(self, name: str, sr: Tensor, hr: Tensor) -> None:
        """Count images ``name`` restored in an earlier invocation of this run (read back
        from its files) into its set-level metrics, so FID/KID cover the whole run."""
        self.metrics[name].update_set_level(sr.to(self.device), hr.to(self.device))
        self._earlier[name] = self._earlier.get(name, 0) + sr.shape[0]

    def images_measured(self, name: str) -> int:
        """Images ``name`` restored in this invocation, over all ranks (a collective call)."""
        count = torch.tensor(self._computed.get(name, 0), device=self.device)
        return int(self.all_gather(count).sum())

    def on_test_epoch_end(self) -> None:
        """Set-level metrics per method (FID, KID; synced across ranks) into
        ``dataset_metrics``. Per-image means are not taken here: the results writer
        aggregates every row of the run, including those of earlier invocations. A method
        with nothing measured in this invocation is left out (its earlier values stand)."""
        if self.metrics is None:
            return
        for name, metrics in self.metrics.items():
            if self.images_measured(name) == 0:
                continue
            values = {k: float(v) for k, v in metrics.compute().items()}
            chosen = {k: v for k, v in values.items() if k in ("fid", "kid_mean", "kid_std")}
            if chosen:
                count = self._computed.get(name, 0) + self._earlier.get(name, 0)
                count = torch.tensor(count, device=self.device)
                chosen["set_metrics_images"] = int(self.all_gather(count).sum())
            self.dataset_metrics[name] = chosen
            metrics.reset()
