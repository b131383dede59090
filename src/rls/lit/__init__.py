"""LightningModules wrapping the library: flow training (``FlowModule``, ``fit_flow``).

Only this package imports Lightning; ``rls.flows`` and the rest stay usable without it.
"""

from .flow_module import FlowModule, evaluate_priors, fit_flow

__all__ = ["FlowModule", "evaluate_priors", "fit_flow"]
