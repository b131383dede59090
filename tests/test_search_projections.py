"""ℓ1-ball and sphere projections against brute-force references."""

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from rls.search.projections import project_l1_ball, project_sphere, renormalize


def l1_projection_by_bisection(v: np.ndarray, radius: float) -> np.ndarray:
    """Reference: the projection is soft-thresholding at the θ >= 0 solving ‖·‖₁ = radius."""
    if np.abs(v).sum() <= radius:
        return v.copy()

    def excess(theta):
        return np.clip(np.abs(v) - theta, 0, None).sum() - radius

    theta = brentq(excess, 0.0, np.abs(v).max(), xtol=1e-14)
    return np.sign(v) * np.clip(np.abs(v) - theta, 0, None)


@pytest.mark.parametrize("radius", [0.1, 1.0, 5.0, 50.0])
def test_l1_projection_matches_bisection_reference(radius):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(3, 4, 16, generator=g, dtype=torch.float64) * 2
    out = project_l1_ball(v, radius)
    for row_in, row_out in zip(v.reshape(-1, 16), out.reshape(-1, 16)):
        ref = l1_projection_by_bisection(row_in.numpy(), radius)
        np.testing.assert_allclose(row_out.numpy(), ref, atol=1e-10)


def test_l1_projection_is_closest_point_in_ball():
    """No random feasible point is closer to v than the projection."""
    g = torch.Generator().manual_seed(1)
    v = torch.randn(32, generator=g, dtype=torch.float64) * 3
    p = project_l1_ball(v, 2.0)
    assert p.abs().sum() <= 2.0 + 1e-9
    cand = torch.randn(2000, 32, generator=g, dtype=torch.float64)
    cand = cand / cand.abs().sum(1, keepdim=True) * 2.0 * torch.rand(2000, 1, generator=g)
    assert ((cand - v).norm(dim=1) >= (p - v).norm() - 1e-9).all()


def test_l1_projection_rows_of_any_shape_and_per_row_radius():
    g = torch.Generator().manual_seed(2)
    v = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    radius = torch.tensor([0.5, 100.0], dtype=torch.float64)
    out = project_l1_ball(v, radius, ndim=3)
    assert out.shape == v.shape
    np.testing.assert_allclose(out[0].abs().sum().item(), 0.5, rtol=1e-9)
    torch.testing.assert_close(out[1], v[1])  # inside the ball: unchanged
    ref = l1_projection_by_bisection(v[0].flatten().numpy(), 0.5)
    np.testing.assert_allclose(out[0].flatten().numpy(), ref, atol=1e-10)


def test_l1_projection_zero_radius_gives_zero():
    v = torch.randn(4, 8)
    assert torch.equal(project_l1_ball(v, 0.0), torch.zeros_like(v))


def test_sphere_projection_sets_row_norms():
    v = torch.randn(3, 5, 7, dtype=torch.float64)
    out = project_sphere(v, 2.5)
    torch.testing.assert_close(out.norm(dim=-1), torch.full((3, 5), 2.5, dtype=torch.float64))
    torch.testing.assert_close(
        out / out.norm(dim=-1, keepdim=True), v / v.norm(dim=-1, keepdim=True)
    )


def test_renormalize_gives_zero_mean_unit_std_per_map():
    v = torch.randn(4, 1, 8, 8) * 3 + 2
    out = renormalize(v)
    torch.testing.assert_close(out.mean((1, 2, 3)), torch.zeros(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.std((1, 2, 3)), torch.ones(4))
