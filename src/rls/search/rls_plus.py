"""RLS+: fidelity fine-tuning around the RLS anchor (method.md §4).

Stage 1 is RLS (its best iterate is the anchor w_B). Stage 2 optimises jointly, per image:
the W+ code (Adam lr 0.1, linear1cycledrop), the 9 lowest-resolution noise maps (same
optimiser) and the generator weights θ (separate Adam, lr 1e-4, constant), on
10·mean|D(x) − y| only. Steps by scale: ×8: 80, ×16: 70, ×32: 30, ×64: 20 (nearest in
log-scale otherwise).

The defaults follow the authors' ``sr_boost_ada.py`` (mgheisar/RLS_PLUS at f8df15d); our
variants are switches (docs/faithfulness.md lists each with its measured effect):
- ``noise_init``: ``fresh`` (authors): every noise map drawn N(0, 1) anew, seeded per image;
  ``anchor``: start from the anchor's maps, so stage 2 starts exactly at the anchor image.
- ``renormalize``: ``all`` (authors): every noise map, the fixed fine ones too, is set to
  zero mean / unit std after every step; ``tuned``: only the optimised maps.
- ``output``: ``before_last_update`` (authors): the image rendered at the last step, before
  its update; ``after_last_update``: one more render after the last update.

The generator is never modified: θ = θ0 + Δθ_b with a per-image delta Δθ_b, rendered for
the whole batch in one pass by ``torch.func.vmap`` over ``functional_call`` (the authors
reload the checkpoint per image and tune it in place: the same per-image optimisation).

``constraint`` (paper vs code, method.md §4):
- ``latent`` (the authors' code, default): each row w_i − w_B,i is projected onto the ℓ1
  ball of radius r·√w_dim after every step.
- ``weights`` (the paper's Figure 1): each weight tensor's delta Δθ_t is projected onto the
  ℓ1 ball of radius r · weight_radius · ‖θ0_t‖₁, i.e. a relative ℓ1 budget per tensor
  (``weight_radius`` = 0.01 by default: 1% of the tensor's ℓ1 mass at r = 1). A tensor
  that is all zeros in θ0 therefore stays fixed under this constraint.
- ``both``: both projections.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.func import functional_call, vmap

from rls.search.base import Method, OptimGroup, Rendered, SearchContext, Stage, register
from rls.search.losses import lr_l1, to_unit
from rls.search.projections import project_l1_ball
from rls.search.projections import renormalize as standardize
from rls.search.rls import noise_names, rls_stage
from rls.speed import compiled_like

STEPS_BY_SCALE = {8: 80, 16: 70, 32: 30, 64: 20}
CONSTRAINTS = ("latent", "weights", "both")
NOISE_INITS = ("fresh", "anchor")
RENORMALIZE = ("all", "tuned")
OUTPUTS = ("before_last_update", "after_last_update")
DELTA = "dtheta."


def steps_for_scale(scale: int, table: dict[int, int] = STEPS_BY_SCALE) -> int:
    """The authors' step count for ``scale``; other scales take the nearest (in log2)."""
    table = {int(k): int(v) for k, v in table.items()}
    nearest = min(table, key=lambda s: (abs(math.log2(s) - math.log2(scale)), s))
    return table[nearest]


def render_with_deltas(ctx: SearchContext, v: dict, tune_weights: bool) -> Rendered:
    """Synthesis of every image with its own weights θ0 + Δθ_b (one vmapped pass)."""
    S = ctx.G.synthesis
    ws = v["w"]
    noise = [v[name] for name in noise_names(ctx.G)]
    if not tune_weights:
        return Rendered(image=S(ws, noise=noise), latents=ws)
    theta0 = dict(S.named_parameters())
    deltas = {name: v[DELTA + name] for name in theta0}
    # compiled as a whole when the generator is (rls.speed): a compiled forward called
    # under vmap runs eagerly, the vmap has to be inside the compiled function
    render = compiled_like(S, _render_per_image)
    return Rendered(image=render(S, theta0, deltas, ws, noise), latents=ws)


def _render_per_image(S, theta0: dict, deltas: dict, ws: Tensor, noise: list) -> Tensor:
    def one(delta, w, noise_b):
        params = {name: theta0[name] + delta[name] for name in theta0}
        noise_1 = [n.unsqueeze(0) for n in noise_b]
        return functional_call(S, params, (w.unsqueeze(0),), {"noise": noise_1}).squeeze(0)

    return vmap(one)(deltas, ws, noise)


def rls_plus_stage(
    ctx: SearchContext,
    anchor_stage: str = "rls",
    steps: int | None = None,
    steps_by_scale: dict | None = None,
    lr: float = 0.1,
    schedule: str = "linear1cycledrop",
    lr_weights: float = 1e-4,
    weights_schedule: str = "constant",
    l1_weight: float = 10.0,
    radius: float = 1.0,
    constraint: str = "latent",
    weight_radius: float = 0.01,
    num_noise: int = 9,
    noise_init: str = "fresh",
    renormalize: str = "all",
    output: str = "before_last_update",
) -> Stage:
    """The fine-tuning stage; reads the anchor from ``ctx.state[anchor_stage]``."""
    check_choices(
        constraint=constraint, noise_init=noise_init, renormalize=renormalize, output=output
    )
    if steps is None:
        scale = getattr(ctx.D, "scale", None)
        if scale is None:
            raise ValueError("rls_plus: set steps, or use a degradation with a .scale attribute")
        steps = steps_for_scale(int(scale), steps_by_scale or STEPS_BY_SCALE)
    tune_weights = lr_weights > 0
    names = noise_names(ctx.G)
    tuned_noise = names[:num_noise]  # coarse to fine: the lowest resolutions first
    renormalized = names if renormalize == "all" else tuned_noise
    theta0 = dict(ctx.G.synthesis.named_parameters())
    w_radius = radius * math.sqrt(ctx.G.w_dim)

    def init(ctx: SearchContext) -> dict[str, Tensor]:
        anchor = ctx.state[anchor_stage]
        if noise_init == "fresh":
            noise = {
                n: ctx.randn((1, h, w), salt=f"rls_plus/{n}")
                for n, (h, w) in zip(names, ctx.G.synthesis.noise_shapes())
            }
        else:
            noise = {n: anchor.vars[n].clone() for n in names}
        v = {"w": anchor.latents.clone(), **noise}
        if tune_weights:
            B = ctx.batch_size
            for name, p in theta0.items():
                v[DELTA + name] = torch.zeros(B, *p.shape, dtype=p.dtype, device=p.device)
        return v

    def losses(ctx: SearchContext, v: dict, r: Rendered) -> dict[str, Tensor]:
        return {"l1": l1_weight * lr_l1(ctx.D, to_unit(r.image), ctx.y)}

    def project(ctx: SearchContext, v: dict) -> None:
        for n in renormalized:
            v[n].copy_(standardize(v[n]))
        if constraint in ("latent", "both"):
            w_b = ctx.state[anchor_stage].latents
            v["w"].copy_(w_b + project_l1_ball(v["w"] - w_b, w_radius))
        if constraint in ("weights", "both") and tune_weights:
            for name, p in theta0.items():
                d = v[DELTA + name]
                budget = radius * weight_radius * p.abs().sum()
                d.copy_(project_l1_ball(d, budget, ndim=p.dim()))

    optim = [OptimGroup(vars=["w", *tuned_noise], lr=lr, schedule=schedule)]
    if tune_weights:
        optim.append(OptimGroup(vars=[DELTA + "*"], lr=lr_weights, schedule=weights_schedule))
    return Stage(
        name="rls_plus",
        steps=steps,
        init=init,
        render=lambda ctx, v: render_with_deltas(ctx, v, tune_weights),
        losses=losses,
        optim=optim,
        project=project,
        select="last",
        score_final=output == "after_last_update",
    )


def check_choices(**chosen: str) -> None:
    """A clear error for a switch set to an unknown value (the config key and the choices)."""
    allowed = {
        "constraint": CONSTRAINTS,
        "noise_init": NOISE_INITS,
        "renormalize": RENORMALIZE,
        "output": OUTPUTS,
    }
    for key, value in chosen.items():
        if value not in allowed[key]:
            raise ValueError(f"rls_plus: {key} must be one of {allowed[key]}, got {value!r}")


@register("rls_plus")
def build_rls_plus(
    name: str = "rls_plus",
    anchor: dict | None = None,
    num_samples: int = 1,
    max_attempts: int = 3,
    **stage_cfg,
) -> Method:
    """RLS (``anchor``: its config) then RLS+ fine-tuning. The anchor result is returned
    too, as ``extras["rls_images"]`` / ``extras["rls_latents"]``."""
    anchor = dict(anchor or {})
    anchor.pop("name", None)
    stage_cfg.pop("anchor_stage", None)
    check_choices(
        **{
            k: stage_cfg[k]
            for k in ("constraint", "noise_init", "renormalize", "output")
            if k in stage_cfg
        }
    )

    def stages(ctx: SearchContext) -> list[Stage]:
        return [rls_stage(name="rls", **anchor), rls_plus_stage(ctx, "rls", **stage_cfg)]

    return Method(
        name=name,
        stages=stages,
        num_samples=num_samples,
        max_attempts=max_attempts,
        config={"anchor": anchor, **stage_cfg},
    )
