"""BRGM (Marinescu et al. 2021, razvanmarinescu/brgm-pytorch) in the shared engine (method.md §5).

The Bayesian MAP estimate over W+, started at w̄ with fixed random noise maps:

    λ_pix·MSE(255·D(x), 255·y) + λ_perc·LPIPS(up₂₅₆(D(x)), up₂₅₆(y)) / F
    + λ_w·mean(((w − w̄)/σ_s)²) + λ_c·Σ_{i,j}|1 − cos(w_i, w_j)|

with BRGM's weights 0.001 / 1e7 / 100 / 0.1 (λ_c = 1 above ×16), Adam 0.1 (constant), 501
steps, the last iterate. w̄ and the scalar σ_s = sqrt(E‖w − w̄‖²) come from 10,000 mapping
samples (seed 123), as BRGM's projector computes them. The perceptual term is BRGM's mean
squared LPIPS-VGG feature difference, i.e. the LPIPS distance over the feature count F.
"""

from __future__ import annotations

from rls.search.base import Method, OptimGroup, Rendered, SearchContext, Stage, register
from rls.search.peer_losses import (
    VGG16_LPIPS_FEATURES_256,
    brgm_cosine_prior,
    brgm_perceptual,
    brgm_w_prior,
    method_degradation,
    noise_maps,
    resolve_perceptual,
    unit,
)


@register("brgm")
def build_brgm(
    name: str = "brgm",
    steps: int = 501,  # --num-steps
    lr: float = 0.1,  # Adam, betas (0.9, 0.999), no schedule
    lambda_pix: float = 0.001,
    lambda_perc: float = 1e7,
    lambda_w: float = 100.0,
    lambda_c: float | None = None,  # None: 0.1, or 1.0 for super-resolution above x16
    perceptual="lpips-vgg",  # "lpips-vgg" | "off" | a module net(a, b) -> [B]
    perceptual_weights: str | None = None,  # path of the VGG16 backbone file
    allow_download: bool | None = None,  # None: download unless $RLS_OFFLINE
    perceptual_size: int = 256,  # BRGM resizes both LR images to 256² for VGG
    perceptual_features: int = VGG16_LPIPS_FEATURES_256,
    w_avg_samples: int = 10_000,
    w_avg_seed: int = 123,
    downsampler: str = "shared",  # "shared" | "own" (torch bicubic, no antialiasing)
    **unused,
) -> Method:
    net, note = resolve_perceptual(perceptual, name, perceptual_weights, allow_download)
    fits: dict[int, tuple] = {}

    def w_prior(G):
        hit = fits.get(id(G))
        if hit is None or hit[0] is not G:
            from rls.flows import GaussianPrior, sample_w

            w = sample_w(G, w_avg_samples, seed=w_avg_seed)
            hit = fits[id(G)] = (G, GaussianPrior(G.w_dim).to(w.device).fit(w))
        return hit[1]

    def stages(ctx: SearchContext) -> list[Stage]:
        G = ctx.G
        prior = w_prior(G)
        D = method_degradation(ctx.D, downsampler, "brgm").to(ctx.device)
        scale = getattr(ctx.D, "scale", G.img_resolution // ctx.y.shape[-1])
        lam_c = lambda_c if lambda_c is not None else (1.0 if scale > 16 else 0.1)

        def init(ctx):
            ctx.state["brgm_noise"] = noise_maps(ctx, "brgm_noise")
            w0 = prior.mean.to(ctx.device).expand(ctx.batch_size, G.num_ws, -1)
            return {"w": w0.clone()}

        def render(ctx, v):
            return Rendered(G.synthesis(v["w"], noise=ctx.state["brgm_noise"]), v["w"])

        def losses(ctx, v, r):
            lr_img = D(unit(r.image))
            terms = {
                "pixel": lambda_pix * (255.0 * (lr_img - ctx.y)).pow(2).flatten(1).mean(1),
                "w_prior": lambda_w * brgm_w_prior(v["w"], prior.mean, prior.vector_std),
                "cosine": lam_c * brgm_cosine_prior(v["w"]),
            }
            if net is not None:
                perc = brgm_perceptual(lr_img, ctx.y, net, perceptual_size, perceptual_features)
                terms["perceptual"] = lambda_perc * perc
            return terms

        return [
            Stage(
                name="brgm",
                steps=steps,
                init=init,
                render=render,
                losses=losses,
                optim=[OptimGroup(vars=["w"], lr=lr, betas=(0.9, 0.999))],
                select="last",  # BRGM saves ws_out[-1]
            )
        ]

    notes = "; ".join(
        n for n in (note, "" if downsampler == "shared" else "brgm: own downsampler") if n
    )
    return Method(name=name, stages=stages, notes=notes, config=dict(steps=steps, lr=lr))
