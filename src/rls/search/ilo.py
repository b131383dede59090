"""Intermediate Layer Optimization (Daras et al. 2021, giannisdaras/ilo) in the shared engine
(method.md §5).

Rounds over the synthesis blocks (steps 50/50/25/25). Round k optimises the Gaussianised
latent z (``w = LeakyReLU_0.2(σ⊙z + μ)``, the diagonal fit of method.md §2), the noise maps
with index < 5 + 2k, and, for k ≥ 1, the feature map entering block k, with blocks < k no
longer run. Loss ``MSE(D(x), y) + LPIPS(D(x), y)`` (+ ``0.01·GEOCROSS(z)`` in round 0), Adam
0.1 with ILO's cosine ramp restarted each round; after every step z's rows and the noise maps
are rescaled to their norms at the round's start (ILO's spherical projection), then
(optionally) the latent, noises and feature map are projected onto ℓ1 balls around the
previous round's solution. Each round continues from the previous round's last iterate; the
last round returns its best iterate.

One deliberate difference: ILO's code restarts the RGB skip sum at block k, dropping the
coarse blocks' contributions to the image; here the skip image of blocks < k is carried
(fixed) with the feature map, so a round starts exactly from the image the previous ended on.
Generators with fewer blocks get at most ``len(blocks) - 1`` rounds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rls.search.base import Method, OptimGroup, Rendered, SearchContext, Stage, register
from rls.search.peer_losses import (
    GaussianFitCache,
    gaussianised_to_w,
    geocross,
    method_degradation,
    noise_maps,
    resolve_perceptual,
    unit,
)
from rls.search.projections import project_l1_ball, project_sphere


def _per_round(values: Sequence[float], k: int) -> float:
    """ILO lists one value per round; rounds past the list reuse its last entry."""
    return float(values[min(k, len(values) - 1)])


def _l1_around(t: torch.Tensor, anchor: torch.Tensor, radius: float) -> torch.Tensor:
    """``anchor + P(t − anchor)`` with P the ℓ1-ball projection of each image's whole tensor."""
    return anchor + project_l1_ball(t - anchor, radius, ndim=t.dim() - 1)


@register("ilo")
def build_ilo(
    name: str = "ilo",
    steps: Sequence[int] = (50, 50, 25, 25),  # one round per entry
    lr: Sequence[float] = (0.1,),  # per round
    schedule: str = "cosine",  # ILO get_lr: 5% warm-up, cosine ramp-down over 75%
    mse_weight: float = 1.0,
    lpips_weight: float = 1.0,
    geocross_weight: float = 0.01,  # round 0 only
    base_noise: int = 5,  # round k optimises noises with index < base_noise + 2k
    sphere_project: bool = True,  # ILO config "project"
    project_latent: bool = False,  # ILO do_project_latent
    project_noises: bool = False,  # ILO do_project_noises
    project_features: bool = False,  # ILO do_project_gen_out
    radius_latent: Sequence[float] = (100.0, 1000.0, 6000.0),
    radius_noises: Sequence[float] = (1000.0, 1000.0, 6000.0),
    radius_features: Sequence[float] = (1000.0, 1000.0, 6000.0),
    perceptual="lpips-vgg",  # "lpips-vgg" | "off" | a module net(a, b) -> [B]
    perceptual_weights: str | None = None,
    allow_download: bool | None = None,
    fit_samples: int = 1_000_000,
    fit_seed: int = 0,
    downsampler: str = "shared",  # "shared" | "own" (PULSE bicubic)
    **unused,
) -> Method:
    net, note = resolve_perceptual(perceptual, name, perceptual_weights, allow_download)
    fit = GaussianFitCache(fit_samples, fit_seed)
    steps = [int(s) for s in steps]

    def stages(ctx: SearchContext) -> list[Stage]:
        G = ctx.G
        prior = fit(G)
        D = method_degradation(ctx.D, downsampler, "ilo").to(ctx.device)
        rounds = min(len(steps), len(G.synthesis.blocks) - 1)
        n_noise = len(G.synthesis.noise_shapes())

        def w_of(z):
            return gaussianised_to_w(z, prior.mu, prior.sigma)

        def make_round(k: int) -> Stage:
            trainable = list(range(min(base_noise + 2 * k, n_noise)))

            def init(ctx):
                if k == 0:
                    st = ctx.state["ilo"] = {
                        "z": ctx.randn((G.num_ws, G.w_dim), "ilo_latent"),
                        "noise": noise_maps(ctx, "ilo_noise"),
                        "feat": None,
                        "img": None,
                    }
                else:  # advance the carried feature map through block k - 1
                    st = ctx.state["ilo"]
                    with torch.no_grad():
                        st["feat"], st["img"] = G.synthesis.forward_blocks(
                            w_of(st["z"]), st["noise"], k - 1, k, st["feat"], st["img"]
                        )
                vars_ = {"z": st["z"], **{f"noise{i}": st["noise"][i] for i in trainable}}
                if k > 0:
                    vars_["feat"] = st["feat"]
                st["anchor"] = {n: t.clone() for n, t in vars_.items()}
                st["radii"] = {
                    n: t.flatten(2).norm(dim=-1) if n == "z" else t.flatten(1).norm(dim=-1)
                    for n, t in vars_.items()
                    if n != "feat"
                }
                return vars_

            def render(ctx, v):
                st = ctx.state["ilo"]
                w = w_of(v["z"])
                noise = [v.get(f"noise{i}", n) for i, n in enumerate(st["noise"])]
                if k == 0:
                    image = G.synthesis(w, noise=noise)
                else:
                    image = G.synthesis.forward_blocks(w, noise, k, None, v["feat"], st["img"])[1]
                return Rendered(image, w)

            def losses(ctx, v, r):
                pred = D(unit(r.image))
                terms = {"mse": mse_weight * (pred - ctx.y).pow(2).flatten(1).mean(1)}
                if net is not None and lpips_weight:
                    terms["lpips"] = lpips_weight * net(pred, ctx.y).reshape(-1)
                if k == 0 and geocross_weight:
                    terms["geocross"] = geocross_weight * geocross(v["z"])
                return terms

            def project(ctx, v):
                st = ctx.state["ilo"]
                if sphere_project:
                    for n, radius in st["radii"].items():
                        v[n].copy_(project_sphere(v[n], radius, ndim=1 if n == "z" else 3))
                anchor = st["anchor"]
                if project_latent:
                    v["z"].copy_(_l1_around(v["z"], anchor["z"], _per_round(radius_latent, k)))
                if project_noises:
                    for i in trainable:
                        n = f"noise{i}"
                        v[n].copy_(_l1_around(v[n], anchor[n], _per_round(radius_noises, k)))
                if project_features and k > 0:
                    r = _per_round(radius_features, k)
                    v["feat"].copy_(_l1_around(v["feat"], anchor["feat"], r))

            def finish(ctx, v):
                st = ctx.state["ilo"]
                st["z"] = v["z"]
                for i in trainable:
                    st["noise"][i] = v[f"noise{i}"]
                if k > 0:
                    st["feat"] = v["feat"]

            names = ["z", "noise*"] + (["feat"] if k > 0 else [])
            return Stage(
                name=f"round{k}",
                steps=steps[k],
                init=init,
                render=render,
                losses=losses,
                optim=[OptimGroup(vars=names, lr=_per_round(lr, k), schedule=schedule)],
                project=project,
                select="best" if k == rounds - 1 else "last",
                finish=finish,
            )

        return [make_round(k) for k in range(rounds)]

    notes = "; ".join(
        n for n in (note, "" if downsampler == "shared" else "ilo: own downsampler") if n
    )
    return Method(name=name, stages=stages, notes=notes, config=dict(steps=list(steps)))
