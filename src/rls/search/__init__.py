"""One batched search engine for every StyleGAN-prior restoration method (method.md §3-5).

    result = search(build_method("rls", **cfg), G, y, D, seeds, prior=flow)

Methods register a factory ``(**cfg) -> Method`` in :data:`METHODS` with
:func:`register`; :func:`build_method` is the Hydra ``_target_`` of
``configs/method/*.yaml``.
"""

from rls.search.base import (
    METHODS,
    Method,
    OptimGroup,
    Rendered,
    SearchContext,
    SearchResult,
    Stage,
    StageOutput,
    build_method,
    derive_seeds,
    register,
)
from rls.search.loop import search

__all__ = [
    "METHODS",
    "Method",
    "OptimGroup",
    "Rendered",
    "SearchContext",
    "SearchResult",
    "Stage",
    "StageOutput",
    "build_method",
    "derive_seeds",
    "register",
    "search",
]

# --- method registrations: each import registers its methods in METHODS -------------
# (peers engineer: add your imports in this block only)
# RLS, RLS-W, RLS+ (issue 5: rls, rls_plus); peers (issue 6): PULSE, BRGM, ILO, robust, W+
from rls.search import brgm, ilo, pulse, rls, rls_plus, robust, wplus  # noqa: E402, F401
# --- end of method registrations ------------------------------------------------------
