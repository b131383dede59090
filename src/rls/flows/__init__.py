"""Priors on StyleGAN's W space (method.md §2): the RLS normalizing flow and the older
Gaussianizations it is compared with, all with one interface (docs/interfaces.md)."""

from .authors_io import load_authors_flow
from .base import Prior, check_compatible, read_prior_file
from .diagnostics import (
    chi2_figure,
    gaussianity_stats,
    moments,
    moments_figure,
    nll_curve_figure,
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


def load_prior(path, generator=None, map_location="cpu", stats=None) -> Prior:
    """Load any saved prior (flow or older), checking ``w_dim`` against ``generator``.

    With ``stats`` (the authors' ``--nf_stat`` pickle of μ/σ), ``path`` is a flow checkpoint
    of the authors' code (their ``best_model.pth``), read by ``load_authors_flow``."""
    if stats is not None:
        return load_authors_flow(path, stats, generator=generator, map_location=map_location)
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
    "load_authors_flow",
    "load_prior",
    "moments",
    "moments_figure",
    "nll_curve_figure",
    "nll_figure",
    "qq_figure",
    "read_prior_file",
    "sample_w",
]
