"""Where the RLS-family methods start under the loaded flow (rls.flows.support): a flow
that places the start code far off its support makes RLS underfit without an error."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from torch import nn

from rls.flows.sampling import sample_w
from rls.flows.support import StartCheck, check_start
from rls.search.base import Method
from rls.search.rls import rls_stage, start_centre

START_KEYS = ("start", "start_samples", "start_seed")
SAMPLES = 4096  # held-out mapping samples to compare with
SAMPLE_SEED = 1  # flow training draws from seeds derived by rls.lit.flow_module.flow_seed


def flow_start(method: Method) -> dict | None:
    """The start settings of a method that searches from w̄ under the flow terms (RLS,
    RLS in W, the RLS anchor stage of RLS+), or ``None`` for any other method."""
    cfg = method.config.get("anchor", method.config)
    if not isinstance(cfg, Mapping) or not (cfg.get("lambda_logp") or cfg.get("lambda_pn")):
        return None
    defaults = inspect.signature(rls_stage).parameters
    return {k: cfg.get(k, defaults[k].default) for k in START_KEYS}


def check_flow_starts(
    G: nn.Module, prior: nn.Module, methods: Mapping[str, Method]
) -> dict[str, StartCheck]:
    """``{method name: StartCheck}`` for the methods ``flow_start`` recognises; one check
    per distinct start."""
    samples = None
    by_start: dict[tuple, StartCheck] = {}
    checks = {}
    for name, method in methods.items():
        start = flow_start(method)
        if start is None:
            continue
        key = tuple(start.values())
        if key not in by_start:
            samples = sample_w(G, SAMPLES, SAMPLE_SEED) if samples is None else samples
            centre = start_centre(
                G, start["start"], start["start_samples"], start["start_seed"], prior
            )
            by_start[key] = check_start(prior, centre, samples)
        checks[name] = by_start[key]
    return checks
