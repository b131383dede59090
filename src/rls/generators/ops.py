"""Tensor ops of the StyleGAN2 generator: FIR resampling, bias + activation, modulated conv.

Written from the definitions in Karras et al. 2020 (StyleGAN2, Sec. 2.2 weight demodulation)
and the op semantics of NVIDIA stylegan2-ada-pytorch (``torch_utils/ops``), so that the same
weights give the same numbers. Each fast op has a plain reference beside it
(``upfirdn2d_ref``) that the tests compare against. Everything is batched, out-of-place and
free of value-dependent Python branching, so it runs under ``torch.func.vmap``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

# Activation name -> (function, default gain). StyleGAN2 uses lrelu(0.2) with gain sqrt(2).
ACTIVATIONS = {
    "linear": (lambda x: x, 1.0),
    "relu": (F.relu, math.sqrt(2)),
    "lrelu": (lambda x: F.leaky_relu(x, 0.2), math.sqrt(2)),
}


def activation_gain(name: str) -> float:
    """Default output gain of an activation (keeps unit variance, as in the official code)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name][1]


def setup_filter(taps: Sequence[float]) -> torch.Tensor:
    """The 2-D low-pass filter ``outer(f, f) / sum`` used for up/downsampling ([1,3,3,1])."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.ndim != 1 or f.numel() == 0:
        raise ValueError(f"resample filter must be a non-empty 1-D list of taps, got {taps!r}")
    f = torch.outer(f, f)
    return f / f.sum()


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` to unit root-mean-square along ``dim`` (the mapping network's input norm)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    act: str = "linear",
    gain: float | None = None,
    clamp: float | None = None,
    dim: int = 1,
) -> torch.Tensor:
    """``clamp(act(x + b) * gain, -clamp, clamp)``; ``b`` broadcast along ``dim``."""
    if b is not None:
        shape = [-1 if i == dim else 1 for i in range(x.ndim)]
        x = x + b.reshape(shape)
    fn, default_gain = ACTIVATIONS[act]
    x = fn(x)
    gain = default_gain if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def _depthwise(f: torch.Tensor, channels: int, gain: float, flip: bool) -> torch.Tensor:
    """The 2-D filter as a ``[C, 1, fh, fw]`` depthwise weight."""
    f = f * gain
    if flip:
        f = f.flip([0, 1])
    return f.to(torch.float32)[None, None].expand(channels, 1, *f.shape)


def fir_filter(x: torch.Tensor, f: torch.Tensor, padding: Sequence[int], gain: float = 1):
    """Pad by ``[x0, x1, y0, y1]`` (negative = crop) then convolve every channel with ``f``."""
    px0, px1, py0, py1 = padding
    x = F.pad(x, [px0, px1, py0, py1])
    # The filter is convolved (flipped) as upfirdn2d does; depthwise conv keeps channels apart.
    w = _depthwise(f, x.shape[1], gain, flip=True).to(x.dtype)
    return F.conv2d(x, w, groups=x.shape[1])


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Upsample by ``up`` with the low-pass filter ``f`` (gain ``up**2``): output ``up * H``.

    Equals zero-insertion + padding ((fw+up-1)//2, (fw-up)//2) + FIR filter, but runs as one
    strided depthwise transposed convolution (no zero-filled intermediate).
    """
    fh, fw = f.shape
    if fh != fw or fw % 2 != 0 or fw < up:
        raise ValueError(f"upsample2d needs a square even-sized filter >= up, got {tuple(f.shape)}")
    pad0 = (fw + up - 1) // 2
    w = _depthwise(f, x.shape[1], up * up, flip=False).to(x.dtype)
    return F.conv_transpose2d(x, w, stride=up, padding=fw - 1 - pad0, groups=x.shape[1])


def upfirdn2d_ref(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int = 1,
    down: int = 1,
    padding: Sequence[int] = (0, 0, 0, 0),
    gain: float = 1,
) -> torch.Tensor:
    """Slow plain reference: zero-insert by ``up``, pad, FIR-filter, keep every ``down``-th."""
    b, c, h, w = x.shape
    if up > 1:
        z = x.new_zeros(b, c, h * up, w * up)
        z[:, :, ::up, ::up] = x
        x = z
    x = fir_filter(x, f, padding, gain=gain)
    return x[:, :, ::down, ::down]


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: int = 1,
    resample_filter: torch.Tensor | None = None,
    fused: bool = True,
    gain: float = 1.0,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """StyleGAN2 modulated convolution (Karras et al. 2020, Eq. 1-3), times ``gain``, plus
    ``bias`` (``[O]``); gain and bias are folded into the demodulation so the big activation
    tensor is touched once after the convolution.

    ``w'_bijk = s_bi * w_ijk`` then, if ``demodulate``, ``w''_bijk = w'_bijk / sqrt(sum w'^2)``.
    ``fused=True`` applies each sample's own weights in one grouped convolution (no Python loop
    over the batch); ``fused=False`` scales the activations before and after one shared-weight
    convolution instead (same result; its backward needs no weight gradient when the weights
    are frozen, which makes it faster for latent search). ``up=2`` runs a stride-2 transposed
    convolution followed by the low-pass filter, with the padding of the official
    ``conv2d_resample``, so outputs are ``2H x 2W``.
    """
    batch, in_ch = x.shape[:2]
    out_ch, _, kh, kw = weight.shape
    b = None if bias is None else bias.reshape(1, out_ch, 1, 1)
    if fused:
        w = weight.unsqueeze(0) * styles.reshape(batch, 1, in_ch, 1, 1)  # [B, O, I, kh, kw]
        if demodulate:
            dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [B, O]
            w = w * (dcoefs * gain).reshape(batch, out_ch, 1, 1, 1)
        elif gain != 1:
            w = w * gain
        x = x.reshape(1, batch * in_ch, *x.shape[2:])
        x = _conv(x, w.reshape(batch * out_ch, in_ch, kh, kw), up, resample_filter, groups=batch)
        x = x.reshape(batch, out_ch, *x.shape[2:])
        return x if b is None else x + b
    x = x * styles.reshape(batch, in_ch, 1, 1)
    x = _conv(x, weight, up, resample_filter, groups=1)
    if demodulate:
        # sum_{i,k} (s_bi w_oik)^2 = sum_i s_bi^2 (sum_k w_oik^2): a [B, I] @ [I, O] product
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()
        scale = (dcoefs * gain).reshape(batch, out_ch, 1, 1)
        return x * scale if b is None else torch.addcmul(b, x, scale)
    if gain != 1:
        x = x * gain
    return x if b is None else x + b


def _conv(x, w, up, resample_filter, groups):
    """Correlation with ``w`` (padding k//2), or the official 2x up path for ``up=2``."""
    out_ch, in_ch, kh, kw = w.shape
    if up == 1:
        return F.conv2d(x, w, padding=kh // 2, groups=groups)
    # Transposed-conv weights are [in, out/groups, kh, kw]; the official up path correlates
    # without flipping, i.e. a plain conv_transpose2d of the unflipped kernel.
    wt = w.reshape(groups, out_ch // groups, in_ch, kh, kw).transpose(1, 2)
    x = F.conv_transpose2d(
        x, wt.reshape(groups * in_ch, out_ch // groups, kh, kw), stride=up, groups=groups
    )
    fw = resample_filter.shape[-1]
    p = kw // 2
    p0 = p + (fw + up - 1) // 2 - (kw - 1)
    p1 = p + (fw - up) // 2 - (kw - up)
    return fir_filter(x, resample_filter, [p0, p1, p0, p1], gain=up * up)
