"""Differentiable integer-factor downsamplers (method.md §1).

``bicubic_pulse`` is the paper's operator (the one PULSE and RLS use both to make the LR
inputs and inside the loss); the others are the peers' own operators, offered so that a
method can also be scored under the downsampler it was published with.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

KERNELS = ("bicubic_pulse", "bicubic_aa", "bicubic_torch", "area", "box")
DEFAULT_KERNEL = "bicubic_pulse"


def cubic(t: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel with parameter ``a`` (a = -0.5: Catmull-Rom-like)."""
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1  # |t| <= 1
    far = (((t - 5) * t + 8) * t - 4) * a  # 1 < |t| < 2
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def pulse_bicubic_taps(scale: int, a: float = -0.5) -> torch.Tensor:
    """The 4·s taps of the PULSE/RLS bicubic filter, normalised to sum 1 (float64, [4s]).

    Tap i sits at t_i = (i - 2s + 0.5) / s: symmetric about the centre, half a
    high-resolution pixel off the integer grid (method.md §1).
    """
    size = 4 * scale
    t = (torch.arange(size, dtype=torch.float64) - size // 2 + 0.5) / scale
    k = cubic(t, a)
    return k / k.sum()


def pulse_padding(scale: int) -> tuple[int, int]:
    """Reflect padding (before, after) of the PULSE operator: 3s split, the smaller half first."""
    total = 4 * scale - scale
    return total // 2, total - total // 2


def check_divisible(x: torch.Tensor, scale: int) -> None:
    """Raise a clear error unless ``x`` is [B, C, H, W] with H and W divisible by ``scale``."""
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"downsampling scale must be a positive integer, got {scale!r}")
    if x.ndim != 4:
        raise ValueError(f"expected an image batch [B, C, H, W], got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(
            f"image size {h}x{w} is not divisible by the downsampling scale {scale}; "
            f"crop or resize the high-resolution image to a multiple of {scale}"
        )


def _check_pulse_size(h: int, w: int, scale: int) -> None:
    before, after = pulse_padding(scale)
    if after >= min(h, w):
        raise ValueError(
            f"bicubic_pulse at scale {scale} reflect-pads by {after} pixels, which needs an image "
            f"larger than {after}x{after}; got {h}x{w} (LR {h // scale}x{w // scale})"
        )


def pulse_bicubic_conv(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Reference path, literally the paper's recipe: reflect pad, stride-s 1-D convolution
    vertically, then horizontally, per channel. :func:`downsample` computes the same numbers
    as two small matrix products, which is several times faster on CPU and GPU."""
    check_divisible(x, scale)
    b, c, h, w = x.shape
    _check_pulse_size(h, w, scale)
    before, after = pulse_padding(scale)
    k = pulse_bicubic_taps(scale).to(device=x.device, dtype=x.dtype)
    y = x.reshape(b * c, 1, h, w)  # channels folded into the batch: one filter serves any C
    y = F.pad(y, (0, 0, before, after), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, -1, 1), stride=(scale, 1))
    y = F.pad(y, (before, after, 0, 0), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1), stride=(1, scale))
    return y.reshape(b, c, h // scale, w // scale)


@functools.lru_cache(maxsize=64)
def pulse_bicubic_matrix(size: int, scale: int) -> torch.Tensor:
    """The 1-D PULSE operator on a length-``size`` signal as a [size/s, size] float64 matrix.

    Reflect padding is linear, so it folds into the matrix: row j holds the 4s taps of
    output j, each added at the (reflected) input index it reads.
    """
    before, _ = pulse_padding(scale)
    n, rows = 4 * scale, size // scale
    # padded position p of output j, tap i: j*s + i; its input index before reflection:
    pos = torch.arange(rows)[:, None] * scale + torch.arange(n)[None] - before
    pos = pos.abs()  # reflect at the start: -1 -> 1
    pos = torch.where(pos > size - 1, 2 * (size - 1) - pos, pos)  # and at the end: size -> size-2
    matrix = torch.zeros(rows, size, dtype=torch.float64)
    taps = pulse_bicubic_taps(scale).expand(rows, n)
    matrix.index_put_((torch.arange(rows)[:, None].expand(rows, n), pos), taps, accumulate=True)
    return matrix


def _pulse_bicubic(x: torch.Tensor, scale: int, cache: dict | None = None) -> torch.Tensor:
    h, w = x.shape[-2:]
    _check_pulse_size(h, w, scale)

    def matrix(size: int) -> torch.Tensor:
        key = (size, x.device, x.dtype)
        if cache is None or key not in cache:
            m = pulse_bicubic_matrix(size, scale).to(device=x.device, dtype=x.dtype)
            if cache is None:
                return m
            cache[key] = m
        return cache[key]

    # [h', H] @ [B, C, H, W] @ [W, w']: vertical pass, then horizontal, as in the paper.
    return matrix(h) @ x @ matrix(w).mT


def _resample(x: torch.Tensor, scale: int, kernel: str) -> torch.Tensor:
    size = (x.shape[-2] // scale, x.shape[-1] // scale)
    if kernel == "bicubic_aa":
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    if kernel == "bicubic_torch":  # BRGM-pytorch's operator: plain bicubic, no antialiasing
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    if kernel == "area":  # torch's area resize (adaptive average pooling)
        return F.interpolate(x, size=size, mode="area")
    if kernel == "box":  # BRGM's box average; equals "area" for integer factors
        return F.avg_pool2d(x, scale)
    raise ValueError(f"unknown downsampling kernel {kernel!r}; choose one of {', '.join(KERNELS)}")


class Downsample(nn.Module):
    """Downsampling by an integer ``scale`` with a named kernel, built once and reused."""

    def __init__(self, scale: int, kernel: str = DEFAULT_KERNEL):
        super().__init__()
        if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
            raise ValueError(f"downsampling scale must be a positive integer, got {scale!r}")
        if kernel not in KERNELS:
            raise ValueError(
                f"unknown downsampling kernel {kernel!r}; choose one of {', '.join(KERNELS)}"
            )
        self.scale = scale
        self.kernel = kernel
        # PULSE matrices per (size, device, dtype), built on first use: sizes come with x.
        self._matrices: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x, self.scale)
        if self.scale == 1:
            return x
        if self.kernel == "bicubic_pulse":
            return _pulse_bicubic(x, self.scale, self._matrices)
        return _resample(x, self.scale, self.kernel)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, kernel={self.kernel!r}"


def downsample(x: torch.Tensor, scale: int, kernel: str = DEFAULT_KERNEL) -> torch.Tensor:
    """Downsample ``x`` [B, C, H, W] by the integer ``scale`` (H, W divisible by it).

    kernel: ``bicubic_pulse`` (paper/PULSE, default), ``bicubic_aa`` (antialiased bicubic,
    like PIL's resize), ``bicubic_torch`` (plain bicubic interpolation, BRGM-pytorch),
    ``area`` (torch area resize), ``box`` (s×s box average, BRGM). For repeated calls build
    a :class:`Downsample` once instead: it caches its matrices on the device.
    """
    if kernel == "bicubic_pulse":
        check_divisible(x, scale)
        if scale == 1:
            return x
        return _pulse_bicubic(x, scale)
    if kernel not in KERNELS:
        raise ValueError(
            f"unknown downsampling kernel {kernel!r}; choose one of {', '.join(KERNELS)}"
        )
    check_divisible(x, scale)
    return x if scale == 1 else _resample(x, scale, kernel)


def lr_size(hr_size: int, scale: int) -> int:
    """The LR side length for an HR side length, or a clear error when it does not divide."""
    if hr_size % scale:
        raise ValueError(f"image size {hr_size} is not divisible by the downsampling scale {scale}")
    return hr_size // scale


__all__ = [
    "DEFAULT_KERNEL",
    "KERNELS",
    "Downsample",
    "cubic",
    "downsample",
    "lr_size",
    "pulse_bicubic_conv",
    "pulse_bicubic_matrix",
    "pulse_bicubic_taps",
    "pulse_padding",
]
