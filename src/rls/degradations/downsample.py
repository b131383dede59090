"""Differentiable integer-factor downsamplers (method.md §1).

``bicubic_pulse`` is the paper's operator (the one PULSE and RLS use both to make the LR
inputs and inside the loss); the others are the peers' own operators, offered so that a
method can also be scored under the downsampler it was published with.
"""

from __future__ import annotations

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


def _pulse_bicubic(x: torch.Tensor, taps: torch.Tensor, scale: int) -> torch.Tensor:
    """Stride-s 1-D convolution vertically, then horizontally, per channel, reflect-padded."""
    b, c, h, w = x.shape
    before, after = pulse_padding(scale)
    if before >= h or after >= h or before >= w or after >= w:
        raise ValueError(
            f"bicubic_pulse at scale {scale} reflect-pads by {after} pixels, which needs an image "
            f"larger than {after}x{after}; got {h}x{w} (LR {h // scale}x{w // scale})"
        )
    k = taps.to(dtype=x.dtype)
    # Channels are folded into the batch: one single-channel filter serves any C.
    y = x.reshape(b * c, 1, h, w)
    y = F.conv2d(
        F.pad(y, (0, 0, before, after), mode="reflect"), k.view(1, 1, -1, 1), stride=(scale, 1)
    )
    y = F.conv2d(
        F.pad(y, (before, after, 0, 0), mode="reflect"), k.view(1, 1, 1, -1), stride=(1, scale)
    )
    return y.reshape(b, c, h // scale, w // scale)


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
    """Downsampling by an integer ``scale`` with a named kernel; the taps are a buffer."""

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
        taps = pulse_bicubic_taps(scale).float() if kernel == "bicubic_pulse" else torch.empty(0)
        self.register_buffer("taps", taps, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x, self.scale)
        if self.scale == 1:
            return x
        if self.kernel == "bicubic_pulse":
            return _pulse_bicubic(x, self.taps, self.scale)
        return _resample(x, self.scale, self.kernel)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, kernel={self.kernel!r}"


def downsample(x: torch.Tensor, scale: int, kernel: str = DEFAULT_KERNEL) -> torch.Tensor:
    """Downsample ``x`` [B, C, H, W] by the integer ``scale`` (H, W divisible by it).

    kernel: ``bicubic_pulse`` (paper/PULSE, default), ``bicubic_aa`` (antialiased bicubic,
    like PIL's resize), ``bicubic_torch`` (plain bicubic interpolation, BRGM-pytorch),
    ``area`` (torch area resize), ``box`` (s×s box average, BRGM). For repeated calls build
    a :class:`Downsample` once instead: its taps are computed once.
    """
    if kernel == "bicubic_pulse":
        check_divisible(x, scale)
        if scale == 1:
            return x
        return _pulse_bicubic(x, pulse_bicubic_taps(scale), scale)
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
    "pulse_bicubic_taps",
    "pulse_padding",
]
