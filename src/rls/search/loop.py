"""The shared search loop: every method's stages run through :func:`search`.

Per step of a stage: render the variables, compute the per-image loss terms ``[B]``, track
the best iterate per image (``torch.where``, no host sync), back-propagate the *sum* of the
per-image totals (so images never interact), step every optimiser with its scheduled
learning rate, then apply the stage's projection. With ``stage.score_final`` one extra
evaluation after the last step lets the final iterate compete for "best" and provides the
"last" output; without it (the authors' loops) only iterates scored before an update count.

Images whose loss turns non-finite are rerun alone from a seed derived from (seed,
attempt); after ``method.max_attempts`` runs they are marked ``failed`` and their start
image is returned: a NaN image is never returned.
"""

from __future__ import annotations

import fnmatch
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from rls.search.base import (
    Method,
    SearchContext,
    SearchResult,
    Stage,
    StageOutput,
    derive_seeds,
)
from rls.search.schedules import get_schedule

Callback = Callable[[int, str, dict[str, Tensor]], None]


class NormalizedGD(torch.optim.Optimizer):
    """p <- p - lr · g / ‖g‖, the norm taken per image (over all non-batch dims).

    Hand-written because torch has no normalised gradient descent; the per-image norm keeps
    images independent within a batch (robust-unsupervised restoration, method.md §5).
    """

    def __init__(self, params, lr: float, eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                norm = g.flatten(1).norm(dim=1).view(-1, *([1] * (g.dim() - 1)))
                p.sub_(group["lr"] * g / (norm + group["eps"]))


def _make_optimizer(kind: str, params: list[Tensor], lr: float, betas, weight_decay: float):
    if kind == "adam":
        # torch's fused Adam: the same update in one kernel per tensor group; on the 30.4M
        # per-image weight deltas of RLS+ it is ~10x faster than the default on CPU
        # (benchmarks/optimizer.py). Float tensors on CPU/CUDA only; others use the default.
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.Adam(
            params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused or None
        )
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if kind == "normalized_gd":
        return NormalizedGD(params, lr=lr)
    raise KeyError(f"unknown optimizer {kind!r}; known: adam, sgd, normalized_gd")


def _select_vars(patterns: list[str], names) -> list[str]:
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not chosen:
        raise KeyError(f"optimiser group {patterns} matches no variable of {sorted(names)}")
    return chosen


def _where_rows(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """Row-wise select: ``new[b]`` where ``mask[b]`` else ``old[b]``."""
    return torch.where(mask.view(-1, *([1] * (new.dim() - 1))), new, old)


@dataclass
class _StageRun:
    output: StageOutput
    history: dict[str, Tensor]  # term -> [steps, B]
    nonfinite: Tensor  # bool [B]
    start_image: Tensor
    start_latents: Tensor


def _run_stage_once(ctx: SearchContext, stage: Stage, callback, step_offset: int) -> _StageRun:
    start = stage.init(ctx)
    groups = [_select_vars(group.vars, start) for group in stage.optim]
    optimised = {n for names in groups for n in names}
    # variables no optimiser names are per-image constants (e.g. fixed noise maps): they are
    # still carried with the iterate (best copy, chosen start) but get no gradient
    leaves = {k: v.detach().clone().requires_grad_(k in optimised) for k, v in start.items()}
    optimizers = []
    for group, names in zip(stage.optim, groups):
        opt = _make_optimizer(
            group.optimizer, [leaves[n] for n in names], group.lr, group.betas, group.weight_decay
        )
        optimizers.append((opt, group.lr, get_schedule(group.schedule)))

    B = ctx.batch_size
    best_total = torch.full((B,), float("inf"), device=ctx.device)
    best_vars = best_image = best_latents = start_image = start_latents = None
    nonfinite = torch.zeros(B, dtype=torch.bool, device=ctx.device)
    history: dict[str, list[Tensor]] = defaultdict(list)

    last_scored = stage.steps if stage.score_final else stage.steps - 1
    for step in range(last_scored + 1):
        final = step == stage.steps
        with torch.set_grad_enabled(step != last_scored):
            rendered = stage.render(ctx, leaves)
            terms = stage.losses(ctx, leaves, rendered)
            total = torch.stack(list(terms.values())).sum(0)
        image = rendered.image.detach().clone()
        latents = rendered.latents.detach().clone()  # may alias a variable updated in place
        finite = torch.isfinite(total.detach()) & torch.isfinite(image).flatten(1).all(1)
        nonfinite |= ~finite
        if step == 0:
            start_image, start_latents = image, latents
        if not final:
            logged = {name: t.detach() for name, t in terms.items()}
            logged["total"] = total.detach()
            for name, t in logged.items():
                history[name].append(t)
            if callback is not None:
                callback(step_offset + step, stage.name, logged)

        if stage.select == "best" or step == last_scored:
            if stage.select == "best":
                better = finite & (total.detach() < best_total)
            else:
                better = torch.ones(B, dtype=torch.bool, device=ctx.device)
            if best_vars is None:
                best_vars = {k: v.detach().clone() for k, v in leaves.items()}
                best_image, best_latents = image, latents
                best_total = torch.where(better, total.detach(), best_total)
            else:
                best_vars = {
                    k: _where_rows(better, v.detach(), best_vars[k]) for k, v in leaves.items()
                }
                best_image = _where_rows(better, image, best_image)
                best_latents = _where_rows(better, latents, best_latents)
                best_total = torch.where(better, total.detach(), best_total)
        if step == last_scored:  # (an update after it could change no output)
            break

        for opt, _, _ in optimizers:
            opt.zero_grad(set_to_none=True)
        total.sum().backward()
        for opt, base_lr, schedule in optimizers:
            for g in opt.param_groups:
                g["lr"] = base_lr * schedule(step, stage.steps)
            opt.step()
        if stage.project is not None:
            with torch.no_grad():
                stage.project(ctx, leaves)

    output = StageOutput(best_vars, best_image, best_latents, best_total)
    hist = {k: torch.stack(v) for k, v in history.items()}
    return _StageRun(output, hist, nonfinite, start_image, start_latents)


def _repeat_rows(x, k: int):
    """Repeat every batch row ``k`` times (row b -> rows b*k .. b*k+k-1), recursively."""
    if isinstance(x, Tensor):
        return x.repeat_interleave(k, dim=0)
    if isinstance(x, StageOutput):
        return StageOutput(
            *(_repeat_rows(getattr(x, f), k) for f in StageOutput.__dataclass_fields__)
        )
    if isinstance(x, dict):
        return {key: _repeat_rows(v, k) for key, v in x.items()}
    return x


def _pick_rows(x, index: Tensor):
    if isinstance(x, Tensor):
        return x[index]
    if isinstance(x, StageOutput):
        return StageOutput(
            *(_pick_rows(getattr(x, f), index) for f in StageOutput.__dataclass_fields__)
        )
    if isinstance(x, dict):
        return {key: _pick_rows(v, index) for key, v in x.items()}
    return x


def _run_stage(ctx: SearchContext, stage: Stage, callback, step_offset: int) -> _StageRun:
    """Run a stage; with ``stage.starts = K > 1`` run K starts per image and keep the best."""
    K = stage.starts
    if K <= 1:
        return _run_stage_once(ctx, stage, callback, step_offset)
    B = ctx.batch_size
    start_seeds = torch.stack(
        [ctx.seeds] + [derive_seeds(ctx.seeds, f"start{k}") for k in range(1, K)], dim=1
    ).reshape(-1)
    wide = SearchContext(
        G=ctx.G,
        y=_repeat_rows(ctx.y, K),
        D=ctx.D,
        seeds=start_seeds,
        prior=ctx.prior,
        perceptual=ctx.perceptual,
        device=ctx.device,
        state=_repeat_rows(ctx.state, K),
        start_index=torch.arange(K).repeat(B),
        sample_index=_repeat_rows(ctx.sample_index, K),
    )
    run = _run_stage_once(wide, stage, None, step_offset)
    total = torch.where(run.nonfinite, torch.inf, run.output.total).view(B, K)
    pick = torch.arange(B, device=total.device) * K + total.argmin(1)
    history = {k: v[:, pick] for k, v in run.history.items()}
    if callback is not None:  # report the chosen start's curve
        for step in range(stage.steps):
            callback(step_offset + step, stage.name, {k: v[step] for k, v in history.items()})
    return _StageRun(
        output=_pick_rows(run.output, pick),
        history=history,
        nonfinite=run.nonfinite.view(B, K).all(1),
        start_image=run.start_image[pick],
        start_latents=run.start_latents[pick],
    )


@dataclass
class _MethodRun:
    images: Tensor  # [B, C, R, R] in [-1, 1]
    latents: Tensor
    history: dict[str, Tensor]
    nonfinite: Tensor
    start_image: Tensor
    start_latents: Tensor
    extras: dict = field(default_factory=dict)


def _run_method(method: Method, ctx: SearchContext, callback) -> _MethodRun:
    stages = method.build_stages(ctx)
    history: dict[str, Tensor] = {}
    totals, extras = [], {}
    nonfinite = torch.zeros(ctx.batch_size, dtype=torch.bool, device=ctx.device)
    offset = 0
    first = None
    for i, stage in enumerate(stages):
        run = _run_stage(ctx, stage, callback, offset)
        if first is None:
            first = run
        offset += stage.steps
        nonfinite |= run.nonfinite
        for term, values in run.history.items():
            history[f"{stage.name}/{term}"] = values
        totals.append(run.history["total"])
        ctx.state[stage.name] = run.output
        if stage.finish is not None:
            stage.finish(ctx, run.output.vars)
        if i < len(stages) - 1:  # intermediate results (e.g. the RLS anchor of RLS+)
            extras[f"{stage.name}_images"] = run.output.image
            extras[f"{stage.name}_latents"] = run.output.latents
    history["total"] = torch.cat(totals)
    return _MethodRun(
        images=run.output.image,
        latents=run.output.latents,
        history=history,
        nonfinite=nonfinite,
        start_image=first.start_image,
        start_latents=first.start_latents,
        extras=extras,
    )


@contextmanager
def _frozen(*modules: nn.Module | None):
    """Eval mode and no parameter gradients for the duration of a search; restored after."""
    saved = []
    for m in modules:
        if isinstance(m, nn.Module):
            saved.append((m, m.training, [(p, p.requires_grad) for p in m.parameters()]))
            m.eval()
            m.requires_grad_(False)
    try:
        yield
    finally:
        for m, training, flags in saved:
            m.train(training)
            for p, flag in flags:
                p.requires_grad_(flag)


def _merge_rows(target: _MethodRun, index: int, source: _MethodRun) -> None:
    """Write a single-image rerun into row ``index`` of a batch run."""
    target.images[index] = source.images[0]
    target.latents[index] = source.latents[0]
    for k, v in source.history.items():
        target.history[k][:, index] = v[:, 0]
    for k, v in source.extras.items():
        target.extras[k][index] = v[0]


def search(
    method: Method,
    G: nn.Module,
    y: Tensor,
    D: nn.Module,
    seeds,
    prior: nn.Module | None = None,
    perceptual: nn.Module | None = None,
    callback: Callback | None = None,
) -> SearchResult:
    """Restore the batch ``y`` ``[B, C, r, r]`` (in [0, 1]) with ``method``; one signature
    for every method. ``seeds`` (int64 ``[B]``, see :mod:`rls.seeding`) drive every random
    draw of each image, so the result of an image does not depend on its batch.
    ``callback(step, stage, losses)`` receives per-image ``[B]`` loss terms every step
    (step counted over all stages; not called for reruns, nor with ``num_samples > 1``).
    G, D, prior and perceptual are put in eval mode with frozen parameters for the search
    and restored after. Float32 convolutions give batch-size-dependent rounding (~1e-6)
    that a long non-convex search can amplify; the algorithm itself couples no images.
    """
    t0 = time.perf_counter()
    seeds = torch.as_tensor(seeds, dtype=torch.int64).cpu().reshape(-1)
    if seeds.numel() != y.shape[0]:
        raise ValueError(f"search: {seeds.numel()} seeds for a batch of {y.shape[0]} images")
    S = max(1, int(method.num_samples))
    with torch.inference_mode(False), torch.enable_grad(), _frozen(G, D, prior, perceptual):
        y = y.detach().clone()  # a normal tensor even if made under inference mode
        samples = torch.arange(S).repeat(y.shape[0])
        if S > 1:  # sample 0 uses the image seed, sample k a seed derived from it
            seeds = torch.stack(
                [seeds] + [derive_seeds(seeds, f"sample{k}") for k in range(1, S)], dim=1
            ).reshape(-1)
            y = y.repeat_interleave(S, dim=0)

        def run(rows, seed_rows, cb):
            ctx = SearchContext(
                G, y[rows], D, seed_rows, prior, perceptual, device=y.device,
                sample_index=samples[rows],
            )  # fmt: skip
            return _run_method(method, ctx, cb)

        out = run(slice(None), seeds, callback if S == 1 else None)
        status = ["ok"] * y.shape[0]
        failed = out.nonfinite.tolist()
        for i, bad in enumerate(failed):
            for attempt in range(1, method.max_attempts):
                if not bad:
                    break
                retry_seeds = derive_seeds(seeds[i : i + 1], f"attempt{attempt}")
                retry = run(slice(i, i + 1), retry_seeds, None)
                if not bool(retry.nonfinite[0]):
                    _merge_rows(out, i, retry)
                    status[i], bad = "restarted", False
            if bad:  # never return a NaN image: fall back to the (finite) start image
                start = out.start_image[i]
                out.images[i] = torch.where(
                    torch.isfinite(start).all(), start, torch.zeros_like(start)
                )
                out.latents[i] = torch.nan_to_num(out.start_latents[i])
                status[i] = "failed"

    images = ((out.images + 1) / 2).clamp(0, 1)
    latents, history = out.latents, out.history
    extras = {
        k: ((v + 1) / 2).clamp(0, 1) if k.endswith("_images") else v for k, v in out.extras.items()
    }
    if S > 1:
        B = y.shape[0] // S
        first = torch.arange(B, device=images.device) * S
        extras = {k: v[first] for k, v in extras.items()}
        extras["samples"] = images.view(B, S, *images.shape[1:])
        extras["sample_latents"] = latents.view(B, S, *latents.shape[1:])
        extras["sample_status"] = [status[b * S : (b + 1) * S] for b in range(B)]
        images, latents = images[first], latents[first]
        history = {k: v[:, first] for k, v in history.items()}
        status = status[::S]
    return SearchResult(
        images=images.detach(),
        latents=latents.detach(),
        history=history,
        status=status,
        steps=history["total"].shape[0],
        seconds=time.perf_counter() - t0,
        extras=extras,
        notes=method.notes,
    )
