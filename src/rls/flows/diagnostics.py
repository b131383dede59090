"""Gaussianity diagnostics of a prior's map f (method.md §2): if f(w) ~ N(0, I_d) then
‖f(w)‖² ~ χ²(d) and every coordinate has mean 0, std 1, skew 0, excess kurtosis 0.

Pure functions: tensors in, numbers or matplotlib figures out (no pyplot state)."""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy import stats


def moments(z: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-dimension mean, std, skewness and excess kurtosis of ``z`` ``[N, d]``."""
    z = z.reshape(-1, z.shape[-1]).double()
    mean = z.mean(0)
    c = z - mean
    var = c.square().mean(0)
    std = var.sqrt()
    skew = c.pow(3).mean(0) / var.pow(1.5)
    kurt = c.pow(4).mean(0) / var.square() - 3.0
    return {"mean": mean, "std": std, "skew": skew, "kurtosis": kurt}


def gaussianity_stats(z: torch.Tensor) -> dict[str, float]:
    """Numbers summarising how close ``z = f(w)`` is to N(0, I_d).

    ``sq_norm_mean`` should be close to d, ``sq_norm_std`` to sqrt(2d); ``chi2_ks`` is the
    Kolmogorov-Smirnov distance of ‖z‖² to χ²(d); the moment errors are means over
    dimensions of |mean|, |std − 1|, |skew|, |excess kurtosis|.
    """
    z = z.reshape(-1, z.shape[-1]).detach().double().cpu()
    d = z.shape[-1]
    sq = z.square().sum(-1)
    m = moments(z)
    ks = stats.kstest(sq.numpy(), stats.chi2(d).cdf).statistic
    return {
        "w_dim": d,
        "sq_norm_mean": sq.mean().item(),
        "sq_norm_std": sq.std().item(),
        "chi2_mean": float(d),
        "chi2_std": math.sqrt(2 * d),
        "chi2_ks": float(ks),
        "abs_mean": m["mean"].abs().mean().item(),
        "abs_std_minus_1": (m["std"] - 1).abs().mean().item(),
        "abs_skew": m["skew"].abs().mean().item(),
        "abs_excess_kurtosis": m["kurtosis"].abs().mean().item(),
    }


def chi2_figure(z_by_prior: dict[str, torch.Tensor], title: str = "") -> Figure:
    """Histogram of ‖f(w)‖² for each prior against the χ²(d) density."""
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    d = next(iter(z_by_prior.values())).shape[-1]
    sqs = {k: z.detach().double().cpu().square().sum(-1).numpy() for k, z in z_by_prior.items()}
    lo = min(np.percentile(s, 0.5) for s in sqs.values())
    hi = max(np.percentile(s, 99.5) for s in sqs.values())
    lo, hi = min(lo, stats.chi2(d).ppf(0.001)), max(hi, stats.chi2(d).ppf(0.999))
    bins = np.linspace(lo, hi, 60)
    for name, s in sqs.items():
        ax.hist(s, bins=bins, density=True, histtype="step", linewidth=1.5, label=name)
    x = np.linspace(lo, hi, 400)
    ax.plot(x, stats.chi2(d).pdf(x), "k--", linewidth=1.5, label=f"χ²({d})")
    ax.set_xlabel("‖f(w)‖²")
    ax.set_ylabel("density")
    ax.set_title(title or "‖f(w)‖² on held-out w")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def moments_figure(z: torch.Tensor, title: str = "") -> Figure:
    """Per-dimension mean, std, skew and excess kurtosis of f(w), with the N(0,1) targets."""
    m = {k: v.cpu().numpy() for k, v in moments(z).items()}
    targets = {"mean": 0.0, "std": 1.0, "skew": 0.0, "kurtosis": 0.0}
    fig = Figure(figsize=(8, 5), dpi=100)
    axes = fig.subplots(2, 2).ravel()
    for ax, (name, values) in zip(axes, m.items()):
        ax.plot(values, ".", markersize=3)
        ax.axhline(targets[name], color="k", linestyle="--", linewidth=1)
        ax.set_title(name if name != "kurtosis" else "excess kurtosis", fontsize=9)
        ax.set_xlabel("dimension", fontsize=8)
    fig.suptitle(title or "per-dimension moments of f(w)")
    fig.tight_layout()
    return fig


def qq_figure(z: torch.Tensor, dims: int = 4, title: str = "") -> Figure:
    """Normal QQ plots of the first ``dims`` coordinates of f(w)."""
    z = z.reshape(-1, z.shape[-1]).detach().double().cpu().numpy()
    dims = min(dims, z.shape[-1])
    fig = Figure(figsize=(3 * dims, 3), dpi=100)
    axes = np.atleast_1d(fig.subplots(1, dims))
    probs = (np.arange(1, z.shape[0] + 1) - 0.5) / z.shape[0]
    theory = stats.norm.ppf(probs)
    for i, ax in enumerate(axes):
        ax.plot(theory, np.sort(z[:, i]), ".", markersize=2)
        ax.plot(theory, theory, "k--", linewidth=1)
        ax.set_title(f"dim {i}", fontsize=9)
        ax.set_xlabel("N(0,1) quantile", fontsize=8)
    fig.suptitle(title or "QQ of f(w) against N(0, 1)")
    fig.tight_layout()
    return fig


def nll_figure(nll_by_prior: dict[str, float], title: str = "") -> Figure:
    """Held-out NLL (nats per w) of every prior, side by side; lower is better."""
    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.add_subplot()
    names = list(nll_by_prior)
    values = [nll_by_prior[n] for n in names]
    bars = ax.bar(range(len(names)), values, color=["C0"] + ["C7"] * (len(names) - 1))
    ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=15, fontsize=8)
    ax.set_ylabel("held-out NLL (nats per w)")
    ax.set_title(title or "NLL of every prior on the same held-out w")
    fig.tight_layout()
    return fig


def nll_curve_figure(
    curve: list[dict], older: dict[str, float] | None = None, best_step: int | None = None
) -> Figure:
    """The held-out NLL after every validation of a flow's training (``curve``: dicts with
    ``step``, ``val_nll`` and ``lr``), the older priors' NLLs as horizontal lines, the best
    step marked, and the learning rate on a second axis."""
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    steps = [p["step"] for p in curve]
    ax.plot(steps, [p["val_nll"] for p in curve], color="C0", label="flow (held out)")
    values = [p["val_nll"] for p in curve]
    for i, (name, value) in enumerate((older or {}).items()):
        ax.axhline(value, color=f"C{i + 1}", linestyle="--", linewidth=1, label=name)
        values.append(value)
    if best_step is not None:
        label = f"best: step {best_step}"
        ax.axvline(best_step, color="k", linestyle=":", linewidth=1, label=label)
    if values:  # the flow's tail and the best older prior in view, not the first steps' NLL
        tail = sorted(values)[: max(3, len(values) * 3 // 4)]
        low, high = min(values), max(tail)
        ax.set_ylim(low - 0.05 * (high - low + 1), high + 0.1 * (high - low + 1))
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out NLL (nats per w)")
    if curve:
        lr_ax = ax.twinx()
        lr_ax.step(steps, [p["lr"] for p in curve], where="post", color="C7", linewidth=0.8)
        lr_ax.set_yscale("log")
        lr_ax.set_ylabel("learning rate", color="C7")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title("Held-out NLL during training (lower is better)")
    fig.tight_layout()
    return fig
