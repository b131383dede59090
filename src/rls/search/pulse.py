"""PULSE (Menon et al. 2020) in the shared engine (method.md §5), in two variants.

``pulse``: the port of adamian98/pulse. Variables: a Gaussianised W+ code x ``[B, L, w_dim]``
with ``w = LeakyReLU_0.2(σ⊙x + μ)`` (the diagonal fit of ``LeakyReLU_5(w)``, method.md §2) and
the lowest noise maps. After every Adam step each latent row and each trainable noise map is
rescaled to its initial norm (PULSE's SphericalOptimizer). Loss
``100·max(ε, MSE(D(x), y)) + 0.05·GEOCROSS(w)``, Adam 0.4, 100 steps, linear1cycledrop, the
finest noise map zeroed; the output is the best iterate among those scored before an update
(PULSE.py's ``best_im``). Unlike PULSE's script an output is always returned (PULSE's
refused one above ε).

``pulse_rls_paper``: the PULSE baseline of the RLS paper, as its authors ran it
(mgheisar/RLS_PLUS ``pulse_sr.py`` at f8df15d): GEOCROSS of the Gaussianised code x (not of
w), a plain ``100·MSE`` without the ε floor, no noise map zeroed; otherwise as ``pulse``.
"""

from __future__ import annotations

from rls.search.base import Method, OptimGroup, Rendered, SearchContext, Stage, register
from rls.search.peer_losses import (
    GaussianFitCache,
    floored_mse,
    gaussianised_to_w,
    geocross,
    method_degradation,
    noise_maps,
    unit,
)
from rls.search.projections import project_sphere

GEOCROSS_ON = ("w", "gaussianised")


@register("pulse")
def build_pulse(
    name: str = "pulse",
    steps: int = 100,  # PULSE run.py -steps
    lr: float = 0.4,  # -learning_rate
    schedule: str = "linear1cycledrop",  # -lr_schedule
    mse_weight: float = 100.0,  # -loss_str "100*L2+0.05*GEOCROSS"
    geocross_weight: float = 0.05,
    eps: float = 2e-3,  # -eps: the L2 floor
    trainable_noise: int = 5,  # -num_trainable_noise_layers (the coarsest ones)
    zero_noise: tuple[int, ...] = (-1,),  # -bad_noise_layers "17": PULSE zeroes the finest map
    tile_latent: bool = False,  # -tile_latent: one row repeated (W instead of W+)
    fit_samples: int = 1_000_000,  # mapping samples of the diagonal fit (PULSE: 1e6, seed 0)
    fit_seed: int = 0,
    downsampler: str = "shared",  # "shared" (fair comparison) | "own" (PULSE bicubic)
    geocross_on: str = "w",  # "w" (PULSE) | "gaussianised" (the RLS authors' pulse_sr.py)
    method: str = "pulse",  # the registry key, for messages
    **unused,
) -> Method:
    if geocross_on not in GEOCROSS_ON:
        raise ValueError(f"{method}: geocross_on must be one of {GEOCROSS_ON}, got {geocross_on!r}")
    fit = GaussianFitCache(fit_samples, fit_seed)

    def stages(ctx: SearchContext) -> list[Stage]:
        G = ctx.G
        prior = fit(G)
        D = method_degradation(ctx.D, downsampler, "pulse").to(ctx.device)
        shapes = G.synthesis.noise_shapes()
        n_noise = len(shapes)
        trainable = list(range(min(trainable_noise, n_noise)))
        zeroed = {i % n_noise for i in zero_noise}

        def init(ctx):
            rows = 1 if tile_latent else G.num_ws
            vars_ = {"x": ctx.randn((rows, G.w_dim), "pulse_latent")}
            noise = noise_maps(ctx, "pulse_noise")
            for i in zeroed:
                noise[i] = noise[i].zero_()
            ctx.state["pulse_noise"] = noise
            vars_.update({f"noise{i}": noise[i] for i in trainable})
            # PULSE keeps every row on the sphere of its initial radius
            ctx.state["pulse_radii"] = {
                k: v.flatten(2).norm(dim=-1) if k == "x" else v.flatten(1).norm(dim=-1)
                for k, v in vars_.items()
            }
            return vars_

        def render(ctx, v):
            x = v["x"].expand(-1, G.num_ws, -1)
            w = gaussianised_to_w(x, prior.mu, prior.sigma)
            noise = [v.get(f"noise{i}", n) for i, n in enumerate(ctx.state["pulse_noise"])]
            return Rendered(G.synthesis(w, noise=noise), w)

        def losses(ctx, v, r):
            code = r.latents if geocross_on == "w" else v["x"]
            return {
                "mse": mse_weight * floored_mse(D(unit(r.image)), ctx.y, eps),
                "geocross": geocross_weight * geocross(code),
            }

        def project(ctx, v):
            for k, t in v.items():
                radius = ctx.state["pulse_radii"][k]
                t.copy_(project_sphere(t, radius, ndim=1 if k == "x" else t.dim() - 1))

        return [
            Stage(
                name="pulse",
                steps=steps,
                init=init,
                render=render,
                losses=losses,
                optim=[OptimGroup(vars=["x", "noise*"], lr=lr, schedule=schedule)],
                project=project,
                select="best",
                score_final=False,  # PULSE.py scores each iterate before its update only
            )
        ]

    notes = "" if downsampler == "shared" else f"{method}: own downsampler (PULSE bicubic)"
    config = dict(
        steps=steps,
        lr=lr,
        eps=eps,
        trainable_noise=trainable_noise,
        zero_noise=list(zero_noise),
        geocross_on=geocross_on,
    )
    return Method(name=name, stages=stages, notes=notes, config=config)


@register("pulse_rls_paper")
def build_pulse_rls_paper(
    name: str = "pulse_rls_paper",
    eps: float = 0.0,  # pulse_sr.py: loss = 100 * mse_loss (no floor)
    zero_noise: tuple[int, ...] = (),  # no noise map zeroed
    geocross_on: str = "gaussianised",  # geocross(latent), latent = the Gaussianised code
    **cfg,
) -> Method:
    """PULSE as the RLS authors ran it for their paper's table (``pulse_sr.py``)."""
    return build_pulse(
        name=name,
        eps=eps,
        zero_noise=zero_noise,
        geocross_on=geocross_on,
        method="pulse_rls_paper",
        **cfg,
    )
