"""What the peer methods share (method.md §5): their loss terms, PULSE/ILO's Gaussianised map,
robust's row-normalised gradient, and the plumbing every peer needs (its perceptual network,
its own downsampler, the diagonal fit of W, seeded noise maps).

Loss terms are pure functions on batched tensors, per image (``[B]``), so the shared loop can
sum them over the batch. Each follows its authors' public code (cited per function); the
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


class _RowNormalizedGrad(torch.autograd.Function):
    """Identity forward; backward divides the gradient of every row (last dim) by its norm."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        g = grad / grad.norm(dim=-1, keepdim=True)
        return torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)


def normalize_grad_rows(x: Tensor) -> Tensor:
    """``x`` unchanged, but the gradient flowing back into it is normalised per row.

    With plain SGD (no momentum) this is robust-unsupervised's ``NGD`` step exactly:
    every vector along the last dim moves by ``lr`` against its gradient direction,
    ``p -= lr · g/‖g‖`` (rows with zero gradient stay). The shared loop's ``normalized_gd``
    normalises per image instead; for W+ and W++ the authors normalise per row.
    Hand-written: no library optimiser normalises per row. Use ``x`` once in the graph.
    """
    return _RowNormalizedGrad.apply(x)


# ---------------------------------------------------------------------------------------
# Plumbing the peer methods share: their perceptual network, their own downsampler, the
# diagonal fit of W, noise maps.

OWN_DOWNSAMPLERS = {
    "pulse": "bicubic_pulse",  # PULSE bicubic.py
    "brgm": "bicubic_torch",  # BRGM forwardModels.py: F.interpolate bicubic, no antialiasing
    "ilo": "bicubic_pulse",  # ILO utils.py: PULSE's BicubicDownSample
    "robust": "box",  # robust-unsupervised benchmark: avg_pool2d
    "wplus": "bicubic_pulse",  # the RLS paper's operator
}


def unit(image: Tensor) -> Tensor:
    """Generator output ``[-1, 1]`` -> the ``[0, 1]`` space of losses and degradations."""
    return (image + 1) / 2


def method_degradation(D: torch.nn.Module, downsampler: str, method: str) -> torch.nn.Module:
    """The operator inside a peer's loss: the shared ``D`` (``downsampler="shared"``, the
    default, so that comparisons are fair) or the same corruptions with the method's own
    downsampling kernel (``"own"``, see :data:`OWN_DOWNSAMPLERS`)."""
    if downsampler == "shared":
        return D
    if downsampler != "own":
        raise ValueError(f"{method}: downsampler must be 'shared' or 'own', got {downsampler!r}")
    from rls.degradations import Degradation

    kernel = OWN_DOWNSAMPLERS[method]
    if getattr(D, "downsampler", None) == kernel:
        return D
    if not hasattr(D, "scale") or not hasattr(D, "corruptions"):
        raise TypeError(f"{method}: downsampler='own' needs an rls.degradations.Degradation")
    return Degradation(D.scale, list(D.corruptions), downsampler=kernel, name=D.name)


def resolve_perceptual(
    spec, method: str, weights_path: str | None = None, allow_download: bool | None = None
) -> tuple[torch.nn.Module | None, str]:
    """The perceptual network a peer uses, and the note for results.csv / the report.

    ``spec``: a module/callable ``net(a, b) -> [B]`` on [0, 1] images (tests inject a small
    feature network), ``"lpips-vgg"`` (the authors' LPIPS-VGG16; its ImageNet backbone file is
    looked up offline-first by :mod:`rls.weights`), or ``None``/``"off"``. A missing backbone
    is reported here, at construction, naming the file; the term is then off.
    """
    import logging

    if spec is None or spec == "off":
        return None, f"{method}: perceptual term off (configured)"
    if not isinstance(spec, str):
        if isinstance(spec, torch.nn.Module):
            spec.eval().requires_grad_(False)
        return spec, ""
    if spec != "lpips-vgg":
        raise ValueError(
            f"{method}: perceptual must be 'lpips-vgg', 'off' or a module, got {spec!r}"
        )
    from rls.metrics import LPIPS
    from rls.weights import KNOWN_WEIGHTS, MissingWeightsError, resolve_weights

    try:
        path = resolve_weights("vgg16", weights_path, allow_download)
    except MissingWeightsError as err:
        logging.getLogger(__name__).warning("%s: LPIPS-VGG perceptual term OFF: %s", method, err)
        return (
            None,
            f"{method}: LPIPS-VGG perceptual term OFF ({KNOWN_WEIGHTS['vgg16'].filename} missing)",
        )
    return LPIPS("vgg", path).eval().requires_grad_(False), ""


_DIAGONAL_FITS: dict[tuple[int, int, int], tuple[torch.nn.Module, torch.nn.Module]] = {}


def diagonal_fit(G: torch.nn.Module, n: int = 1_000_000, seed: int = 0) -> torch.nn.Module:
    """PULSE/ILO's diagonal fit of ``LeakyReLU_5(w)`` (method.md §2): a ``LeakyDiagonalPrior``
    (``mu``, ``sigma``) from ``n`` seeded mapping samples (PULSE: 1,000,000, seed 0). Fitted
    once per (generator, n, seed) in this process and shared by every method that needs it."""
    key = (id(G), int(n), int(seed))
    hit = _DIAGONAL_FITS.get(key)
    if hit is None or hit[0] is not G:
        from rls.flows import LeakyDiagonalPrior, sample_w

        with torch.no_grad():
            w = sample_w(G, int(n), seed=int(seed), batch_size=min(int(n), 65536))
            hit = (G, LeakyDiagonalPrior(G.w_dim).to(w.device).fit(w))
        _DIAGONAL_FITS[key] = hit
    return hit[1]


class GaussianFitCache:
    """A method's handle on :func:`diagonal_fit` with its own sample count and seed."""

    def __init__(self, n: int = 1_000_000, seed: int = 0):
        self.n, self.seed = int(n), int(seed)

    def __call__(self, G: torch.nn.Module) -> torch.nn.Module:
        return diagonal_fit(G, self.n, self.seed)


def noise_maps(ctx, salt: str) -> list[Tensor]:
    """One N(0, 1) map ``[B, 1, H, W]`` per noise input of ``ctx.G``, seeded per image."""
    return [
        ctx.randn((1, h, w), f"{salt}{i}")
        for i, (h, w) in enumerate(ctx.G.synthesis.noise_shapes())
    ]
