"""Per-image metrics on [0, 1] images (data range 1): PSNR, SSIM, MS-SSIM, LR consistency
(PSNR between D(x̂) and y), the W+ latent error, and LPIPS through an injected network.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    structural_similarity_index_measure,
)

from rls.metrics.faces import FACE_NAMES

log = logging.getLogger("rls.metrics")

# the method name of the rows that score the HR images themselves (NIQE of the ground truth)
GROUND_TRUTH = "ground_truth"
PER_IMAGE_NAMES = ("psnr", "ssim", "ms_ssim", "lr_psnr", "niqe", "latent_error", *FACE_NAMES)
# torchmetrics' MS-SSIM (5 scales, 11-tap window) needs side // (5 - 1)**2 > 11 - 1.
MS_SSIM_MIN_SIZE = 176
_notes_given: set[str] = set()


def _note_once(key: str, message: str) -> None:
    if key not in _notes_given:
        _notes_given.add(key)
        log.info(message)


def psnr(a: Tensor, b: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image PSNR ``[B]`` in dB: 10·log10(range² / MSE); identical images give +inf."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse)


SSIM_WINDOW = 11  # Gaussian window of σ 1.5, as Wang et al. (2004)


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Per-image SSIM ``[B]`` (Gaussian window 11, σ 1.5, data range 1), averaged over the
    pixels whose window lies inside the image, as Wang et al.'s reference code and
    scikit-image do. torchmetrics' own mean also counts the border pixels, computed on a
    reflected image (on a 32² image more than half of them); hence its full SSIM map,
    cropped here. NaN (with one note) when the window does not fit in the image.
    """
    if min(a.shape[-2:]) < SSIM_WINDOW:
        _note_once(
            "ssim",
            f"SSIM needs images of at least {SSIM_WINDOW}px a side; "
            f"got {tuple(a.shape[-2:])}, reported as NaN",
        )
        return torch.full((a.shape[0],), math.nan, device=a.device)
    _, full = structural_similarity_index_measure(
        a.float(),
        b.float(),
        data_range=1.0,
        sigma=1.5,
        reduction="none",
        return_full_image=True,
    )
    pad = (SSIM_WINDOW - 1) // 2
    return full[..., pad:-pad, pad:-pad].flatten(1).mean(1)


def ms_ssim(a: Tensor, b: Tensor) -> Tensor:
    """Per-image MS-SSIM ``[B]``; NaN (with one note) when the image is too small for 5 scales."""
    if min(a.shape[-2:]) < MS_SSIM_MIN_SIZE:
        _note_once(
            "ms_ssim",
            f"MS-SSIM needs images of at least {MS_SSIM_MIN_SIZE}px a side; "
            f"got {tuple(a.shape[-2:])}, reported as NaN",
        )
        return torch.full((a.shape[0],), math.nan, device=a.device)
    return multiscale_structural_similarity_index_measure(
        a.float(), b.float(), data_range=1.0, reduction="none"
    )


def niqe_scores(net: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``net(x)`` ``[B]``; NaN with one note when the images are below the net's
    ``min_size`` (NIQE: one 96² patch)."""
    from rls.niqe import MIN_SIZE

    min_size = getattr(net, "min_size", MIN_SIZE)
    if min(x.shape[-2:]) < min_size:
        _note_once(
            "niqe",
            f"NIQE needs images of at least {min_size}px a side (one 96x96 patch); "
            f"got {tuple(x.shape[-2:])}, reported as NaN",
        )
        return torch.full((x.shape[0],), math.nan, device=x.device)
    return net(x).float().to(x.device).reshape(x.shape[0])


def latent_error(w_hat: Tensor, w_true: Tensor) -> Tensor:
    """Mean squared W+ error ``[B]`` between the found and the true codes (broadcast W to W+)."""
    w_hat, w_true = torch.broadcast_tensors(w_hat.float(), w_true.float())
    return (w_hat - w_true).pow(2).flatten(1).mean(1)


@torch.no_grad()
def per_image_metrics(
    sr: Tensor,
    hr: Tensor | None,
    y: Tensor | None = None,
    D: Callable[[Tensor], Tensor] | None = None,
    lpips_nets: Mapping[str, Callable[[Tensor, Tensor], Tensor]] | None = None,
    w_hat: Tensor | None = None,
    w_true: Tensor | None = None,
    niqe: Callable[[Tensor], Tensor] | None = None,
    faces: Callable[[Tensor, Tensor | None], dict[str, Tensor]] | None = None,
) -> dict[str, Tensor]:
    """Per-image metrics, each a float tensor ``[B]``, all on [0, 1] images.

    ``hr`` may be ``None`` (LR-only inputs): then only ``lr_psnr``, ``niqe`` (and
    ``latent_error``) are computed. ``lpips_nets`` maps a name (``"alex"``, ``"vgg"``) to a
    callable ``(a, b) -> [B]``; each gives ``lpips_<name>``. ``lr_psnr`` = PSNR(D(sr), y)
    needs ``y`` and ``D``. ``niqe``: a no-reference scorer ``x -> [B]`` of ``sr``.
    ``faces``: :class:`rls.metrics.faces.FaceMetrics` (detection of ``sr``; identity and
    landmark distance to ``hr``).
    """
    sr = sr.float().clamp(0, 1)
    out: dict[str, Tensor] = {}
    if hr is not None:
        hr = hr.float().to(sr.device)
        if hr.shape != sr.shape:
            raise ValueError(f"sr {tuple(sr.shape)} and hr {tuple(hr.shape)} differ in shape")
        out["psnr"] = psnr(sr, hr)
        out["ssim"] = ssim(sr, hr)
        out["ms_ssim"] = ms_ssim(sr, hr)
        for name, net in (lpips_nets or {}).items():
            out[f"lpips_{name}"] = net(sr, hr).float().reshape(sr.shape[0])
    if y is not None and D is not None:
        out["lr_psnr"] = psnr(D(sr), y.float().to(sr.device))
    if niqe is not None:
        out["niqe"] = niqe_scores(niqe, sr)
    if w_hat is not None and w_true is not None:
        out["latent_error"] = latent_error(w_hat, w_true.to(w_hat.device))
    if faces is not None:
        out.update(faces(sr, hr))
    return out
