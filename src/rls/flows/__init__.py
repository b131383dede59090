"""Priors on StyleGAN's W space (method.md §2): the RLS normalizing flow and the older
Gaussianizations it is compared with, all with one interface (docs/interfaces.md)."""

from .base import Prior, check_compatible, read_prior_file
from .diagnostics import (
    chi2_figure,
    gaussianity_stats,
    moments,
    moments_figure,
    nll_figure,
    qq_figure,
)
from .gaussian_priors import (
    OLDER_PRIORS,
    GaussianPrior,
    LeakyDiagonalPrior,
    LeakyFullCovPrior,
    fit_older_priors,
    leaky_gaussianize,
)
from .sampling import iter_w, sample_w
from .wflow import FAMILIES, WFlow


def load_prior(path, generator=None, map_location="cpu") -> Prior:
    """Load any saved prior (flow or older), checking ``w_dim`` against ``generator``."""
    return Prior.load(path, generator=generator, map_location=map_location)


__all__ = [
    "FAMILIES",
    "OLDER_PRIORS",
    "GaussianPrior",
    "LeakyDiagonalPrior",
    "LeakyFullCovPrior",
    "Prior",
    "WFlow",
    "check_compatible",
    "chi2_figure",
    "fit_older_priors",
    "gaussianity_stats",
    "iter_w",
    "leaky_gaussianize",
    "load_prior",
    "moments",
    "moments_figure",
    "nll_figure",
    "qq_figure",
    "read_prior_file",
    "sample_w",
]
