"""Loss terms, projections and the optimiser step that the peer methods use (method.md §5).

Pure functions on batched tensors, every loss per image (``[B]``), so the shared loop can sum
them over the batch. Each follows its authors' public code (cited per function); the
constants that were hard-coded for 512-d W at 1024² are generalised to ``w_dim`` as
method.md does for RLS (``√512`` → ``√w_dim``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

PerceptualNet = Callable[[Tensor, Tensor], Tensor]

# Length of the LPIPS-VGG16 feature vector of a 256² image in NVIDIA's ``vgg16.pt``
# (``return_lpips=True``): 64·256² + 128·128² + 256·64² + 512·32² + 512·16². BRGM's perceptual
# term is the *mean* of its squared feature difference, i.e. LPIPS / this count.
VGG16_LPIPS_FEATURES_256 = 7_995_392


# ---------------------------------------------------------------------------------------
# PULSE (adamian98/pulse: PULSE.py, loss.py, SphericalOptimizer.py)


def gaussianised_to_w(x: Tensor, mu: Tensor, sigma: Tensor, slope: float = 0.2) -> Tensor:
    """PULSE/ILO's map from the Gaussianised variable to W: ``LeakyReLU_0.2(σ⊙x + μ)``.

    ``mu``/``sigma`` are the per-dimension mean/std of ``LeakyReLU_5(w)`` (method.md §2), so
    x ~ N(0, I) lands on the W distribution's diagonal fit.
    """
    return F.leaky_relu(x * sigma + mu, negative_slope=slope)


def geocross(latents: Tensor, scale: float | None = None) -> Tensor:
    """GEOCROSS of a W+ code ``[B, L, D]`` -> ``[B]`` (PULSE ``loss.py``).

    ``scale · mean_{i,j} θ_ij²`` over all L² ordered pairs (diagonal included, as PULSE), with
    ``θ_ij = 2·atan2(‖w_i − w_j‖, ‖w_i + w_j‖)`` the angle between rows, and ``scale = D/8``
    (PULSE: 512/8). Identical rows give ~0; L mutually orthogonal rows of equal norm give
    ``scale · (1 − 1/L) · (π/2)²``. A single row (W, not W+) gives 0.
    """
    if latents.shape[1] == 1:
        return latents.new_zeros(latents.shape[0])
    scale = latents.shape[-1] / 8.0 if scale is None else scale
    a, b = latents[:, None, :, :], latents[:, :, None, :]
    # the 1e-9 keeps the sqrt differentiable for identical rows (as PULSE)
    dist = ((a - b).pow(2).sum(-1) + 1e-9).sqrt()
    summ = ((a + b).pow(2).sum(-1) + 1e-9).sqrt()
    theta = 2 * torch.atan2(dist, summ)
    return scale * theta.pow(2).mean(dim=(1, 2))


def floored_mse(pred: Tensor, target: Tensor, eps: float) -> Tensor:
    """PULSE's data term ``max(ε, MSE)`` per image: no gradient once inside the ε tolerance."""
    return (pred - target).pow(2).flatten(1).mean(1).clamp(min=eps)


# ---------------------------------------------------------------------------------------
# BRGM (razvanmarinescu/brgm-pytorch: bayesmap_recon.py)


@torch.no_grad()
def brgm_w_statistics(w_samples: Tensor) -> tuple[Tensor, Tensor]:
    """BRGM's prior fit from mapping samples ``[N, D]``: the mean ``w̄`` and ONE scalar std
    ``σ_s = sqrt(Σ_n ‖w_n − w̄‖² / N)`` (the spread of the whole vector, not per dimension)."""
    mean = w_samples.mean(0)
    std_scalar = ((w_samples - mean).pow(2).sum() / w_samples.shape[0]).sqrt()
    return mean, std_scalar


def brgm_w_prior(ws: Tensor, w_mean: Tensor, std_scalar: Tensor | float) -> Tensor:
    """BRGM's Gaussian prior on W+ ``[B, L, D]`` -> ``[B]``: ``mean(((w − w̄)/σ_s)²)``."""
    return ((ws - w_mean) / std_scalar).pow(2).flatten(1).mean(1)


def brgm_cosine_prior(ws: Tensor) -> Tensor:
    """BRGM's cosine prior ``Σ_{i,j} |1 − cos(w_i, w_j)|`` over all ordered pairs -> ``[B]``.

    (BRGM's own loop reads image 0 for every batch entry; here each image uses its own rows.)
    """
    unit = F.normalize(ws, dim=-1)
    cos = unit @ unit.transpose(1, 2)
    return (1 - cos).abs().flatten(1).sum(1)


def brgm_perceptual(
    pred_lr: Tensor,
    y: Tensor,
    perceptual: PerceptualNet,
    size: int = 256,
    feature_count: int = VGG16_LPIPS_FEATURES_256,
) -> Tensor:
    """BRGM's perceptual term (before its weight) -> ``[B]``.

    BRGM resizes both LR images to 256² (``area``, i.e. nearest when enlarging) and takes the
    MEAN squared difference of NVIDIA's LPIPS-VGG16 feature vector, whose SUM is the LPIPS
    distance: so the term is ``LPIPS(up(D(x)), up(y)) / feature_count``.
    """
    up_pred = F.interpolate(pred_lr, size=(size, size), mode="area")
    up_y = F.interpolate(y, size=(size, size), mode="area")
    return perceptual(up_pred, up_y).reshape(-1) / feature_count


# ---------------------------------------------------------------------------------------
# Robust unsupervised restoration (yohan-pg/robust-unsupervised: loss_function.py, optimizer.py)


def multiscale_lpips(
    pred: Tensor,
    target: Tensor,
    perceptual: PerceptualNet | None,
    min_res: int = 16,
    level_weights: Sequence[float] = (1.0,) * 6,
    l1_weight: float = 0.1,
) -> Tensor:
    """Multiscale LPIPS + ``l1_weight``·L1 at the coarsest scale -> ``[B]``.

    LPIPS at the input scale, then after each 2× average pooling, while the resolution is
    above ``min_res`` (LPIPS is meaningless below, as the authors say) and for at most
    ``len(level_weights)`` levels; the L1 term compares the images after the last pooling.
    ``perceptual=None`` drops the LPIPS levels (weights missing offline) and keeps the L1.
    """
    total = pred.new_zeros(pred.shape[0])
    for weight in level_weights:
        if target.shape[-1] <= min_res:
            break
        if weight > 0 and perceptual is not None:
            total = total + weight * perceptual(pred, target).reshape(-1)
        pred, target = F.avg_pool2d(pred, 2), F.avg_pool2d(target, 2)
    return total + l1_weight * (pred - target).abs().flatten(1).mean(1)


class NormalizedGD(torch.optim.Optimizer):
    """Normalised gradient descent (robust-unsupervised ``NGD``): each vector along the last
    dim moves by exactly ``lr`` against its gradient direction: ``p -= lr · g / ‖g‖``.

    Hand-written because no library optimiser normalises per row; NaNs (zero gradients) -> 0.
    """

    def __init__(self, params, lr: float):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad / p.grad.norm(dim=-1, keepdim=True)
                p.sub_(group["lr"] * torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0))
        return loss
