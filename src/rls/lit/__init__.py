"""LightningModules wrapping the library: flow training (``FlowModule``, ``fit_flow``).

Only this package imports Lightning; ``rls.flows`` and the rest stay usable without it.
"""

from .flow_module import FlowModule, evaluate_priors, fit_flow  # noqa: I001 (before the cache)
from .flow_cache import CachedFlow, cached_flow

__all__ = ["CachedFlow", "FlowModule", "cached_flow", "evaluate_priors", "fit_flow"]

# the per-image search of python evaluate.py
from .search_module import SearchModule  # noqa: E402

__all__ += ["SearchModule"]
