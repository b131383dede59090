"""The peers as their configs build them (configs/method/*.yaml, method.md §5): every loss
term is its authors' weight times the unweighted function, computed here independently;
``downsampler: own`` changes what the loss sees; PULSE returns its best iterate."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from rls.degradations import Degradation, build_degradation
from rls.flows import sample_w
from rls.generators import load_generator
from rls.search import SearchContext, build_method, search
from rls.search.peer_losses import geocross

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "method"
SCALE = 4
FIT = 2048  # mapping samples of PULSE's / ILO's diagonal fit (tiny, for speed)


class TinyPerceptual(nn.Module):
    """A small LPIPS-like distance (fixed random conv features), standing in for LPIPS-VGG,
    whose weights are absent offline."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.zero_()

    def forward(self, a, b):
        fa, fb = (F.normalize(torch.relu(self.conv(2 * x - 1)), dim=1) for x in (a, b))
        return (fa - fb).pow(2).sum(1).mean((1, 2))


@pytest.fixture(scope="module")
def G():
    return load_generator("tiny", img_resolution=16).requires_grad_(False)


@pytest.fixture(scope="module")
def net():
    return TinyPerceptual().eval().requires_grad_(False)


def from_config(name: str, **test_overrides):
    """The method exactly as configs/method/<name>.yaml describes it, plus ``test_overrides``
    (smaller fits, an injected perceptual network)."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{name}.yaml"))
    cfg.pop("_target_")
    return build_method(cfg.pop("name"), **{**cfg, **test_overrides})


def context(G, y, D=None):
    return SearchContext(G=G, y=y, D=D or build_degradation(SCALE), seeds=torch.tensor([3, 4]))


def moved(v, key, amount=0.5):
    """The stage's start with its latent variable ``key`` moved off the start (seeded)."""
    g = torch.Generator().manual_seed(1)
    out = dict(v)
    out[key] = v[key] + amount * torch.randn(v[key].shape, generator=g)
    return out


def lr_target(seed=2):
    return torch.rand(2, 3, 16 // SCALE, 16 // SCALE, generator=torch.Generator().manual_seed(seed))


def terms_at(stage, ctx, v):
    r = stage.render(ctx, v)
    return stage.losses(ctx, v, r), r


def assert_terms(terms, expected):
    assert terms.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(terms[name], value, rtol=1e-4, atol=1e-7, msg=name)
        assert (value.abs() > 1e-6).all(), name  # a zero term could hide any weight


def mse(a, b):
    return (a - b).pow(2).flatten(1).mean(1)


def unit(image):
    return (image + 1) / 2


# ---------------------------------------------------------------------------- PULSE


@pytest.mark.parametrize(
    "name, floor, geocross_of",
    [
        ("pulse", 2e-3, "w"),  # adamian98/pulse: 100·max(ε, L2) + 0.05·GEOCROSS(w)
        ("pulse_rls_paper", 0.0, "x"),  # RLS_PLUS pulse_sr.py: 100·L2 + 0.05·GEOCROSS(x)
    ],
)
def test_pulse_terms_are_its_weights_times_its_functions(G, name, floor, geocross_of):
    D = build_degradation(SCALE)
    method = from_config(name, fit_samples=FIT)
    ctx = context(G, lr_target(), D)
    (stage,) = method.build_stages(ctx)
    v = moved(stage.init(ctx), "x")
    terms, r = terms_at(stage, ctx, v)
    pred = D(unit(r.image))
    code = r.latents if geocross_of == "w" else v["x"]
    expected_geocross = 0.05 * geocross(code)
    assert_terms(terms, {"mse": 100 * mse(pred, ctx.y), "geocross": expected_geocross})
    # within the ε tolerance the data term is flat at 100·ε (pulse) or stays 100·L2
    near = dataclasses.replace(ctx, y=pred.detach() + 0.01)  # L2 = 1e-4 < ε = 2e-3
    close, _ = terms_at(stage, near, v)
    torch.testing.assert_close(close["mse"], torch.full((2,), 100 * max(floor, 1e-4)))


def test_pulse_returns_its_best_iterate(G):
    """The output is the iterate with the lowest total loss among those PULSE scores (each
    before its update): recomputed at the output, it equals the history's minimum, which
    here is not the last step (the last iterate would be another image)."""
    D = build_degradation(SCALE)
    chosen = {}
    base = from_config("pulse", fit_samples=FIT, steps=8, lr=20.0)  # a bumpy descent

    def with_record(ctx):
        def record(ctx, v):
            chosen.update({k: t.detach().clone() for k, t in v.items()})

        return [dataclasses.replace(s, finish=record) for s in base.build_stages(ctx)]

    y = lr_target(5)
    out = search(dataclasses.replace(base, stages=with_record), G, y, D, torch.tensor([3, 4]))
    history = out.history["pulse/total"]
    ctx = context(G, y, D)
    (stage,) = base.build_stages(ctx)
    stage.init(ctx)  # fills the stage's per-image state (fixed noise maps, sphere radii)
    with torch.no_grad():
        terms, r = terms_at(stage, ctx, chosen)
    total = sum(terms.values())
    torch.testing.assert_close(total, history.min(0).values, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(unit(r.image).clamp(0, 1), out.images, rtol=0, atol=1e-5)
    assert (history.argmin(0) != history.shape[0] - 1).any()  # best is not simply the last


# ----------------------------------------------------------------------------- BRGM


def test_brgm_terms_are_its_weights_times_its_functions(G, net):
    """λ_pix 0.001 on 0..255 MSE, λ_w 100, λ_c 0.1 (x4 ≤ x16), λ_perc 1e7 over the
    LPIPS-VGG16 feature count at 256² (razvanmarinescu/brgm-pytorch)."""
    D = build_degradation(SCALE)
    method = from_config("brgm", perceptual=net, w_avg_samples=256)
    ctx = context(G, lr_target(), D)
    (stage,) = method.build_stages(ctx)
    v = moved(stage.init(ctx), "w", amount=0.3)
    terms, r = terms_at(stage, ctx, v)
    pred, y, w = D(unit(r.image)), ctx.y, v["w"]
    samples = sample_w(G, 256, seed=123)  # BRGM's w̄ and scalar σ_s (seed 123)
    w_mean = samples.mean(0)
    sigma_s = (samples - w_mean).pow(2).sum(1).mean().sqrt()
    cos = F.cosine_similarity(w[:, :, None], w[:, None, :], dim=-1)  # [B, L, L]
    up = lambda t: F.interpolate(t, size=(256, 256), mode="nearest")  # noqa: E731
    expected = {
        "pixel": 0.001 * mse(255 * pred, 255 * y),
        "w_prior": 100.0 * ((w - w_mean) / sigma_s).pow(2).flatten(1).mean(1),
        "cosine": 0.1 * (1 - cos).abs().sum((1, 2)),
        "perceptual": 1e7 * net(up(pred), up(y)) / 7_995_392,
    }
    assert_terms(terms, expected)


# ------------------------------------------------------------------------------ ILO


def test_ilo_terms_are_its_weights_times_its_functions(G, net):
    """MSE + LPIPS on the LR images, + 0.01·GEOCROSS of the Gaussianised latent in round 0
    only (giannisdaras/ilo)."""
    D = build_degradation(SCALE)
    method = from_config("ilo", perceptual=net, fit_samples=FIT)
    ctx = context(G, lr_target(), D)
    first, second = method.build_stages(ctx)
    v = moved(first.init(ctx), "z")
    terms, r = terms_at(first, ctx, v)
    pred = D(unit(r.image))
    expected = {
        "mse": 1.0 * mse(pred, ctx.y),
        "lpips": 1.0 * net(pred, ctx.y),
        "geocross": 0.01 * geocross(v["z"]),
    }
    assert_terms(terms, expected)
    first.finish(ctx, v)
    terms, r = terms_at(second, ctx, second.init(ctx))
    pred = D(unit(r.image))
    assert_terms(terms, {"mse": mse(pred, ctx.y), "lpips": net(pred, ctx.y)})


# --------------------------------------------------------------------------- robust


def test_robust_term_is_multiscale_lpips_plus_a_tenth_of_l1(G, net):
    """LPIPS at every scale above ``min_loss_res`` (weight 1 each) + 0.1·L1 at the coarsest
    (yohan-pg/robust-unsupervised). The authors' threshold is 16 px; it is lowered to 2 here
    so that the 4² LR images have an LPIPS level."""
    assert OmegaConf.load(CONFIGS / "robust.yaml").min_loss_res == 16
    D = build_degradation(SCALE)
    method = from_config("robust", perceptual=net, min_loss_res=2)
    ctx = context(G, lr_target(), D)
    stage = method.build_stages(ctx)[0]
    v = moved(stage.init(ctx), "w", amount=0.3)
    terms, r = terms_at(stage, ctx, v)
    pred, y = D(unit(r.image)), ctx.y  # 4² LPIPS, then 2² (not above 2): L1 only
    coarse = F.avg_pool2d(pred, 2), F.avg_pool2d(y, 2)
    expected = net(pred, y) + 0.1 * (coarse[0] - coarse[1]).abs().flatten(1).mean(1)
    assert_terms(terms, {"lpips_l1": expected})


def test_wplus_term_is_ten_times_the_lr_l1(G):
    D = build_degradation(SCALE)
    ctx = context(G, lr_target(), D)
    (stage,) = from_config("wplus", start_samples=FIT).build_stages(ctx)
    v = moved(stage.init(ctx), "w", amount=0.3)
    terms, r = terms_at(stage, ctx, v)
    assert_terms(terms, {"l1": 10.0 * (D(unit(r.image)) - ctx.y).abs().flatten(1).mean(1)})


# ------------------------------------------------------------------ own downsampler


@pytest.mark.parametrize(
    "name, cfg",
    [
        ("pulse", dict(steps=2, fit_samples=FIT)),
        ("brgm", dict(steps=2, perceptual="off", w_avg_samples=256)),
        ("ilo", dict(steps=[2, 1], perceptual="off", fit_samples=FIT)),
        ("robust", dict(steps=[1, 1, 1], perceptual="off")),
        ("wplus", dict(steps=2, start_samples=FIT)),
    ],
)
def test_own_downsampler_changes_the_loss_history(G, name, cfg):
    """Under a shared antialiased-bicubic D, ``downsampler: own`` puts the method's own
    kernel in its loss: the same search follows another loss curve."""
    D = Degradation(SCALE, downsampler="bicubic_aa")
    with torch.no_grad():
        z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(1))
        y = D(unit(G(z)))
    seeds = torch.tensor([3, 4])
    shared = search(from_config(name, **cfg), G, y, D, seeds)
    own = search(from_config(name, downsampler="own", **cfg), G, y, D, seeds)
    assert shared.history["total"].shape == own.history["total"].shape
    difference = (shared.history["total"] - own.history["total"]).abs().max()
    assert difference > 1e-4 * shared.history["total"].abs().max()
    assert math.isfinite(difference.item())
