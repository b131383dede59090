"""The peer methods in the shared engine (method.md §5) on a tiny generator: their
invariants, their stage plumbing, and that a short run lowers the data term."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from rls.degradations import Degradation, build_degradation
from rls.generators import load_generator
from rls.search import METHODS, Method, SearchContext, build_method, search
from rls.search.peer_losses import brgm_cosine_prior, method_degradation
from rls.search.robust import synthesize_wpp, wpp_width

SCALE = 4
FIT = 2048  # mapping samples of the PULSE/ILO diagonal fit (tiny, for speed)


class TinyPerceptual(nn.Module):
    """A small LPIPS-like distance: unit-normalised random conv features, squared distance
    averaged over space. Stands in for LPIPS-VGG, whose weights are absent offline."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.zero_()

    def forward(self, a, b):
        fa, fb = (nn.functional.normalize(torch.relu(self.conv(2 * x - 1)), dim=1) for x in (a, b))
        return (fa - fb).pow(2).sum(1).mean((1, 2))


@pytest.fixture(scope="module")
def G():
    return load_generator("tiny", img_resolution=16).requires_grad_(False)


@pytest.fixture(scope="module")
def problem(G):
    """Generator-sampled targets and their LR observations."""
    D = build_degradation(scale=SCALE, corruption="none")
    with torch.no_grad():
        z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(1))
        x = (G(z) + 1) / 2
    return D, D(x), torch.tensor([11, 12])


def context(G, D, y, seeds):
    return SearchContext(G=G, y=y, D=D, seeds=seeds)


def test_peers_are_registered():
    assert {"pulse", "brgm", "ilo", "robust"} <= set(METHODS)
    with pytest.raises(KeyError, match="unknown search method 'nope'"):
        build_method("nope")


# ------------------------------------------------------------------------------- PULSE


def test_pulse_sphere_projection_keeps_initial_norms(G, problem):
    D, y, seeds = problem
    method = build_method("pulse", fit_samples=FIT)
    ctx = context(G, D, y, seeds)
    (stage,) = method.build_stages(ctx)
    v = stage.init(ctx)
    radii = {
        k: t.flatten(2).norm(dim=-1) if k == "x" else t.flatten(1).norm(dim=-1)
        for k, t in v.items()
    }
    assert set(v) == {"x"} | {f"noise{i}" for i in range(5)}  # the 5 coarsest noise maps
    moved = {k: t * 3 + torch.randn_like(t) for k, t in v.items()}
    stage.project(ctx, moved)
    for k, t in moved.items():
        norms = t.flatten(2).norm(dim=-1) if k == "x" else t.flatten(1).norm(dim=-1)
        assert torch.allclose(norms, radii[k], rtol=1e-5), k


def test_pulse_short_run_returns_its_best_iterate(G, problem):
    D, y, seeds = problem
    method = build_method("pulse", steps=4, fit_samples=FIT)
    chosen = {}

    def record(ctx, v):  # re-evaluate the iterate the loop selected as the stage output
        (stage,) = method.build_stages(ctx)
        chosen["total"] = sum(stage.losses(ctx, v, stage.render(ctx, v)).values()).detach()

    recording = Method(
        "pulse",
        lambda ctx: [dataclasses.replace(s, finish=record) for s in method.build_stages(ctx)],
    )
    out = search(recording, G, y, D, seeds)
    assert out.status == ["ok", "ok"] and out.images.shape == (2, 3, 16, 16)
    mse = out.history["pulse/mse"]
    assert (mse.min(0).values < mse[0]).all()  # the data term went down
    # the output is the best iterate: no logged step had a lower total loss
    assert (chosen["total"] <= out.history["pulse/total"].min(0).values + 1e-4).all()


def test_pulse_never_refuses_to_output(G, problem):
    D, y, seeds = problem
    out = search(build_method("pulse", steps=1, eps=0.0, fit_samples=FIT), G, y, D, seeds)
    assert torch.isfinite(out.images).all() and out.status == ["ok", "ok"]


# -------------------------------------------------------------------------------- BRGM


def test_brgm_starts_at_w_mean_and_lowers_pixel_term(G, problem):
    D, y, seeds = problem
    method = build_method(
        "brgm",
        steps=5,
        perceptual=TinyPerceptual(),
        perceptual_size=32,
        perceptual_features=100,
        w_avg_samples=256,
    )
    out = search(method, G, y, D, seeds)
    h = out.history
    assert set(k.split("/")[1] for k in h if "/" in k) == {
        "pixel",
        "w_prior",
        "cosine",
        "perceptual",
        "total",
    }
    assert torch.allclose(h["brgm/w_prior"][0], torch.zeros(2))  # w = w̄ at step 0
    assert torch.allclose(h["brgm/cosine"][0], torch.zeros(2), atol=1e-4)  # identical rows
    assert (h["brgm/pixel"].min(0).values < h["brgm/pixel"][0]).all()


def test_brgm_cosine_weight_follows_scale(G):
    for scale, expected in ((8, 0.1), (16, 0.1), (32, 1.0)):
        D = Degradation(scale, downsampler="area")  # the PULSE kernel needs larger images
        y = torch.rand(1, 3, max(32 // scale, 1), max(32 // scale, 1))
        G32 = load_generator("tiny")
        ctx = context(G32, D, y, torch.tensor([0]))
        (stage,) = build_method("brgm", perceptual="off", w_avg_samples=256).build_stages(ctx)
        v = stage.init(ctx)
        v["w"] = v["w"] + torch.randn_like(v["w"])
        terms = stage.losses(ctx, v, stage.render(ctx, v))
        assert terms["cosine"].item() == pytest.approx(expected * brgm_cosine_prior(v["w"]).item())


def test_missing_perceptual_weights_named_at_construction(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("RLS_WEIGHTS_DIR", str(tmp_path))
    for name in ("brgm", "ilo", "robust"):
        with caplog.at_level("WARNING"):
            method = build_method(name, allow_download=False)
        assert "vgg16-397923af.pth" in method.notes and "OFF" in method.notes
        assert "vgg16-397923af.pth" in caplog.text


def test_brgm_runs_with_perceptual_off(G, problem):
    D, y, seeds = problem
    out = search(build_method("brgm", steps=2, perceptual="off", w_avg_samples=256), G, y, D, seeds)
    assert "brgm/perceptual" not in out.history and out.notes.startswith(
        "brgm: perceptual term off"
    )


# --------------------------------------------------------------------------------- ILO


def test_ilo_rounds_continue_from_the_previous_image(G, problem):
    D, y, seeds = problem
    method = build_method("ilo", perceptual="off", fit_samples=FIT)
    ctx = context(G, D, y, seeds)
    stages = method.build_stages(ctx)
    assert [s.name for s in stages] == ["round0", "round1"]  # 16²: 3 blocks -> 2 rounds
    assert [s.steps for s in stages] == [50, 50]
    v0 = stages[0].init(ctx)
    assert set(v0) == {"z"} | {f"noise{i}" for i in range(5)}
    v0 = {k: t + 0.1 * torch.randn_like(t) for k, t in v0.items()}  # "after round 0"
    image0 = stages[0].render(ctx, v0).image
    stages[0].finish(ctx, v0)
    v1 = stages[1].init(ctx)
    assert "feat" in v1 and v1["feat"].shape[-1] == 4  # the feature map entering block 1 (8²)
    assert torch.allclose(stages[1].render(ctx, v1).image, image0, atol=1e-5)


def test_ilo_projections_keep_l1_radii_and_sphere(G, problem):
    D, y, seeds = problem
    method = build_method(
        "ilo",
        perceptual="off",
        fit_samples=FIT,
        sphere_project=False,
        project_latent=True,
        project_noises=True,
        project_features=True,
        radius_latent=[3.0, 2.0],
        radius_noises=[1.0, 0.5],
        radius_features=[4.0, 1.5],
    )
    ctx = context(G, D, y, seeds)
    stages = method.build_stages(ctx)
    v0 = stages[0].init(ctx)
    stages[0].finish(ctx, v0)
    v1 = stages[1].init(ctx)
    anchor = {k: t.clone() for k, t in v1.items()}
    moved = {k: t + torch.randn_like(t) for k, t in v1.items()}
    stages[1].project(ctx, moved)
    radius = {"z": 2.0, "feat": 1.5}
    for k, t in moved.items():
        dist = (t - anchor[k]).flatten(1).abs().sum(1)
        assert (dist <= radius.get(k, 0.5) * (1 + 1e-4)).all(), k
    # with the spherical projection instead: z rows and noise maps keep their round-start norms
    sphere = build_method("ilo", perceptual="off", fit_samples=FIT)
    ctx = context(G, D, y, seeds)
    (stage0, _) = sphere.build_stages(ctx)
    v = stage0.init(ctx)
    norms = {
        k: t.flatten(2).norm(dim=-1) if k == "z" else t.flatten(1).norm(dim=-1)
        for k, t in v.items()
    }
    moved = {k: 2 * t + 1 for k, t in v.items()}
    stage0.project(ctx, moved)
    for k, t in moved.items():
        got = t.flatten(2).norm(dim=-1) if k == "z" else t.flatten(1).norm(dim=-1)
        assert torch.allclose(got, norms[k], rtol=1e-5), k


def test_ilo_short_run_lowers_data_term(G, problem):
    D, y, seeds = problem
    method = build_method("ilo", steps=[4, 3], perceptual=TinyPerceptual(), fit_samples=FIT)
    out = search(method, G, y, D, seeds)
    assert {"round0/lpips", "round0/geocross", "round1/lpips"} <= set(out.history)
    assert "round1/geocross" not in out.history  # GEOCROSS in round 0 only
    assert (out.history["round1/mse"].min(0).values < out.history["round0/mse"][0]).all()


# ------------------------------------------------------------------------------ robust


def test_wpp_with_equal_filter_codes_is_the_wplus_image(G):
    ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(3)))
    ws = ws + 0.3 * torch.randn(ws.shape, generator=torch.Generator().manual_seed(4))
    wpp = ws[:, :, None].expand(-1, -1, wpp_width(G.synthesis), -1)
    assert torch.allclose(synthesize_wpp(G, wpp), G.synthesis(ws, noise_mode="const"), atol=1e-4)
    # and one filter's own code changes the image (W++ is richer than W+)
    other = wpp.clone()
    other[:, 2, 0] += 1.0
    assert not torch.allclose(synthesize_wpp(G, other), synthesize_wpp(G, wpp), atol=1e-4)


def test_robust_three_stages_lower_the_loss(G, problem):
    D, y, seeds = problem
    method = build_method("robust", steps=[3, 2, 2], perceptual=TinyPerceptual(), min_loss_res=2)
    out = search(method, G, y, D, seeds)
    assert [k for k in out.history if k.endswith("/total")] == ["W/total", "W+/total", "W++/total"]
    first, last = out.history["W/lpips_l1"][0], out.history["W++/lpips_l1"][-1]
    assert (last < first).all()
    assert out.latents.shape == (2, G.num_ws, G.w_dim)


# ------------------------------------------------------------------ shared plumbing


def test_own_downsampler_keeps_corruptions():
    D = build_degradation(scale=4, corruption="gaussian_blur")
    assert method_degradation(D, "shared", "brgm") is D
    own = method_degradation(D, "own", "brgm")
    assert isinstance(own, Degradation) and own.downsampler == "bicubic_torch"
    assert [c.name for c in own.corruptions] == [c.name for c in D.corruptions]
    assert method_degradation(D, "own", "robust").downsampler == "box"
    with pytest.raises(ValueError, match="downsampler must be 'shared' or 'own'"):
        method_degradation(D, "bicubic", "pulse")


def test_results_do_not_depend_on_the_batch(G, problem):
    D, y, seeds = problem
    method = build_method("pulse", steps=2, fit_samples=FIT)
    both = search(method, G, y, D, seeds)
    alone = search(method, G, y[1:], D, seeds[1:])
    assert torch.allclose(both.images[1:], alone.images, atol=1e-5)
    assert math.isfinite(both.seconds)


# ------------------------------------------------------------------------------- W+


def test_wplus_is_rls_without_regularisers(G, problem):
    D, y, seeds = problem
    wplus = build_method("wplus", steps=6)
    rls = build_method("rls", steps=6, lambda_logp=0.0, lambda_pn=0.0, lambda_cross=0.0)
    a, b = search(wplus, G, y, D, seeds), search(rls, G, y, D, seeds)
    assert set(a.history) == {"wplus/l1", "wplus/total", "total"}
    assert torch.allclose(a.images, b.images) and torch.allclose(
        a.history["total"], b.history["total"]
    )
    assert (a.history["wplus/l1"].min(0).values < a.history["wplus/l1"][0]).all()


def test_wplus_own_downsampler_changes_the_loss(G, problem):
    D, y, seeds = problem
    D_box = Degradation(SCALE, downsampler="box")
    shared = search(build_method("wplus", steps=1), G, y, D_box, seeds)
    own = search(build_method("wplus", steps=1, downsampler="own"), G, y, D_box, seeds)
    assert own.notes == "wplus: own downsampler (PULSE bicubic)"
    assert not torch.allclose(shared.history["total"], own.history["total"])


@pytest.mark.parametrize(
    "name, cfg",
    [
        ("pulse", dict(steps=1, fit_samples=FIT)),
        ("brgm", dict(steps=1, perceptual="off", w_avg_samples=256)),
        ("robust", dict(steps=[1, 1, 1], perceptual="off")),
    ],
)
def test_own_downsampler_runs_and_is_noted(G, problem, name, cfg):
    D, y, seeds = problem
    out = search(build_method(name, downsampler="own", **cfg), G, y, D, seeds)
    assert f"{name}: own downsampler" in out.notes and out.status == ["ok", "ok"]
