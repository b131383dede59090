"""Generic per-image loss terms (each returns ``[B]``, unweighted unless stated).

Images enter in [0, 1]; latents are W+ codes ``[B, L, w_dim]`` (a W code ``[B, w_dim]`` is
treated as one row).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def to_unit(image: Tensor) -> Tensor:
    """Generator output in [-1, 1] -> [0, 1] (no clamping: gradients stay alive)."""
    return (image + 1) / 2


def lr_l1(D: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """mean |D(x) - y| per image (RLS / RLS+ fidelity, method.md §3-4; weighted 10 there)."""
    return (D(x) - y).abs().flatten(1).mean(1)


def lr_mse(D: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """mean (D(x) - y)² per image."""
    return (D(x) - y).pow(2).flatten(1).mean(1)


def _rows(ws: Tensor) -> Tensor:
    return ws if ws.dim() == 3 else ws.unsqueeze(1)


def standardised_log_prob(prior: nn.Module, ws: Tensor) -> Tensor:
    """log p_F((w - μ)/σ) per row ``[B, L]``: the flow density of the standardised code.

    ``prior.log_prob`` is a density on raw W, which includes the Jacobian of the fixed
    standardisation (-Σ log σ); removing it gives the flow's own density, the authors'
    value (``sr_boost.py`` evaluates the flow on standardised w). Priors without a
    standardisation give their raw-W ``log_prob``.
    """
    ws = _rows(ws)
    flat = ws.reshape(-1, ws.shape[-1])
    logp = prior.log_prob(flat)
    if hasattr(prior, "standardise_log_abs_det"):
        logp = logp - prior.standardise_log_abs_det(flat)
    return logp.view(ws.shape[:2])


def flow_nll(prior: nn.Module, ws: Tensor) -> Tensor:
    """(1/L) Σ_i -log p_F((w_i - μ)/σ) per image (method.md §3)."""
    return -standardised_log_prob(prior, ws).mean(1)


def flow_pn(prior: nn.Module, ws: Tensor) -> Tensor:
    """(1/L) Σ_i (‖f((w_i - μ)/σ)‖₂ - √w_dim)² per image: keeps f(w) on the χ shell."""
    ws = _rows(ws)
    u = prior.to_gaussian(ws.reshape(-1, ws.shape[-1])).view(ws.shape)
    return (u.norm(dim=-1) - math.sqrt(ws.shape[-1])).pow(2).mean(1)


def flow_nll_and_pn(prior: nn.Module, ws: Tensor) -> tuple[Tensor, Tensor]:
    """``(flow_nll, flow_pn)`` per image from ONE pass through the flow when the prior
    offers ``log_prob_and_gaussian`` (a WFlow: about half the flow cost of an RLS step);
    otherwise the two separate terms. Same values either way."""
    if not hasattr(prior, "log_prob_and_gaussian"):
        return flow_nll(prior, ws), flow_pn(prior, ws)
    ws = _rows(ws)
    flat = ws.reshape(-1, ws.shape[-1])
    logp, u = prior.log_prob_and_gaussian(flat)
    logp = logp - prior.standardise_log_abs_det(flat)
    nll = -logp.view(ws.shape[:2]).mean(1)
    pn = (u.view(ws.shape).norm(dim=-1) - math.sqrt(ws.shape[-1])).pow(2).mean(1)
    return nll, pn


def cross_distance(ws: Tensor) -> Tensor:
    """mean_{i<j} ‖w_i - w_j‖₂ per image (the authors' cross term, method.md §3).

    Explicit pairs rather than ``torch.cdist``, whose matmul path is inexact for large
    dims; the norm's gradient at 0 (all rows equal at the w̄ start) is 0 in PyTorch.
    """
    ws = _rows(ws)
    L = ws.shape[1]
    if L < 2:
        return ws.new_zeros(ws.shape[0])
    i, j = torch.triu_indices(L, L, offset=1, device=ws.device)
    return (ws[:, i] - ws[:, j]).norm(dim=-1).mean(1)
