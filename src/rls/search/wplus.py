"""Plain W+ search, the paper's w_A (Figure 1; method.md §5): RLS without its regularisers.

``10·mean|D(x) − y|`` only, from w̄ repeated L times, with RLS's fixed seeded noise maps,
optimiser (Adam 0.5), schedule (linear1cycledrop), steps (500) and best-iterate output: the
RLS stage itself with λ_logp = λ_pn = λ_cross = 0, so the regularisers are the ONLY difference
between this method and RLS.
"""

from __future__ import annotations

import dataclasses

from rls.search.base import Method, Stage, register
from rls.search.peer_losses import method_degradation
from rls.search.rls import rls_stage


def _with_degradation(stage: Stage, downsampler: str) -> Stage:
    """The stage with its losses evaluated under the method's own downsampler (if asked)."""
    if downsampler == "shared":
        return stage
    if downsampler != "own":
        raise ValueError(f"wplus: downsampler must be 'shared' or 'own', got {downsampler!r}")
    inner = stage.losses

    def losses(ctx, v, r):
        own = method_degradation(ctx.D, downsampler, "wplus").to(ctx.device)
        return inner(dataclasses.replace(ctx, D=own), v, r)

    return dataclasses.replace(stage, losses=losses)


@register("wplus")
def build_wplus(
    name: str = "wplus",
    steps: int = 500,  # as RLS
    lr: float = 0.5,  # as RLS
    schedule: str = "linear1cycledrop",  # as RLS
    l1_weight: float = 10.0,  # as RLS
    space: str = "w+",  # "w" gives plain W search
    num_starts: int = 1,
    start: str = "sample_mean",  # as RLS
    start_samples: int = 1_000_000,  # as RLS
    score_final: bool = False,  # as RLS
    downsampler: str = "shared",  # "shared" | "own" (the paper's PULSE bicubic)
    **unused,
) -> Method:
    stage = rls_stage(
        name="wplus",
        steps=steps,
        lr=lr,
        schedule=schedule,
        l1_weight=l1_weight,
        lambda_logp=0.0,
        lambda_pn=0.0,
        lambda_cross=0.0,
        space=space,
        num_starts=num_starts,
        start=start,
        start_samples=start_samples,
        score_final=score_final,
    )
    notes = "" if downsampler == "shared" else "wplus: own downsampler (PULSE bicubic)"
    return Method(
        name=name,
        stages=[_with_degradation(stage, downsampler)],
        notes=notes,
        config=dict(steps=steps, lr=lr, space=space),
    )
