"""The W-space normalizing flow of RLS (method.md §2): per-dimension standardisation
followed by a zuko flow, p(w) = p_F((w − μ)/σ) · Π 1/σ_i.

Two optional fixed (non-learned) input maps, both off by default (the authors' flow):
``leaky_input`` models v = LeakyReLU(5)(w), undoing the mapping network's last
LeakyReLU(0.2) whose kink gives W's density a jump at 0 in every coordinate that a
smooth flow cannot represent; ``whiten`` decorrelates the standardised input with the
inverse Cholesky factor of its correlation matrix, so the untrained flow already equals
a full-covariance Gaussian and training only has to learn what is not linear.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from zuko.distributions import DiagNormal
from zuko.flows import GeneralCouplingTransform, MaskedAutoregressiveTransform
from zuko.lazy import Flow, LazyTransform, UnconditionalDistribution
from zuko.transforms import DependentTransform, MonotonicAffineTransform, MonotonicRQSTransform

from .base import Prior, flatten_w
from .gaussian_priors import leaky_degaussianize, leaky_gaussianize, leaky_log_abs_det
from .paper_maf import BatchNormFlow, paper_maf_layers, set_running_statistics

# maf_paper: exactly the authors' layers (rls/flows/paper_maf.py); the others are zuko's.
FAMILIES = ("maf_paper", "maf", "nsf", "realnvp")


class ElementwiseAffine(LazyTransform):
    """A learnable per-dimension affine y = exp(a)·x + b, initialised to the identity.

    The normalisation layer of the zuko families: the authors' batch-norm flow layer
    (family ``maf_paper``) is, at eval time, such an affine (from running statistics), but
    trains on batch statistics; this one learns the affine directly, so training sees the
    same per-sample density as evaluation.
    """

    def __init__(self, features: int):
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(features))
        self.log_scale = nn.Parameter(torch.zeros(features))

    def forward(self, c: torch.Tensor | None = None):
        return DependentTransform(MonotonicAffineTransform(self.shift, self.log_scale), 1)


def build_transforms(
    w_dim: int, family: str, transforms: int, hidden: tuple[int, ...], norm_layers: bool, bins: int
) -> list[LazyTransform]:
    """[block, norm]·transforms; autoregressive orders alternate ascending/descending
    (the authors' order reversal), coupling masks alternate parity."""
    if family not in FAMILIES:
        raise ValueError(f"unknown flow family {family!r}; choose one of {FAMILIES}")
    if family == "maf_paper":
        if len(hidden) != 2 or hidden[0] != hidden[1]:
            raise ValueError(
                f"flow family 'maf_paper' (the authors' MADE) has two hidden layers of one "
                f"width, got hidden={list(hidden)}"
            )
        layers = paper_maf_layers(w_dim, transforms, hidden[0])
        return layers if norm_layers else [t for t in layers if not isinstance(t, BatchNormFlow)]
    orders = [torch.arange(w_dim), torch.arange(w_dim).flip(0)]
    layers: list[LazyTransform] = []
    for i in range(transforms):
        if family == "maf":
            block = MaskedAutoregressiveTransform(
                features=w_dim, order=orders[i % 2], hidden_features=hidden
            )
        elif family == "nsf":
            block = MaskedAutoregressiveTransform(
                features=w_dim,
                order=orders[i % 2],
                univariate=partial(MonotonicRQSTransform, slope=1e-3),
                shapes=[(bins,), (bins,), (bins - 1,)],
                hidden_features=hidden,
            )
        else:  # realnvp: affine coupling, alternate halves
            block = GeneralCouplingTransform(
                features=w_dim, mask=torch.arange(w_dim) % 2 == i % 2, hidden_features=hidden
            )
        layers.append(block)
        if norm_layers:
            layers.append(ElementwiseAffine(w_dim))
    return layers


class WFlow(Prior):
    """Density of w = mapping(z) as a normalizing flow on standardised W.

    The authors' flow is ``family="maf_paper"`` (configs/flow/maf_paper.yaml, what the
    entry points train by default): MAF, 5 transforms, MADE hidden (1024, 1024) with ReLU,
    a batch-norm flow layer and an order reversal after each. The constructor's default
    family ``maf`` is zuko's MAF with a learned affine in place of the batch norm.
    ``log_prob`` is in raw W: the standardisation Jacobian −Σ log σ_i is included (the
    authors' code leaves out this constant). Use it in eval mode: in training mode the
    batch-norm layers of ``maf_paper`` normalise with the batch's statistics.
    """

    kind = "wflow"

    def __init__(
        self,
        w_dim: int,
        family: str = "maf",
        transforms: int = 5,
        hidden: tuple[int, ...] | list[int] = (1024, 1024),
        norm_layers: bool = True,
        bins: int = 8,
        leaky_input: bool = False,
        whiten: bool = False,
        generator: str | None = None,
    ):
        super().__init__(w_dim)
        self.family = family
        self.transforms = int(transforms)
        self.hidden = tuple(int(h) for h in hidden)
        self.norm_layers = bool(norm_layers)
        self.bins = int(bins)
        self.leaky_input = bool(leaky_input)
        self.whiten = bool(whiten)
        self.generator = generator  # name of the generator the flow was trained for
        self.register_buffer("mu", torch.zeros(self.w_dim))
        self.register_buffer("sigma", torch.ones(self.w_dim))
        # lower-triangular L⁻¹ (identity unless ``whiten``)
        self.register_buffer("whitening", torch.eye(self.w_dim))
        base = UnconditionalDistribution(
            DiagNormal, torch.zeros(self.w_dim), torch.ones(self.w_dim), buffer=True
        )
        layers = build_transforms(
            self.w_dim, family, self.transforms, self.hidden, self.norm_layers, self.bins
        )
        self.flow = Flow(layers, base)

    def config(self) -> dict:
        return {
            "w_dim": self.w_dim,
            "family": self.family,
            "transforms": self.transforms,
            "hidden": list(self.hidden),
            "norm_layers": self.norm_layers,
            "bins": self.bins,
            "leaky_input": self.leaky_input,
            "whiten": self.whiten,
            "generator": self.generator,
        }

    @torch.no_grad()
    def fit_standardisation(self, w: torch.Tensor) -> WFlow:
        """Set μ, σ to the per-dimension mean and std of samples ``w`` ``[..., w_dim]``
        (of v = LeakyReLU(5)(w) with ``leaky_input``), and the whitening with ``whiten``."""
        v = flatten_w(self.check_w(w), self.w_dim).to(self.mu)
        if self.leaky_input:
            v = leaky_gaussianize(v)
        self.mu.copy_(v.mean(0))
        self.sigma.copy_(v.std(0).clamp_min(1e-6))
        if self.whiten:
            x = ((v - self.mu) / self.sigma).double()
            corr = torch.cov(x.T) + 1e-6 * torch.eye(self.w_dim, dtype=x.dtype, device=x.device)
            chol = torch.linalg.cholesky(corr)
            eye = torch.eye(self.w_dim, dtype=x.dtype, device=x.device)
            self.whitening.copy_(torch.linalg.solve_triangular(chol, eye, upper=False))
        return self

    def set_running_statistics(self, w: torch.Tensor) -> WFlow:
        """Batch-norm flow layers (``maf_paper``): running statistics := those of the whole
        sample ``w`` (the authors' recipe, after every training epoch); else a no-op."""
        set_running_statistics(self.flow, self.standardise(flatten_w(self.check_w(w), self.w_dim)))
        return self

    def standardise(self, w: torch.Tensor) -> torch.Tensor:
        """The fixed input map: [LeakyReLU(5)], (· − μ)/σ, [whitening]."""
        v = leaky_gaussianize(self.check_w(w)) if self.leaky_input else self.check_w(w)
        x = (v - self.mu) / self.sigma
        return x @ self.whitening.T if self.whiten else x

    def standardise_log_abs_det(self, w: torch.Tensor) -> torch.Tensor:
        """log|det ∂standardise(w)/∂w|, shape ``w.shape[:-1]``."""
        ladj = -self.sigma.log().sum() + self.whitening.diagonal().log().sum()
        ladj = ladj.expand(w.shape[:-1])
        return ladj + leaky_log_abs_det(w) if self.leaky_input else ladj

    def log_prob(self, w: torch.Tensor) -> torch.Tensor:
        """log p(w) in raw W, shape ``w.shape[:-1]``."""
        return self.flow().log_prob(self.standardise(w)) + self.standardise_log_abs_det(w)

    def log_prob_and_gaussian(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(w) and f((w − μ)/σ) from one pass through the flow."""
        dist = self.flow()
        z, ladj = dist.transform.call_and_ladj(self.standardise(w))
        return dist.base.log_prob(z) + ladj + self.standardise_log_abs_det(w), z

    def to_gaussian(self, w: torch.Tensor) -> torch.Tensor:
        """f((w − μ)/σ): the data-to-Gaussian map used by RLS's ‖f‖ term."""
        return self.flow().transform(self.standardise(w))

    def from_gaussian(self, z: torch.Tensor) -> torch.Tensor:
        """The inverse f⁻¹ back to raw W (``passes`` sequential sweeps for MAF/NSF)."""
        x = self.flow().transform.inv(z)
        if self.whiten:
            flat = x.reshape(-1, self.w_dim).T
            x = torch.linalg.solve_triangular(self.whitening, flat, upper=False).T.reshape(x.shape)
        v = x * self.sigma + self.mu
        return leaky_degaussianize(v) if self.leaky_input else v

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.w_dim, generator=generator).to(self.mu)
        return self.from_gaussian(z)

    def extra_repr(self) -> str:
        return (
            f"w_dim={self.w_dim}, family={self.family}, transforms={self.transforms}, "
            f"hidden={self.hidden}, norm_layers={self.norm_layers}, "
            f"leaky_input={self.leaky_input}, whiten={self.whiten}"
        )
