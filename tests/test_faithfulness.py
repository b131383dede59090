"""The authors' defaults (mgheisar/RLS_PLUS at f8df15d) and our switches (docs/faithfulness.md).

The RLS+ stage is checked against a loop written here from reading ``sr_boost_ada.py``: one
image at a time with its own copy of the generator (the authors reload the checkpoint per
image), every noise map drawn anew, Adam on the code + the 9 coarsest maps and a second Adam
on *all* generator parameters, the image saved at the last iteration before its update, every
noise map standardised and each code row pulled into its ℓ1 ball after each step. Each switch
has a test that fails when the switch is ignored.
"""

import copy
import dataclasses
import math

import pytest
import torch

from rls.degradations import build_degradation
from rls.generators import load_generator
from rls.search import Method, SearchContext, StageOutput, build_method, search
from rls.search.losses import to_unit
from rls.search.rls import rls_stage
from rls.search.rls_plus import rls_plus_stage
from rls.seeding import derive_seeds, randn_per_seed

NO_PRIOR = dict(lambda_logp=0.0, lambda_pn=0.0)  # the anchor needs no flow for these checks


@pytest.fixture(scope="module")
def problem64():
    G = load_generator("tiny").double()
    D = build_degradation(8).double()
    with torch.no_grad():
        z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(5)).double()
        hr = to_unit(G(z)).clamp(0, 1)
    return G, D, D(hr), torch.tensor([101, 202])


@pytest.fixture(scope="module")
def problem():
    G = load_generator("tiny")
    D = build_degradation(8)
    with torch.no_grad():
        z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(5))
        hr = to_unit(G(z)).clamp(0, 1)
    return G, D, D(hr), torch.tensor([101, 202])


# ------------------------------------------------------------ the reference loop (own words)


def one_cycle_then_drop(i: int, steps: int) -> float:
    """The authors' ``linear1cycledrop``: up 0.1 -> 1 and down to 0.1 over 90%, then to 1e-3."""
    knee = 0.9 * steps
    if i < knee:
        return 0.1 + 0.9 * (1 - abs(2 * i / knee - 1))
    return 0.1 - 0.099 * (i - knee) / (0.1 * steps)


def into_l1_ball(v: torch.Tensor, radius: float) -> torch.Tensor:
    """One vector onto {‖x‖₁ <= radius}: soft-threshold at the θ that makes the mass fit."""
    if v.abs().sum() < radius:
        return v
    mags = v.abs().sort(descending=True).values
    running = mags.cumsum(0)
    ks = torch.arange(1, len(v) + 1, dtype=v.dtype)
    last = int(torch.nonzero(mags * ks > running - radius).max())  # the last index that stays
    theta = (running[last] - radius) / (last + 1)
    return v.sign() * (v.abs() - theta).clamp(min=0)


def authors_stage_two(G, D, y, anchor, noise, steps, radius=1.0, tuned=9, lr=0.1, lr_g=1e-4):
    """sr_boost_ada.py's loop for each image alone; returns (loss history [steps, B], images)."""
    history, images = [], []
    for b in range(y.shape[0]):
        g = copy.deepcopy(G).requires_grad_(True)
        code = anchor[b : b + 1].clone().requires_grad_(True)
        maps = [n[b : b + 1].clone() for n in noise]
        for m in maps[:tuned]:
            m.requires_grad_(True)
        opt = torch.optim.Adam([code, *maps[:tuned]], lr=lr)
        opt_g = torch.optim.Adam(g.parameters(), lr=lr_g)  # mapping too: it gets no gradient
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: one_cycle_then_drop(i, steps))
        losses = []
        for i in range(steps):
            opt.zero_grad()
            opt_g.zero_grad()
            img = (g.synthesis(code, noise=maps) + 1) / 2
            loss = 10 * (D(img) - y[b : b + 1]).abs().mean()
            losses.append(loss.item())
            if i == steps - 1:
                saved = img.detach().clamp(0, 1)
            loss.backward()
            opt.step()
            opt_g.step()
            sched.step()
            with torch.no_grad():
                for m in maps:  # all of them, the fixed fine maps too
                    m.sub_(m.mean()).div_(m.std())
                for row in range(code.shape[1]):
                    dev = into_l1_ball(code[0, row] - anchor[b, row], radius * math.sqrt(G.w_dim))
                    code[0, row] = anchor[b, row] + dev
        history.append(losses)
        images.append(saved[0])
    return torch.tensor(history, dtype=torch.float64).T, torch.stack(images)


def fresh_noise(G, seeds, dtype):
    """The per-image N(0, 1) maps RLS+ draws for its stage (seeded by rls.seeding)."""
    return [
        randn_per_seed(derive_seeds(seeds, f"rls_plus/noise.{i}"), (1, h, w)).to(dtype)
        for i, (h, w) in enumerate(G.synthesis.noise_shapes())
    ]


# the authors' r = 1 and 9 tuned maps (all 7 of the tiny generator); then a ball that binds
# and 3 tuned maps, so that fixed maps are renormalised too
@pytest.mark.parametrize("radius, tuned", [(1.0, 9), (0.02, 3)])
def test_rls_plus_stage_equals_an_independent_sr_boost_ada_loop(problem64, radius, tuned):
    G, D, y, seeds = problem64
    steps = 20
    cfg = dict(steps=steps, radius=radius, num_noise=tuned)
    ours = search(build_method("rls_plus", anchor=dict(steps=6, **NO_PRIOR), **cfg), G, y, D, seeds)
    anchor = ours.extras["rls_latents"]
    noise = fresh_noise(G, seeds, y.dtype)
    ref_loss, ref_images = authors_stage_two(G, D, y, anchor, noise, steps, radius, tuned)
    torch.testing.assert_close(ours.history["rls_plus/l1"], ref_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.images, ref_images, atol=1e-6, rtol=0)
    if radius < 1:  # the projection acted: the code sits on its ball's surface
        l1 = (ours.latents - anchor).abs().sum(-1)
        torch.testing.assert_close(l1, torch.full_like(l1, radius * math.sqrt(G.w_dim)))


# ------------------------------------------------------------------------- RLS+ switches


def test_noise_init_anchor_starts_stage_two_at_the_anchor_image(problem):
    G, D, y, seeds = problem
    anchor = dict(steps=4, **NO_PRIOR)
    runs = {}
    for init in ("anchor", "fresh"):
        method = build_method("rls_plus", anchor=anchor, steps=3, noise_init=init)
        runs[init] = search(method, G, y, D, seeds)
    rls = search(build_method("rls", **anchor), G, y, D, seeds)
    best = rls.history["total"].argmin(0)  # the anchor is RLS's best iterate
    anchor_l1 = rls.history["rls/l1"][best, torch.arange(len(y))]
    start = {k: r.history["rls_plus/l1"][0] for k, r in runs.items()}
    torch.testing.assert_close(start["anchor"], anchor_l1, atol=1e-5, rtol=1e-5)
    assert ((start["fresh"] - anchor_l1).abs() > 1e-3).all()  # other maps, another image


def anchored_stage(G, D, y, seeds, **cfg):
    ctx = SearchContext(G=G, y=y, D=D, seeds=seeds)
    first = rls_stage(steps=1, **NO_PRIOR)
    start = first.init(ctx)
    ctx.state["rls"] = StageOutput(start, torch.zeros_like(y), start["w"], torch.zeros(len(y)))
    return ctx, rls_plus_stage(ctx, steps=3, **cfg)


@pytest.mark.parametrize("renormalize", ["all", "tuned"])
def test_renormalize_all_or_only_the_tuned_noise_maps(problem, renormalize):
    G, D, y, seeds = problem
    ctx, stage = anchored_stage(G, D, y, seeds, renormalize=renormalize, num_noise=3)
    v = stage.init(ctx)
    for k in v:
        if k.startswith("noise."):
            v[k] = 3 * v[k] + 1
    before = {k: t.clone() for k, t in v.items()}
    stage.project(ctx, v)
    names = [f"noise.{i}" for i in range(len(G.synthesis.noise_shapes()))]
    for i, name in enumerate(names):
        standardised = i < 3 or renormalize == "all"
        if standardised:
            torch.testing.assert_close(v[name].mean((1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
            torch.testing.assert_close(v[name].std((1, 2, 3)), torch.ones(2))
        else:
            assert torch.equal(v[name], before[name]), name


def test_renormalize_switch_changes_the_result(problem):
    G, D, y, seeds = problem
    anchor = dict(steps=3, **NO_PRIOR)
    a, b = (
        search(
            build_method("rls_plus", anchor=anchor, steps=4, num_noise=3, renormalize=r),
            G,
            y,
            D,
            seeds,
        )
        for r in ("all", "tuned")
    )
    assert torch.allclose(a.history["rls_plus/l1"][0], b.history["rls_plus/l1"][0])  # same start
    assert not torch.allclose(a.images, b.images, atol=1e-4)


def test_output_before_or_after_the_last_update(problem):
    """With a constant schedule iterate k does not depend on the step count: the authors'
    output after N + 1 steps is the render after N updates, ours after N steps is too."""
    G, D, y, seeds = problem
    anchor = dict(steps=3, **NO_PRIOR)

    def run(steps, output):
        cfg = dict(anchor=anchor, steps=steps, output=output, schedule="constant")
        return search(build_method("rls_plus", **cfg), G, y, D, seeds)

    before_4, after_3 = run(4, "before_last_update"), run(3, "after_last_update")
    before_3 = run(3, "before_last_update")
    torch.testing.assert_close(before_4.images, after_3.images, atol=1e-6, rtol=0)
    torch.testing.assert_close(before_4.latents, after_3.latents, atol=1e-6, rtol=0)
    assert not torch.allclose(before_3.images, after_3.images, atol=1e-4)


def test_bad_switch_values_name_the_key():
    for key in ("noise_init", "renormalize", "output"):
        with pytest.raises(ValueError, match=f"rls_plus: {key} must be one of"):
            build_method("rls_plus", **{key: "sometimes"})
    with pytest.raises(ValueError, match="rls: start must be one of"):
        rls_stage(start="origin")


# ----------------------------------------------------------------------------- RLS switches


def test_rls_best_iterate_is_scored_before_updates_only(problem):
    """score_final=False (authors): after N steps the best is among iterates 0..N-1, so on a
    descending loss the output is iterate N-1, the last iterate of an N-1 step run."""
    G, D, y, seeds = problem
    base = dict(lr=0.01, schedule="constant", start="w_avg", **NO_PRIOR, lambda_cross=0.0)

    def run(steps, score_final):
        return search(
            build_method("rls", steps=steps, score_final=score_final, **base), G, y, D, seeds
        )

    authors_5, ours_4, ours_5 = run(5, False), run(4, True), run(5, True)
    assert (authors_5.history["total"].diff(dim=0) < 0).all()  # descending: the last is best
    torch.testing.assert_close(authors_5.latents, ours_4.latents, atol=1e-6, rtol=0)
    assert not torch.allclose(authors_5.latents, ours_5.latents, atol=1e-5)


def test_rls_start_switch_reaches_the_search(problem):
    """One step scored before its update: the output is the start, w̄ of each kind."""
    G, D, y, seeds = problem
    out = {}
    for start in ("sample_mean", "w_avg"):
        method = build_method("rls", steps=1, start=start, start_samples=3000, **NO_PRIOR)
        out[start] = search(method, G, y, D, seeds)
    with torch.no_grad():
        z = torch.randn(3000, G.z_dim, generator=torch.Generator().manual_seed(0))
        mean = G.mapping(z, None)[:, 0].mean(0)
    torch.testing.assert_close(out["sample_mean"].latents, mean.expand_as(out["w_avg"].latents))
    torch.testing.assert_close(
        out["w_avg"].latents, G.mapping.w_avg.expand_as(out["w_avg"].latents)
    )


def test_sample_mean_is_computed_once_per_mapping_network():
    """Equal mapping weights share one cached w̄ (no second pass over the samples); other
    weights get their own."""
    from rls.search.rls import sample_mean_w

    first = sample_mean_w(load_generator("tiny"), 2048, seed=7)
    twin = load_generator("tiny")

    def no_second_pass(*args, **kwargs):
        raise AssertionError("the sample mean was recomputed")

    twin.mapping.forward = no_second_pass
    torch.testing.assert_close(sample_mean_w(twin, 2048, seed=7), first)
    other = load_generator("tiny", seed=1)
    assert not torch.allclose(sample_mean_w(other, 2048, seed=7), first)


# --------------------------------------------------------------------------------- PULSE


def pulse_stage(name, G, D, y, seeds, **cfg):
    method = build_method(name, steps=3, fit_samples=4096, **cfg)
    ctx = SearchContext(G=G, y=y, D=D, seeds=seeds)
    (stage,) = method.build_stages(ctx)
    return ctx, stage


def test_pulse_rls_paper_follows_pulse_sr(problem):
    """The RLS authors' PULSE: plain 100·MSE (no ε floor), GEOCROSS of the Gaussianised code,
    no noise map zeroed; adamian98/pulse's port floors the MSE at ε = 0.002, takes GEOCROSS of
    w and zeroes the finest map. Checked at an input within ε of the start image."""
    from rls.search.peer_losses import geocross

    G, D, y, seeds = problem
    for name in ("pulse_rls_paper", "pulse"):
        ctx, stage = pulse_stage(name, G, D, y, seeds)
        v = stage.init(ctx)
        r = stage.render(ctx, v)
        ctx.y = D(to_unit(r.image)).detach() + 0.01  # MSE 1e-4, inside PULSE's floor
        terms = stage.losses(ctx, v, r)
        finest = ctx.state["pulse_noise"][-1]
        if name == "pulse_rls_paper":
            torch.testing.assert_close(terms["mse"], torch.full((2,), 100 * 1e-4))
            torch.testing.assert_close(terms["geocross"], 0.05 * geocross(v["x"]))
            assert finest.abs().sum() > 0
        else:
            torch.testing.assert_close(terms["mse"], torch.full((2,), 100 * 0.002))
            torch.testing.assert_close(terms["geocross"], 0.05 * geocross(r.latents))
            assert finest.abs().sum() == 0
    assert not torch.allclose(geocross(v["x"]), geocross(r.latents))  # the two codes differ


def test_pulse_variants_are_told_apart_in_results(problem):
    G, D, y, seeds = problem
    paper = search(build_method("pulse_rls_paper", steps=2, fit_samples=4096), G, y, D, seeds)
    port = search(build_method("pulse", steps=2, fit_samples=4096), G, y, D, seeds)
    assert build_method("pulse_rls_paper").name == "pulse_rls_paper"
    assert not torch.allclose(paper.images, port.images)


def test_pulse_keeps_the_best_iterate_scored_before_an_update(problem):
    """PULSE.py's best_im: with one step the output is the start image, never the update."""
    G, D, y, seeds = problem
    for name in ("pulse", "pulse_rls_paper"):
        method = build_method(name, steps=1, fit_samples=4096)
        starts = {}

        def keep_start(ctx, v, method=method, starts=starts):
            (stage,) = method.build_stages(ctx)
            starts["image"] = stage.render(ctx, stage.init(ctx)).image

        recording = Method(
            name,
            lambda ctx, method=method: [
                dataclasses.replace(s, finish=keep_start) for s in method.build_stages(ctx)
            ],
        )
        out = search(recording, G, y, D, seeds)
        torch.testing.assert_close(out.images, ((starts["image"] + 1) / 2).clamp(0, 1))
