"""Differentiable degradations (method.md §1, §6): downsamplers, corruptions, the forward model.

D = build_degradation(scale=8, corruption="gaussian_noise")
y = D.observe(x_hr, seeds)   # the observed LR image (noise seeded per image)
loss = (D(x) - y).abs()      # D(x): deterministic and differentiable, used in the search
"""

from rls.degradations.corruptions import (
    CORRUPTIONS,
    Corruption,
    GaussianBlur,
    GaussianNoise,
    Jpeg,
    MotionBlur,
    SaltPepper,
    build_corruption,
)
from rls.degradations.degradation import Degradation, build_degradation
from rls.degradations.downsample import (
    DEFAULT_KERNEL,
    KERNELS,
    Downsample,
    downsample,
    pulse_bicubic_conv,
    pulse_bicubic_taps,
)

__all__ = [
    "CORRUPTIONS",
    "DEFAULT_KERNEL",
    "KERNELS",
    "Corruption",
    "Degradation",
    "Downsample",
    "GaussianBlur",
    "GaussianNoise",
    "Jpeg",
    "MotionBlur",
    "SaltPepper",
    "build_corruption",
    "build_degradation",
    "downsample",
    "pulse_bicubic_conv",
    "pulse_bicubic_taps",
]
