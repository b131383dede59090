"""RLS: regularised latent search in W+ (or W) under a flow prior (method.md §3).

    L_RLS = 10·mean|D(x) − y| + λ_logp·(1/L)Σ −log p_F + λ_pn·(1/L)Σ(‖f(w_i)‖ − √w_dim)²
            + λ_cross·mean_{i<j}‖w_i − w_j‖

Start: w̄ repeated L times (extra starts / extra samples: w̄ + 0.2·(M(z) − w̄)); noise maps
fixed N(0, 1) per image (seeded); generator frozen; Adam lr 0.5, 500 steps,
linear1cycledrop; output = the iterate with the lowest total loss (the anchor w_B of RLS+).
Defaults are the authors' (``sr_boost.py`` at f8df15d); our variants are switches:
- ``start``: ``sample_mean`` (authors): w̄ = the mean of ``start_samples`` mapped z (1e6,
  seeded, computed once per generator and cached); ``w_avg``: the checkpoint's tracked
  ``mapping.w_avg``; ``flow_centre`` (ours): f⁻¹(0), the code the flow maps to the centre
  of its Gaussian, inside the flow's support by construction (w̄ can lie far off the
  support of a flow with a nonlinear input map: docs/faithfulness.md).
- ``score_final``: ``False`` (authors): the best iterate among those scored before each
  update; ``True``: the iterate after the last update competes too.
"""

from __future__ import annotations

import copy
import hashlib

import torch
from torch import Tensor, nn

from rls.search.base import Method, OptimGroup, Rendered, SearchContext, Stage, register
from rls.search.losses import cross_distance, flow_nll, flow_nll_and_pn, flow_pn, lr_l1, to_unit

SPACES = ("w+", "w")
STARTS = ("sample_mean", "w_avg", "flow_centre")


def noise_names(G) -> list[str]:
    return [f"noise.{i}" for i in range(len(G.synthesis.noise_shapes()))]


def fixed_noise(ctx: SearchContext) -> dict[str, Tensor]:
    """Per-image N(0, 1) noise maps, one per noise input of the generator, from the seeds."""
    return {
        name: ctx.randn((1, h, w), salt=f"rls/{name}")
        for name, (h, w) in zip(noise_names(ctx.G), ctx.G.synthesis.noise_shapes())
    }


_SAMPLE_MEANS: dict[tuple, Tensor] = {}


def _mapping_fingerprint(G: nn.Module) -> str:
    """A digest of the mapping network's weights: equal networks share one cached mean."""
    digest = hashlib.sha256()
    for name, t in sorted(G.mapping.state_dict().items()):
        digest.update(name.encode())
        digest.update(t.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def sample_mean_w(G: nn.Module, n: int = 1_000_000, seed: int = 0, batch_size: int = 65536):
    """``[w_dim]``: the mean of ``n`` mapped z ~ N(0, I), z drawn on the CPU from ``seed``, as
    the authors compute w̄ (``sr_boost.py``: 1e6 samples, float32). Batched and accumulated
    in float64 (never all n codes in memory); cached per (mapping weights, n, seed, device)
    for the life of the process, so a run computes it once whatever its dtype or batches."""
    if n < 1:
        raise ValueError(f"rls: start_samples must be >= 1, got {n}")
    w_avg = G.mapping.w_avg
    key = (_mapping_fingerprint(G), int(n), int(seed), str(w_avg.device))
    if key not in _SAMPLE_MEANS:
        mapping = G.mapping
        if w_avg.dtype != torch.float32:  # the authors' precision, and one cache entry
            mapping = copy.deepcopy(mapping).float()
        gen = torch.Generator().manual_seed(int(seed))
        total = torch.zeros(G.w_dim, dtype=torch.float64, device=w_avg.device)
        for done in range(0, int(n), batch_size):
            z = torch.randn(min(batch_size, n - done), G.z_dim, generator=gen)
            w = mapping(z.to(w_avg.device), None)
            total += (w[:, 0] if w.ndim == 3 else w).to(torch.float64).sum(0)
        _SAMPLE_MEANS[key] = total / n
    return _SAMPLE_MEANS[key].to(w_avg.dtype)


def start_centre(
    G: nn.Module, start: str, samples: int, seed: int, prior: nn.Module | None = None
) -> Tensor:
    """``[w_dim]``: the code RLS starts from (``start``: see the module docstring)."""
    if start == "w_avg":
        return G.mapping.w_avg
    if start == "flow_centre":
        if not hasattr(prior, "from_gaussian"):
            raise ValueError("rls: start=flow_centre needs a flow prior (a WFlow): f⁻¹(0)")
        with torch.no_grad():
            zero = torch.zeros(1, G.w_dim, device=G.mapping.w_avg.device)
            return prior.from_gaussian(zero.to(prior.mu))[0].to(G.mapping.w_avg)
    return sample_mean_w(G, samples, seed)


def start_codes(ctx: SearchContext, spread: float, centre: Tensor | None = None) -> Tensor:
    """``[B, w_dim]``: w̄ for the canonical start, else w̄ + spread·(M(z) − w̄), z seeded;
    w̄ is ``centre`` (default: the generator's ``w_avg``)."""
    G = ctx.G
    centre = G.mapping.w_avg if centre is None else centre
    w_avg = centre.to(ctx.device).expand(ctx.batch_size, -1)
    z = ctx.randn((G.z_dim,), salt="rls/start_z")
    w_random = G.mapping(z, None)[:, 0]
    w = w_avg + spread * (w_random - w_avg)
    return torch_where_rows(ctx.canonical, w_avg, w)


def torch_where_rows(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return a.where(mask.view(-1, *([1] * (a.dim() - 1))), b)


def render_wplus(ctx: SearchContext, v: dict) -> Rendered:
    """Synthesis from ``v["w"]`` (``[B, L, w_dim]``, or ``[B, w_dim]`` broadcast to all rows)
    with the noise maps ``v["noise.i"]``."""
    G = ctx.G
    w = v["w"]
    ws = w if w.dim() == 3 else w.unsqueeze(1).expand(-1, G.num_ws, -1)
    noise = [v[name] for name in noise_names(G)]
    return Rendered(image=G.synthesis(ws, noise=noise), latents=ws)


def rls_stage(
    name: str = "rls",
    steps: int = 500,
    lr: float = 0.5,
    schedule: str = "linear1cycledrop",
    l1_weight: float = 10.0,
    lambda_logp: float = 0.002,
    lambda_pn: float = 0.004,
    lambda_cross: float = 0.5,
    space: str = "w+",
    num_starts: int = 1,
    start_spread: float = 0.2,
    start: str = "sample_mean",
    start_samples: int = 1_000_000,
    start_seed: int = 0,
    score_final: bool = False,
) -> Stage:
    """The RLS stage (also stage 1 of RLS+). All λ = 0 gives plain W+ (or W) search."""
    if space not in SPACES:
        raise ValueError(f"rls: space must be one of {SPACES}, got {space!r}")
    if start not in STARTS:
        raise ValueError(f"rls: start must be one of {STARTS}, got {start!r}")
    if steps < 1:
        raise ValueError(f"rls: steps must be >= 1, got {steps}")

    def init(ctx: SearchContext) -> dict[str, Tensor]:
        if ctx.prior is None and (lambda_logp or lambda_pn):
            raise ValueError(
                "rls: the flow terms (lambda_logp, lambda_pn) need a W prior: pass prior= "
                "to search() (a WFlow trained by train_flow.py), or set both lambdas to 0"
            )
        centre = start_centre(ctx.G, start, start_samples, start_seed, ctx.prior)
        w = start_codes(ctx, start_spread, centre)
        if space == "w+":
            w = w.unsqueeze(1).repeat(1, ctx.G.num_ws, 1)
        return {"w": w, **fixed_noise(ctx)}

    def losses(ctx: SearchContext, v: dict, r: Rendered) -> dict[str, Tensor]:
        terms = {"l1": l1_weight * lr_l1(ctx.D, to_unit(r.image), ctx.y)}
        # in W every row is the same code: the row means reduce to one row
        rows = v["w"] if space == "w+" else v["w"].unsqueeze(1)
        if lambda_logp and lambda_pn:
            nll, pn = flow_nll_and_pn(ctx.prior, rows)
            terms["logp"], terms["pn"] = lambda_logp * nll, lambda_pn * pn
        elif lambda_logp:
            terms["logp"] = lambda_logp * flow_nll(ctx.prior, rows)
        elif lambda_pn:
            terms["pn"] = lambda_pn * flow_pn(ctx.prior, rows)
        if lambda_cross and space == "w+":
            terms["cross"] = lambda_cross * cross_distance(rows)
        return terms

    return Stage(
        name=name,
        steps=steps,
        init=init,
        render=render_wplus,
        losses=losses,
        optim=[OptimGroup(vars=["w"], lr=lr, schedule=schedule)],
        select="best",
        score_final=bool(score_final),
        starts=num_starts,
    )


@register("rls")
def build_rls(
    name: str = "rls",
    num_samples: int = 1,
    max_attempts: int = 3,
    **stage_cfg,
) -> Method:
    """RLS in W+ (method.md §3); ``configs/method/rls.yaml`` holds the defaults."""
    return Method(
        name=name,
        stages=[rls_stage(name="rls", **stage_cfg)],
        num_samples=num_samples,
        max_attempts=max_attempts,
        config=dict(stage_cfg),
    )


@register("rls_w")
def build_rls_w(name: str = "rls_w", **cfg) -> Method:
    """RLS in W: one w_dim code broadcast to every style input; no cross term."""
    cfg.setdefault("space", "w")
    cfg.setdefault("lambda_cross", 0.0)
    return build_rls(name=name, **cfg)
