"""The authors' MAF layers (method.md §2; FLOWS/flows.py of the RLS reference code), as
zuko lazy transforms so that ``WFlow`` hosts them like any other family.

One block is MADE -> batch-norm flow layer -> order reversal, repeated 5 times:

- MADE: one masked network (input, one hidden, output layer; ReLU) produces (m, a) for
  every coordinate from the coordinates before it, and u = (x − m)·exp(−a), log|det| = −Σa.
  Unlike zuko's ``MaskedAutoregressiveTransform`` the log-scale is not soft-clamped
  (zuko's ``MonotonicAffineTransform`` bounds the slope) and the hidden units get the
  authors' degrees (``made_masks``), so their trained weights mean the same thing here.
- batch-norm flow layer (Real NVP): y = exp(γ)·(x − mean)/√var + β with the batch's
  statistics in training and running statistics in eval mode. zuko has none.
- reversal: zuko's ``PermutationTransform``.

zuko supplies the rest: the masked linear layers, the autoregressive scheme (its inverse is
the authors' coordinate-by-coordinate loop), the composition and the Gaussian base.
Parameter names follow the authors' modules (``joiner``, ``trunk``, ``log_gamma``,
``running_mean``...), so their state dicts map onto this one key by key (``authors_io``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import constraints
from zuko.lazy import LazyTransform
from zuko.nn import MaskedLinear
from zuko.transforms import AutoregressiveTransform, PermutationTransform, Transform


def made_masks(features: int, hidden: int) -> tuple[Tensor, Tensor, Tensor]:
    """Connectivity of the authors' MADE (Germain et al. 2015, Fig. 1), ``[out, in]`` bool.

    Input i has degree i; hidden unit j has degree j mod (D − 1); output unit k (the first
    D outputs are m, the next D are a) has degree (k mod D) − 1. A unit sees the units below
    it whose degree is not larger (strictly smaller for the outputs), so m_i, a_i depend on
    x_<i only. With D = 1 the hidden degrees are all 0 and the outputs see nothing.
    """
    if features < 1 or hidden < 1:
        raise ValueError(f"MADE needs features >= 1 and hidden >= 1, got {features}, {hidden}")
    cycle = max(features - 1, 1)
    d_in = torch.arange(features)
    d_hidden = torch.arange(hidden) % cycle
    d_out = torch.arange(2 * features) % features - 1
    first = d_hidden[:, None] >= d_in[None, :]
    middle = d_hidden[:, None] >= d_hidden[None, :]
    last = d_out[:, None] >= d_hidden[None, :]
    return first, middle, last


class ShiftLogScaleTransform(Transform):
    """u = (x − m)·exp(−a) per coordinate, log|det ∂u/∂x| = −Σ a (the authors' MADE step).

    Hand-written because zuko's affine transforms soft-clamp the log-scale; the authors'
    map has no clamp, and a checkpoint trained without it must give the same density."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, m: Tensor, a: Tensor, **kwargs):
        super().__init__(**kwargs)
        self.m, self.a = m, a

    def _call(self, x: Tensor) -> Tensor:
        return (x - self.m) * torch.exp(-self.a)

    def _inverse(self, u: Tensor) -> Tensor:
        return u * torch.exp(self.a) + self.m

    def log_abs_det_jacobian(self, x: Tensor, u: Tensor) -> Tensor:
        return -self.a.sum(-1)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._call(x), -self.a.sum(-1)


class PaperMADE(LazyTransform):
    """The authors' MADE block: ``joiner`` (input layer) and ``trunk`` (ReLU, hidden layer,
    ReLU, output layer producing [m, a]), wrapped in zuko's autoregressive transform."""

    def __init__(self, features: int, hidden: int):
        super().__init__()
        first, middle, last = made_masks(features, hidden)
        self.features = features
        self.joiner = MaskedLinear(first)
        self.trunk = nn.Sequential(nn.ReLU(), MaskedLinear(middle), nn.ReLU(), MaskedLinear(last))

    def shift_log_scale(self, x: Tensor) -> ShiftLogScaleTransform:
        m, a = self.trunk(self.joiner(x)).chunk(2, dim=-1)
        return ShiftLogScaleTransform(m, a)

    def forward(self, c: Tensor | None = None) -> Transform:
        return AutoregressiveTransform(self.shift_log_scale, passes=self.features)


class BatchNormTransform(Transform):
    """The batch-norm flow map of one ``BatchNormFlow`` layer for one call (see there)."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, layer: BatchNormFlow, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        layer = self.layer
        mean, var = layer.batch_statistics(x) if layer.training else layer.running_statistics()
        y = torch.exp(layer.log_gamma) * (x - mean) / var.sqrt() + layer.beta
        ladj = (layer.log_gamma - 0.5 * var.log()).sum(-1)
        return y, ladj.expand(x.shape[:-1])

    def _call(self, x: Tensor) -> Tensor:
        return self.call_and_ladj(x)[0]

    def _inverse(self, y: Tensor) -> Tensor:
        mean, var = self.layer.running_statistics()
        return (y - self.layer.beta) * torch.exp(-self.layer.log_gamma) * var.sqrt() + mean

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.call_and_ladj(x)[1]


class BatchNormFlow(LazyTransform):
    """Real NVP's batch-norm flow layer, as the authors use it.

    Training: the batch's mean and biased variance (+ ``eps``), and the running statistics
    become ``momentum``·running + (1 − momentum)·batch (momentum 0, the authors' default:
    the last batch's). Eval: the running statistics, so log p(w) of one vector does not
    depend on the others searched with it. ``set_running_statistics`` fixes them to a whole
    training set's, as the training script the authors' layers come from does after each
    epoch. The inverse uses the running statistics.
    """

    def __init__(self, features: int, momentum: float = 0.0, eps: float = 1e-5):
        super().__init__()
        self.log_gamma = nn.Parameter(torch.zeros(features))
        self.beta = nn.Parameter(torch.zeros(features))
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_var", torch.ones(features))

    def batch_statistics(self, x: Tensor) -> tuple[Tensor, Tensor]:
        flat = x.reshape(-1, x.shape[-1])
        mean = flat.mean(0)
        var = (flat - mean).square().mean(0) + self.eps
        with torch.no_grad():
            self.running_mean.mul_(self.momentum).add_((1 - self.momentum) * mean)
            self.running_var.mul_(self.momentum).add_((1 - self.momentum) * var)
        return mean, var

    def running_statistics(self) -> tuple[Tensor, Tensor]:
        return self.running_mean, self.running_var

    def forward(self, c: Tensor | None = None) -> Transform:
        return BatchNormTransform(self)


class Reverse(LazyTransform):
    """Reverse the coordinate order (no state: nothing in the state dict, as the authors')."""

    def __init__(self, features: int):
        super().__init__()
        self.register_buffer("order", torch.arange(features - 1, -1, -1), persistent=False)

    def forward(self, c: Tensor | None = None) -> Transform:
        return PermutationTransform(self.order)


def paper_maf_layers(features: int, transforms: int, hidden: int) -> list[LazyTransform]:
    """[MADE, batch-norm flow layer, reversal] × ``transforms``: the authors' flow (5 blocks,
    1024 hidden units for the 512-d W of FFHQ)."""
    layers: list[LazyTransform] = []
    for _ in range(transforms):
        layers += [PaperMADE(features, hidden), BatchNormFlow(features), Reverse(features)]
    return layers


@torch.no_grad()
def set_running_statistics(flow: nn.Module, x: Tensor) -> None:
    """Running statistics of every ``BatchNormFlow`` in ``flow`` := those of the whole set
    ``x`` (one pass in training mode with momentum 0), then frozen for later training steps
    (momentum 1) until the next call. ``flow`` is a zuko ``Flow`` over standardised inputs."""
    layers = [m for m in flow.modules() if isinstance(m, BatchNormFlow)]
    if not layers:
        return
    was_training = flow.training
    for layer in layers:
        layer.momentum = 0.0
    flow.train()
    flow().transform(x)
    flow.train(was_training)
    for layer in layers:
        layer.momentum = 1.0
