"""The metric suite every method is judged on (method.md §6), built on torchmetrics.

Per image: PSNR, SSIM, MS-SSIM, LPIPS (AlexNet, VGG), LR consistency (PSNR between D(x̂) and
y), NIQE (no reference: :mod:`rls.niqe`) and, for generator-sampled targets, the W+ latent
error; face detection, identity and landmark distance (dlib, offline:
:mod:`rls.metrics.faces`). Over the set: their means, FID and KID between the SR and HR sets
(against a fixed real set: :mod:`rls.fid_stats`). Everything is in [0, 1] space with data
range 1. ``python -m rls.metrics fid-stats DIR`` caches a real set's features (:mod:`.cli`).

Pretrained files (LPIPS backbones, Inception, NIQE's model) are resolved offline by
:mod:`rls.weights`; when one is missing that metric is skipped with one warning naming the
file to get, and the others are still computed. Every network can also be injected (tests,
other backbones).

``per_image`` holds the per-image functions, ``networks`` the pretrained networks (LPIPS,
Inception features) and ``collection`` :class:`RestorationMetrics`; their public names are
importable from ``rls.metrics``.
"""

from rls.metrics.collection import RestorationMetrics
from rls.metrics.faces import FACE_NAMES, FaceMetrics, FaceModels
from rls.metrics.networks import (
    LPIPS,
    LPIPS_BACKBONES,
    InceptionFeatures,
    build_inception,
    build_lpips,
    build_niqe,
)
from rls.metrics.per_image import (
    GROUND_TRUTH,
    MS_SSIM_MIN_SIZE,
    PER_IMAGE_NAMES,
    SSIM_WINDOW,
    latent_error,
    ms_ssim,
    niqe_scores,
    per_image_metrics,
    psnr,
    ssim,
)

__all__ = [
    "FACE_NAMES",
    "FaceMetrics",
    "FaceModels",
    "GROUND_TRUTH",
    "build_niqe",
    "niqe_scores",
    "LPIPS",
    "LPIPS_BACKBONES",
    "MS_SSIM_MIN_SIZE",
    "PER_IMAGE_NAMES",
    "SSIM_WINDOW",
    "InceptionFeatures",
    "RestorationMetrics",
    "build_inception",
    "build_lpips",
    "latent_error",
    "ms_ssim",
    "per_image_metrics",
    "psnr",
    "ssim",
]
