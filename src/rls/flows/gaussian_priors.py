"""The older Gaussianizations of W that the flow is compared with (method.md §2).

All three are fitted in closed form (maximum likelihood) from mapping samples and keep
the ``Prior`` interface, so their held-out NLLs compare directly with the flow's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Prior, flatten_w

LEAKY_SLOPE = 5.0  # PULSE/ILO's inverse of the mapping network's LeakyReLU(0.2)


def leaky_gaussianize(w: torch.Tensor) -> torch.Tensor:
    """v = LeakyReLU(negative_slope=5)(w): undoes the last LeakyReLU(0.2) of the mapping."""
    return F.leaky_relu(w, LEAKY_SLOPE)


def leaky_degaussianize(v: torch.Tensor) -> torch.Tensor:
    """The inverse map w = LeakyReLU(0.2)(v)."""
    return F.leaky_relu(v, 1.0 / LEAKY_SLOPE)


def leaky_log_abs_det(w: torch.Tensor) -> torch.Tensor:
    """log|det dv/dw| of the leaky map: log 5 for every negative coordinate."""
    return (w < 0).to(w.dtype).sum(-1) * math.log(LEAKY_SLOPE)


class GaussianPrior(Prior):
    """BRGM: N(w̄, s² I) with one scalar std s (the isotropic maximum-likelihood fit).

    BRGM's regulariser divides by the projector's ``w_std`` = sqrt(E‖w − w̄‖²), which is
    ``vector_std`` = s·sqrt(w_dim).
    """

    kind = "gaussian"

    def __init__(self, w_dim: int):
        super().__init__(w_dim)
        self.register_buffer("mean", torch.zeros(self.w_dim))
        self.register_buffer("std", torch.ones(()))

    @torch.no_grad()
    def fit(self, w: torch.Tensor) -> GaussianPrior:
        w = flatten_w(self.check_w(w), self.w_dim).to(self.mean)
        self.mean.copy_(w.mean(0))
        self.std.copy_((w - self.mean).square().mean().sqrt())
        return self

    @property
    def vector_std(self) -> torch.Tensor:
        return self.std * math.sqrt(self.w_dim)

    def to_gaussian(self, w: torch.Tensor) -> torch.Tensor:
        return (self.check_w(w) - self.mean) / self.std

    def log_prob(self, w: torch.Tensor) -> torch.Tensor:
        z = self.to_gaussian(w)
        return -0.5 * z.square().sum(-1) - self.w_dim * (
            self.std.log() + 0.5 * math.log(2 * math.pi)
        )

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(n, self.w_dim, generator=generator).to(self.mean)
        return self.mean + self.std * eps


class LeakyDiagonalPrior(Prior):
    """PULSE / ILO: v = LeakyReLU(5)(w) ~ N(mu, diag(sigma²)).

    ``mu`` and ``sigma`` live in the Gaussianised space v, as PULSE's search needs them.
    """

    kind = "leaky_diagonal"

    def __init__(self, w_dim: int):
        super().__init__(w_dim)
        self.register_buffer("mu", torch.zeros(self.w_dim))
        self.register_buffer("sigma", torch.ones(self.w_dim))

    @torch.no_grad()
    def fit(self, w: torch.Tensor) -> LeakyDiagonalPrior:
        v = leaky_gaussianize(flatten_w(self.check_w(w), self.w_dim).to(self.mu))
        self.mu.copy_(v.mean(0))
        self.sigma.copy_(v.std(0).clamp_min(1e-8))
        return self

    def to_gaussian(self, w: torch.Tensor) -> torch.Tensor:
        return (leaky_gaussianize(self.check_w(w)) - self.mu) / self.sigma

    def log_prob(self, w: torch.Tensor) -> torch.Tensor:
        z = self.to_gaussian(w)
        log_n = -0.5 * z.square().sum(-1) - self.sigma.log().sum()
        return log_n - 0.5 * self.w_dim * math.log(2 * math.pi) + leaky_log_abs_det(w)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(n, self.w_dim, generator=generator).to(self.mu)
        return leaky_degaussianize(self.mu + self.sigma * eps)


class LeakyFullCovPrior(Prior):
    """Wulff & Torralba 2020: v = LeakyReLU(5)(w) ~ N(mu, Σ), Σ = L Lᵀ (Cholesky)."""

    kind = "leaky_fullcov"

    def __init__(self, w_dim: int, jitter: float = 1e-6):
        super().__init__(w_dim)
        self.jitter = float(jitter)
        self.register_buffer("mu", torch.zeros(self.w_dim))
        self.register_buffer("scale_tril", torch.eye(self.w_dim))

    def config(self) -> dict:
        return {"w_dim": self.w_dim, "jitter": self.jitter}

    @torch.no_grad()
    def fit(self, w: torch.Tensor) -> LeakyFullCovPrior:
        v = leaky_gaussianize(
            flatten_w(self.check_w(w), self.w_dim).to(self.mu.device, torch.float64)
        )
        cov = torch.cov(v.T)
        # jitter relative to the mean variance keeps the Cholesky defined for rank-poor fits
        cov = cov + self.jitter * cov.diagonal().mean() * torch.eye(self.w_dim, dtype=cov.dtype)
        self.mu.copy_(v.mean(0))
        self.scale_tril.copy_(torch.linalg.cholesky(cov))
        return self

    def to_gaussian(self, w: torch.Tensor) -> torch.Tensor:
        """Whitening L⁻¹(v − mu)."""
        d = leaky_gaussianize(self.check_w(w)) - self.mu
        flat = d.reshape(-1, self.w_dim).T
        z = torch.linalg.solve_triangular(self.scale_tril, flat, upper=False)
        return z.T.reshape(d.shape)

    def log_prob(self, w: torch.Tensor) -> torch.Tensor:
        z = self.to_gaussian(w)
        log_det = self.scale_tril.diagonal().log().sum()
        log_n = -0.5 * z.square().sum(-1) - log_det - 0.5 * self.w_dim * math.log(2 * math.pi)
        return log_n + leaky_log_abs_det(w)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(n, self.w_dim, generator=generator).to(self.mu)
        return leaky_degaussianize(self.mu + eps @ self.scale_tril.T)


OLDER_PRIORS: dict[str, type[Prior]] = {
    "brgm_gaussian": GaussianPrior,
    "pulse_leaky_diagonal": LeakyDiagonalPrior,
    "wulff_leaky_fullcov": LeakyFullCovPrior,
}


def fit_older_priors(w: torch.Tensor) -> dict[str, Prior]:
    """Every older prior fitted on the same samples ``w`` ``[N, w_dim]``."""
    return {name: cls(w.shape[-1]).fit(w) for name, cls in OLDER_PRIORS.items()}
