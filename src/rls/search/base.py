"""The types every search method is made of, and the method registry.

A method is a named list of :class:`Stage` objects. Each stage declares its variables
(``init``), how they become an image (``render``), its per-image loss terms (``losses``),
its optimisers and schedules (``optim``), an optional projection after each step and how
the stage's output is chosen (best iterate or last). The shared loop
(:mod:`rls.search.loop`) runs the stages; methods differ only in these declarations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from rls.search.settings import check_settings
from rls.seeding import derive_seeds, randn_per_seed  # noqa: F401 (derive_seeds re-exported)


@dataclass
class SearchContext:
    """What every stage sees; built once per batch by :func:`rls.search.search`."""

    G: nn.Module  # frozen, eval mode, requires_grad False on its params
    y: Tensor  # [B, C, r, r] observed LR in [0, 1]
    D: nn.Module  # degradation: D(x in [0,1]) -> LR, differentiable
    seeds: Tensor  # int64 [B]; every random draw of image b comes from seeds[b]
    prior: nn.Module | None = None  # a W prior (rls.flows) or None
    perceptual: nn.Module | None = None  # LPIPS-like net(a, b) -> [B] on [0,1] images
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    state: dict = field(default_factory=dict)  # carried between stages (e.g. the anchor)
    start_index: Tensor | None = None  # int64 [B]: which start of the image (0 = canonical)
    sample_index: Tensor | None = None  # int64 [B]: which solution of the input (num_samples)

    @property
    def canonical(self) -> Tensor:
        """bool [B]: rows that are the first start of the first sample (e.g. start at w̄)."""
        B = self.batch_size
        first = torch.ones(B, dtype=torch.bool)
        for index in (self.start_index, self.sample_index):
            if index is not None:
                first &= index.cpu() == 0
        return first.to(self.device)

    @property
    def batch_size(self) -> int:
        return self.y.shape[0]

    def randn(self, shape, salt: str) -> Tensor:
        """``[B, *shape]`` N(0, 1) draws (y's dtype, on ``device``), row b from (seeds[b], salt)."""
        draws = randn_per_seed(derive_seeds(self.seeds, salt), shape, device=self.device)
        return draws.to(self.y.dtype)


@dataclass
class Rendered:
    """What a stage's render step produces."""

    image: Tensor  # [B, C, R, R] in [-1, 1]
    latents: Tensor  # [B, num_ws, w_dim]: the W+ code this image came from
    extra: dict = field(default_factory=dict)


@dataclass
class OptimGroup:
    """One optimiser over some of a stage's variables.

    ``vars`` names variables of the stage; a name ending in ``*`` matches a prefix
    (``"dtheta.*"``). ``schedule`` is ``"linear1cycledrop" | "cosine" | "constant"`` or a
    callable ``(step, steps) -> multiplier``. ``optimizer`` is ``"adam" | "sgd" |
    "normalized_gd"`` (per-image normalised gradient, for the robust-unsupervised peer).
    """

    vars: list[str]
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str | Callable[[int, int], float] = "constant"
    optimizer: str = "adam"
    weight_decay: float = 0.0


@dataclass
class Stage:
    """One optimisation phase of a method."""

    name: str
    steps: int
    init: Callable[[SearchContext], dict[str, Tensor]]  # leaf variables, batch-first
    render: Callable[[SearchContext, dict], Rendered]
    losses: Callable[[SearchContext, dict, Rendered], dict[str, Tensor]]  # name -> [B], weighted
    optim: list[OptimGroup]
    project: Callable[[SearchContext, dict], None] | None = None  # in place, under no_grad
    select: str = "best"  # "best" (lowest total loss per image) | "last"
    # True: the iterate after the last update is rendered and scored too (it competes for
    # "best" and is the "last"). False (the RLS/PULSE authors' loops): only iterates rendered
    # before an update count, so "last" is the image of the last step before its update.
    score_final: bool = True
    finish: Callable[[SearchContext, dict], None] | None = None  # fill ctx.state for later
    starts: int = 1  # independent starts per image; the best by total loss is kept


@dataclass
class StageOutput:
    """The chosen iterate of a stage; the loop stores it in ``ctx.state[stage.name]``."""

    vars: dict[str, Tensor]
    image: Tensor  # [B, C, R, R] in [-1, 1]
    latents: Tensor
    total: Tensor  # [B] total loss of the chosen iterate


@dataclass
class Method:
    """A named list of stages (or a function of the context building them) + metadata.

    ``notes`` goes into the ``notes`` column of results.csv and the report (e.g. which
    term was switched off because weights were missing). ``num_samples`` solutions are
    computed per input, each from its own seed (sample 0 uses the image seed itself).
    """

    name: str
    stages: list[Stage] | Callable[[SearchContext], list[Stage]]
    notes: str = ""
    num_samples: int = 1
    max_attempts: int = 3  # runs per image before a NaN image is marked "failed"
    config: dict = field(default_factory=dict)

    def build_stages(self, ctx: SearchContext) -> list[Stage]:
        return self.stages(ctx) if callable(self.stages) else list(self.stages)


@dataclass
class SearchResult:
    images: Tensor  # [B, C, R, R] in [0, 1]
    latents: Tensor  # [B, num_ws, w_dim]
    history: dict[str, Tensor]  # "stage/term" -> [steps, B]; "total" over all stages
    status: list[str]  # "ok" | "restarted" | "failed" per image
    steps: int
    seconds: float
    extras: dict[str, Any] = field(default_factory=dict)
    notes: str = ""


METHODS: dict[str, Callable[..., Method]] = {}


def register(name: str):
    """Decorator adding a method factory ``(**cfg) -> Method`` to :data:`METHODS`."""

    def deco(factory):
        if name in METHODS and METHODS[name] is not factory:
            raise ValueError(f"search method {name!r} is already registered")
        METHODS[name] = factory
        return factory

    return deco


def build_method(name: str, method: str | None = None, **cfg) -> Method:
    """Build a registered method from its config (``configs/method/<name>.yaml``).

    ``method`` is the registry key and ``name`` the method's display name (results rows,
    report); without ``method`` the name is the key. So a variant is a config with e.g.
    ``method: rls_plus`` and ``name: rls_plus_r0.5``.
    """
    key = method or name
    if key not in METHODS:
        known = ", ".join(sorted(METHODS)) or "none"
        raise KeyError(f"unknown search method {key!r}; registered: {known}")
    check_settings(cfg)  # a bad step count or rate fails here, before any search
    return METHODS[key](name=name, **cfg)
