"""The peers' loss terms and projections on hand-checkable inputs (method.md §5)."""

import math

import pytest
import torch
import torch.nn.functional as F

from rls.search.peer_losses import (
    brgm_cosine_prior,
    brgm_perceptual,
    brgm_w_prior,
    floored_mse,
    gaussianised_to_w,
    geocross,
    multiscale_lpips,
    normalize_grad_rows,
)


def pixel_mse(a, b):
    """A stand-in perceptual distance with a known value: per-image pixel MSE."""
    return (a - b).pow(2).flatten(1).mean(1)


def test_geocross_identical_rows_is_zero():
    w = torch.randn(2, 1, 16).expand(2, 6, 16)
    assert torch.allclose(geocross(w), torch.zeros(2), atol=1e-6)


def test_geocross_orthogonal_rows_known_value():
    L, D = 4, 16
    rows = 3.0 * torch.eye(D)[:L]  # orthogonal, equal norm: every off-diagonal angle is π/2
    expected = D / 8 * (1 - 1 / L) * (math.pi / 2) ** 2
    out = geocross(rows[None])
    assert out.shape == (1,)
    assert out.item() == pytest.approx(expected, rel=1e-5)


def test_geocross_single_row_and_per_image():
    assert geocross(torch.randn(3, 1, 8)).eq(0).all()
    same = torch.ones(1, 3, 8)
    ortho = torch.eye(8)[:3][None]
    out = geocross(torch.cat([same, ortho]))
    assert out[0].item() == pytest.approx(0.0, abs=1e-6)
    assert out[1].item() == pytest.approx(8 / 8 * (2 / 3) * (math.pi / 2) ** 2, rel=1e-5)


def test_floored_mse_is_flat_below_eps():
    target = torch.zeros(2, 3, 4, 4)
    pred = torch.zeros(2, 3, 4, 4)
    pred[1] = 0.5
    pred.requires_grad_(True)
    out = floored_mse(pred, target, eps=2e-3)
    assert out.tolist() == pytest.approx([2e-3, 0.25])
    out.sum().backward()
    assert pred.grad[0].abs().sum() == 0 and pred.grad[1].abs().sum() > 0


def test_gaussianised_map_inverts_leaky_relu_5():
    mu, sigma = torch.randn(8), torch.rand(8) + 0.5
    x = torch.randn(5, 8)
    w = gaussianised_to_w(x, mu, sigma)
    assert torch.allclose(F.leaky_relu(w, 5.0), sigma * x + mu, atol=1e-5)


def test_brgm_w_prior_values():
    mean = torch.tensor([1.0, 2.0])
    ws = mean.expand(2, 3, 2).clone()
    ws[1] += 4.0
    out = brgm_w_prior(ws, mean, torch.tensor(2.0))
    assert out.tolist() == pytest.approx([0.0, 4.0])


def test_brgm_cosine_prior_values_per_image():
    same = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    ortho = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    out = brgm_cosine_prior(torch.stack([same, ortho, opposite]))
    # ordered pairs (0,1) and (1,0) each contribute |1 - cos|; the diagonal contributes 0
    assert out.tolist() == pytest.approx([0.0, 2.0, 4.0], abs=1e-6)


def test_brgm_perceptual_is_distance_over_feature_count():
    y = torch.rand(2, 3, 8, 8)
    pred = y.clone()
    pred[1] += 0.1
    out = brgm_perceptual(pred, y, pixel_mse, size=32, feature_count=10)
    # nearest enlargement keeps the pixel MSE
    assert out.tolist() == pytest.approx([0.0, 0.01 / 10], rel=1e-4, abs=1e-9)


def test_multiscale_lpips_levels_and_coarse_l1():
    calls = []

    def counting(a, b):
        calls.append(a.shape[-1])
        return pixel_mse(a, b)

    y = torch.rand(2, 3, 64, 64)
    pred = y + 0.2
    out = multiscale_lpips(pred, y, counting, min_res=16)
    assert calls == [64, 32]  # 16 is not above min_res: L1 only there
    assert out.tolist() == pytest.approx([0.04 + 0.04 + 0.1 * 0.2] * 2, rel=1e-4)
    no_lpips = multiscale_lpips(pred, y, None, min_res=16)
    assert no_lpips.tolist() == pytest.approx([0.02, 0.02], rel=1e-4)
    tiny = multiscale_lpips(pred[:, :, :8, :8], y[:, :, :8, :8], counting, min_res=16)
    assert len(calls) == 2 and tiny.tolist() == pytest.approx([0.02, 0.02], rel=1e-4)


def test_row_normalized_gradient_with_sgd_moves_each_row_by_lr():
    p = torch.zeros(2, 3, 4, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.05)
    weights = torch.randn(2, 3, 4)
    weights[1, 2] = 0  # a row with zero gradient stays put (NaN -> 0)
    (normalize_grad_rows(p) * weights).sum().backward()
    opt.step()
    step = p.detach().norm(dim=-1)
    expected = torch.full((2, 3), 0.05)
    expected[1, 2] = 0
    assert torch.allclose(step, expected, atol=1e-6)
    assert torch.allclose(F.normalize(-p[0, 0].detach(), dim=0), F.normalize(weights[0, 0], dim=0))
