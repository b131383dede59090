"""rls.flows: change of variables, inverses, standardisation, checkpoints, older priors."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from zuko.transforms import MonotonicAffineTransform

from rls.flows import (
    GaussianPrior,
    LeakyDiagonalPrior,
    LeakyFullCovPrior,
    Prior,
    WFlow,
    check_compatible,
    chi2_figure,
    fit_older_priors,
    gaussianity_stats,
    load_prior,
    moments_figure,
    nll_figure,
    qq_figure,
)
from rls.flows.wflow import ElementwiseAffine

FAMILIES = ["maf_paper", "maf", "nsf", "realnvp"]


def skewed_w(n=2000, d=4, seed=0):
    """Non-Gaussian data shaped like W: a LeakyReLU(0.2) of a correlated Gaussian."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g) / math.sqrt(d) + torch.eye(d)
    v = torch.randn(n, d, generator=g) @ a.T + 0.3
    return nn.functional.leaky_relu(v, 0.2) * 2.0 - 1.0


INPUT_MAPS = [{}, {"leaky_input": True}, {"whiten": True}, {"leaky_input": True, "whiten": True}]


def small_flow(family, d=3, seed=0, **options):
    torch.manual_seed(seed)
    flow = WFlow(d, family=family, transforms=2, hidden=(16, 16), **options)
    # perturb the identity-initialised layers so every part of the map is exercised
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    w = skewed_w(d=d)
    # eval mode: maf_paper's batch-norm layers then use their (whole-sample) running statistics
    return flow.fit_standardisation(w).set_running_statistics(w).double().eval()


@pytest.mark.parametrize("options", INPUT_MAPS)
@pytest.mark.parametrize("family", FAMILIES)
def test_log_prob_is_change_of_variables(family, options):
    """log p(w) = log N(f(w); 0, I) + log|det ∂f/∂w| with f including standardisation."""
    flow = small_flow(family, **options)
    w = skewed_w(n=5, d=3, seed=1).double()
    for wi in w:
        jac = torch.autograd.functional.jacobian(flow.to_gaussian, wi)
        z = flow.to_gaussian(wi)
        expected = stats.norm.logpdf(z.detach().numpy()).sum() + torch.linalg.slogdet(jac)[1]
        assert flow.log_prob(wi).item() == pytest.approx(expected.item(), abs=1e-8)


def test_affine_only_flow_matches_analytic_gaussian():
    """With the MADE outputs zeroed, the flow is affine and p(w) a known diagonal Gaussian."""
    d = 4
    flow = WFlow(d, transforms=1, hidden=(8, 8)).double()
    with torch.no_grad():
        last = [m for m in flow.modules() if isinstance(m, nn.Linear)][-1]
        last.weight.zero_()
        last.bias.zero_()
        flow.mu.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        flow.sigma.copy_(torch.tensor([2.0, 0.5, 1.0, 3.0]))
        norm = next(m for m in flow.modules() if isinstance(m, ElementwiseAffine))
        norm.shift.copy_(torch.tensor([0.3, -0.2, 0.0, 1.0]))
        norm.log_scale.copy_(torch.tensor([0.1, -0.3, 0.2, 0.0]))
    # z = s·(w − μ)/σ + b  =>  w ~ N(μ − σ b / s, (σ / s)²), s = the affine's scale
    s = MonotonicAffineTransform(norm.shift, norm.log_scale).scale.detach()
    loc = flow.mu - flow.sigma * norm.shift.detach() / s
    scale = flow.sigma / s
    w = torch.randn(10, d, dtype=torch.float64) * 2
    expected = stats.norm.logpdf(w.numpy(), loc.numpy(), scale.numpy()).sum(-1)
    np.testing.assert_allclose(flow.log_prob(w).detach().numpy(), expected, atol=1e-10)


@pytest.mark.parametrize("options", INPUT_MAPS)
@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_through_the_gaussian(family, options):
    flow = small_flow(family, d=5, **options)
    w = skewed_w(n=64, d=5, seed=2).double().reshape(4, 16, 5)  # W+ style leading dims
    z = flow.to_gaussian(w)
    assert z.shape == w.shape and flow.log_prob(w).shape == (4, 16)
    log_p, z_once = flow.log_prob_and_gaussian(w)
    torch.testing.assert_close(log_p, flow.log_prob(w))
    torch.testing.assert_close(z_once, z)
    torch.testing.assert_close(flow.from_gaussian(z), w, atol=1e-6, rtol=1e-6)
    assert flow.sample(7).shape == (7, 5)


def test_standardisation_fits_and_enters_the_density():
    w = skewed_w(n=4000, d=4)
    flow = WFlow(4, transforms=2, hidden=(16, 16)).fit_standardisation(w)
    x = flow.standardise(w)
    torch.testing.assert_close(x.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(0), torch.ones(4), atol=1e-5, rtol=0)
    # rescaling the data and refitting μ, σ shifts log p by exactly −Σ log a (Jacobian)
    a, b = torch.tensor([2.0, 0.5, 3.0, 1.5]), torch.tensor([1.0, -2.0, 0.0, 4.0])
    other = WFlow(4, transforms=2, hidden=(16, 16))
    other.load_state_dict(flow.state_dict())
    other.fit_standardisation(w * a + b)
    torch.testing.assert_close(
        other.log_prob(w[:50] * a + b), flow.log_prob(w[:50]) - a.log().sum(), atol=1e-4, rtol=0
    )


def test_whitening_decorrelates_the_standardised_input():
    w = skewed_w(n=4000, d=4)
    flow = WFlow(4, transforms=1, hidden=(8,), leaky_input=True, whiten=True)
    x = flow.fit_standardisation(w).standardise(w)
    torch.testing.assert_close(torch.cov(x.T), torch.eye(4), atol=1e-4, rtol=0)


def test_wrong_w_dim_input_is_a_clear_error():
    flow = WFlow(4, transforms=1, hidden=(8,))
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\].*\(2, 5\)"):
        flow.log_prob(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="unknown flow family 'glow'"):
        WFlow(4, family="glow")


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_gives_identical_log_prob(tmp_path, family):
    flow = small_flow(family, d=6, leaky_input=family == "nsf", whiten=family == "maf").float()
    flow.generator = "tiny"
    path = flow.save(tmp_path / "flow.safetensors")
    loaded = WFlow.load(path)
    w = skewed_w(n=32, d=6, seed=3)
    assert torch.equal(loaded.log_prob(w), flow.eval().log_prob(w))
    assert loaded.config() == flow.config() and loaded.generator == "tiny"
    assert isinstance(load_prior(path), WFlow)


def test_checkpoint_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        WFlow.load(missing)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="junk.safetensors"):
        WFlow.load(junk)
    gauss = GaussianPrior(3).fit(torch.randn(100, 3)).save(tmp_path / "g.safetensors")
    with pytest.raises(ValueError, match="g.safetensors.*GaussianPrior, not a WFlow"):
        WFlow.load(gauss)


def test_w_dim_mismatch_with_generator_names_file_and_dims(tmp_path):
    from rls.generators import load_generator

    G = load_generator("tiny")
    path = WFlow(G.w_dim + 1, transforms=1, hidden=(8,)).save(tmp_path / "flow.safetensors")
    with pytest.raises(
        ValueError, match=rf"flow.safetensors.*w_dim={G.w_dim + 1}.*w_dim={G.w_dim}"
    ):
        WFlow.load(path, generator=G)
    ok = WFlow(G.w_dim, transforms=1, hidden=(8,))
    check_compatible(ok, G)  # no error


def test_gaussian_prior_matches_scipy():
    w = skewed_w(n=3000, d=5).double()
    prior = GaussianPrior(5).double().fit(w)
    resid = w - w.mean(0)
    assert prior.std.item() == pytest.approx(resid.square().mean().sqrt().item())
    assert prior.vector_std.item() == pytest.approx(resid.square().sum(-1).mean().sqrt().item())
    ref = stats.multivariate_normal(w.mean(0).numpy(), prior.std.item() ** 2 * np.eye(5))
    np.testing.assert_allclose(prior.log_prob(w[:20]).numpy(), ref.logpdf(w[:20].numpy()))


def test_leaky_diagonal_prior_matches_scipy_with_leaky_jacobian():
    w = skewed_w(n=3000, d=5).double()
    prior = LeakyDiagonalPrior(5).double().fit(w)
    v = torch.where(w > 0, w, 5 * w)
    torch.testing.assert_close(prior.mu, v.mean(0))
    torch.testing.assert_close(prior.sigma, v.std(0))
    logn = stats.norm.logpdf(v[:20].numpy(), prior.mu.numpy(), prior.sigma.numpy()).sum(-1)
    expected = logn + (w[:20] < 0).sum(-1).numpy() * math.log(5)
    np.testing.assert_allclose(prior.log_prob(w[:20]).numpy(), expected)


def test_leaky_fullcov_prior_matches_scipy_and_whitens():
    w = skewed_w(n=5000, d=5).double()
    prior = LeakyFullCovPrior(5, jitter=0.0).double().fit(w)
    v = torch.where(w > 0, w, 5 * w)
    ref = stats.multivariate_normal(v.mean(0).numpy(), np.cov(v.numpy().T))
    expected = ref.logpdf(v[:20].numpy()) + (w[:20] < 0).sum(-1).numpy() * math.log(5)
    np.testing.assert_allclose(prior.log_prob(w[:20]).numpy(), expected, rtol=1e-10)
    z = prior.to_gaussian(w)
    torch.testing.assert_close(torch.cov(z.T), torch.eye(5, dtype=z.dtype), atol=1e-8, rtol=0)


@pytest.mark.parametrize("cls", [GaussianPrior, LeakyDiagonalPrior, LeakyFullCovPrior])
def test_older_priors_recover_their_own_samples_and_round_trip_files(tmp_path, cls):
    w = skewed_w(n=4000, d=4)
    prior = cls(4).fit(w)
    refit = cls(4).fit(prior.sample(200_000, generator=torch.Generator().manual_seed(0)))
    for name, buf in prior.named_buffers():
        torch.testing.assert_close(dict(refit.named_buffers())[name], buf, atol=0.05, rtol=0.05)
    loaded = Prior.load(prior.save(tmp_path / "p.safetensors"))
    assert type(loaded) is cls
    assert torch.equal(loaded.log_prob(w[:10]), prior.log_prob(w[:10]))


def test_fit_older_priors_orders_by_expressiveness():
    """On leaky-correlated data: full covariance > diagonal > one scalar std (held-out)."""
    train = skewed_w(n=5000, d=6, seed=0)
    held_out = skewed_w(n=7000, d=6, seed=0)[5000:]
    nll = {k: p.nll(held_out).item() for k, p in fit_older_priors(train).items()}
    assert nll["wulff_leaky_fullcov"] < nll["pulse_leaky_diagonal"] < nll["brgm_gaussian"]


def test_gaussianity_stats_and_figures():
    z = torch.randn(4000, 16, generator=torch.Generator().manual_seed(0))
    s = gaussianity_stats(z)
    assert s["sq_norm_mean"] == pytest.approx(16, rel=0.03)
    assert s["sq_norm_std"] == pytest.approx(math.sqrt(32), rel=0.1)
    assert s["chi2_ks"] < 0.03 and s["abs_skew"] < 0.1 and s["abs_std_minus_1"] < 0.05
    skewed = gaussianity_stats(torch.exp(z))
    assert skewed["chi2_ks"] > 0.5 and skewed["abs_skew"] > 1
    for fig in (
        chi2_figure({"flow": z, "other": 1.5 * z}),
        moments_figure(z),
        qq_figure(z, dims=3),
        nll_figure({"flow": 10.0, "brgm_gaussian": 20.0}),
    ):
        assert fig.axes


def test_sample_w_streams_seeded_mapping_samples():
    from rls.flows import iter_w, sample_w
    from rls.generators import load_generator

    G = load_generator("tiny")
    w = sample_w(G, 300, seed=7, batch_size=128)
    assert w.shape == (300, G.w_dim)
    assert torch.equal(w, sample_w(G, 300, seed=7, batch_size=128))
    assert not torch.allclose(w, sample_w(G, 300, seed=8, batch_size=128))
    assert [b.shape[0] for b in iter_w(G, 300, seed=7, batch_size=128)] == [128, 128, 44]
    # the rows are the mapping's output for z drawn from that seed
    z = torch.randn(128, G.z_dim, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(w[:128], G.mapping(z, None)[:, 0])
