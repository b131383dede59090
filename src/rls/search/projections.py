"""Projections applied after an optimiser step (method.md §4, §5).

Both work on batches of rows of any shape: the last ``ndim`` dimensions of ``v`` form one
row, every leading dimension indexes rows (e.g. ``[B, L, w_dim]`` with ``ndim=1`` projects
each W+ row of each image on its own).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _flatten_rows(v: Tensor, ndim: int) -> Tensor:
    return v.reshape(*v.shape[: v.dim() - ndim], -1)


def project_l1_ball(v: Tensor, radius: float | Tensor, ndim: int = 1) -> Tensor:
    """Euclidean projection of each row onto the ℓ1 ball ``{x : ‖x‖₁ <= radius}``.

    The sort-based algorithm of Duchi et al. (ICML 2008), vectorised over rows: with u the
    sorted magnitudes and ρ the number of k with u_k > (Σ_{j<=k} u_j - radius)/k, the
    projection is sign(v)·max(|v| - θ, 0), θ = (Σ_{j<=ρ} u_j - radius)/ρ. Rows already
    inside the ball are returned unchanged. ``radius`` is a scalar or broadcasts against
    the row dimensions (``v.shape[:-ndim]``).
    """
    rows = _flatten_rows(v, ndim)
    n = rows.shape[-1]
    radius = torch.as_tensor(radius, dtype=rows.dtype, device=rows.device)
    radius = radius.expand(rows.shape[:-1]).unsqueeze(-1)  # [..., 1]
    mag = rows.abs()
    u, _ = torch.sort(mag, dim=-1, descending=True)
    cssv = u.cumsum(-1)
    k = torch.arange(1, n + 1, dtype=rows.dtype, device=rows.device)
    rho = (u * k > cssv - radius).sum(-1, keepdim=True).clamp_min(1)
    theta = (cssv.gather(-1, rho - 1) - radius) / rho.to(rows.dtype)
    projected = rows.sign() * (mag - theta).clamp_min(0)
    inside = mag.sum(-1, keepdim=True) <= radius
    out = torch.where(inside, rows, projected)
    out = torch.where(radius <= 0, torch.zeros_like(out), out)
    return out.reshape(v.shape)


def project_sphere(v: Tensor, norm: float | Tensor, ndim: int = 1, eps: float = 1e-12) -> Tensor:
    """Rescale each row to Euclidean norm ``norm`` (PULSE's sphere constraint)."""
    rows = _flatten_rows(v, ndim)
    norm = torch.as_tensor(norm, dtype=rows.dtype, device=rows.device)
    norm = norm.expand(rows.shape[:-1]).unsqueeze(-1)
    out = rows * (norm / rows.norm(dim=-1, keepdim=True).clamp_min(eps))
    return out.reshape(v.shape)


def renormalize(v: Tensor, ndim: int = 3, eps: float = 1e-8) -> Tensor:
    """Zero mean, unit std per row (RLS+ noise maps after every step, method.md §4)."""
    rows = _flatten_rows(v, ndim)
    rows = rows - rows.mean(-1, keepdim=True)
    rows = rows / rows.std(-1, keepdim=True).clamp_min(eps)
    return rows.reshape(v.shape)
