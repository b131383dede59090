"""Image corruptions for the robustness study (method.md §6), each with a severity 1..5.

Every corruption has two faces:

* ``forward(x)``: the deterministic, differentiable part that belongs to the forward model
  D used inside a search loss (blurs and JPEG: the operator itself; additive noise and
  salt-and-pepper: the identity, because noise is a likelihood assumption, not something
  to redraw at every optimisation step);
* ``observe(x, seeds)``: the physical process that makes an observed image, with every
  random draw of image b coming from ``seeds[b]`` alone (so results do not depend on the
  batch) and JPEG done by a real codec (PIL) instead of its differentiable model.

``in_loss=False`` keeps a deterministic corruption out of ``forward`` (e.g. the authors'
JPEG-saved inputs with a bicubic-only loss); ``side`` says whether it acts on the HR image
(before downsampling) or on the LR image.

``severity=None`` means the paper's setting; 1..5 pick an ImageNet-C style table entry
(ImageNet-C's own values for the resolution-free noise and JPEG corruptions, and tables
placed around the paper's value for the spatial blurs, whose size depends on resolution).
"""

from __future__ import annotations

import io
import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from kornia.enhance import jpeg_codec_differentiable
from kornia.filters import filter2d, get_gaussian_kernel2d, get_motion_kernel2d
from PIL import Image
from torch import nn

from rls.seeding import rand_per_seed, randn_per_seed

SIDES = ("hr", "lr")
GREY_ATOL = 1e-6  # channels this close count as one replicated grey channel


def replicated_grey(x: torch.Tensor, atol: float = GREY_ATOL) -> torch.Tensor:
    """``[B]`` bool: which images of ``[B, C, H, W]`` hold one grey channel replicated to
    all C (a grey photo or face served as RGB). Single-channel images count as grey."""
    if x.shape[1] == 1:
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    return (x - x[:, :1]).abs().amax(dim=(1, 2, 3)) <= atol


def grey_where_grey(x: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """Per-channel ``draws`` shaped like ``x``, with the first channel's draw replicated to
    every channel of the grey images of ``x``: noise on a grey image stays grey, as it would
    on the grey photograph itself."""
    grey = replicated_grey(x)
    if not bool(grey.any()):
        return draws
    return torch.where(grey[:, None, None, None], draws[:, :1].expand_as(draws), draws)


class Corruption(nn.Module):
    """Base class: one named corruption, its side of the downsampler and its two faces."""

    name: ClassVar[str]
    in_forward_model: ClassVar[bool]  # False: identity inside D(x), applied only in observe
    default_side: ClassVar[str] = "lr"
    paper: ClassVar[dict[str, Any]]  # the paper's setting (severity=None)
    severities: ClassVar[tuple[dict[str, Any], ...]]  # severity 1..5
    stochastic: ClassVar[bool] = False

    def __init__(self, side: str | None = None, in_loss: bool | None = None):
        super().__init__()
        side = side or self.default_side
        if side not in SIDES:
            raise ValueError(f"{self.name}: side must be 'hr' or 'lr', got {side!r}")
        self.side = side
        # in_loss=False keeps a deterministic corruption out of D(x) while observe still
        # applies it (the authors' setup: JPEG-saved inputs, a bicubic-only loss).
        self.in_loss = self.in_forward_model if in_loss is None else bool(in_loss)

    @classmethod
    def from_severity(cls, severity: int | None = None, **params) -> Corruption:
        """Build with the paper's setting (``None``) or a severity 1..5, then ``params`` on top."""
        if severity is None:
            base = dict(cls.paper)
        elif isinstance(severity, int) and not isinstance(severity, bool) and 1 <= severity <= 5:
            base = dict(cls.severities[severity - 1])
        else:
            raise ValueError(
                f"{cls.name}: severity must be None or an integer 1..5, got {severity!r}"
            )
        try:
            return cls(**{**base, **params})
        except TypeError as err:
            raise ValueError(f"{cls.name}: bad parameters {sorted(params)} ({err})") from None

    def settings(self) -> dict[str, Any]:
        """The parameters that define this corruption (for reports and ``repr``)."""
        raise NotImplementedError

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic, differentiable operator (identity for noise). Not named
        ``apply``: that is ``nn.Module.apply(fn)``, which must keep working."""
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The part inside D(x): ``corrupt`` when in the loss, else the identity."""
        return self.corrupt(x) if self.in_loss else x

    def observe(self, x: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """The observed image; deterministic corruptions just ``corrupt``."""
        return self.corrupt(x)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.settings().items())
        tag = "" if self.in_loss else "; likelihood only" if self.stochastic else "; not in loss"
        return f"{self.name}({args}{tag})"

    def extra_repr(self) -> str:
        return ", ".join([f"{k}={v}" for k, v in self.settings().items()] + [f"side={self.side!r}"])


class GaussianNoise(Corruption):
    """Additive white Gaussian noise of std ``sigma`` on [0, 1] images (paper: 0.1).

    Independent per channel on colour images; on a grey image (one channel replicated) one
    draw per pixel shared by its channels, so the noisy image is grey too.
    """

    name = "gaussian_noise"
    in_forward_model = False
    stochastic = True
    paper = {"sigma": 0.1}
    severities = tuple({"sigma": s} for s in (0.08, 0.12, 0.18, 0.26, 0.38))  # ImageNet-C

    def __init__(
        self, sigma: float, clip: bool = True, side: str | None = None, in_loss: bool | None = None
    ):
        super().__init__(side, in_loss)
        if sigma < 0:
            raise ValueError(f"gaussian_noise: sigma must be >= 0, got {sigma}")
        self.sigma = float(sigma)
        self.clip = clip

    def settings(self):
        return {"sigma": self.sigma}

    def observe(self, x, seeds):
        noise = randn_per_seed(seeds, x.shape[1:], device=x.device, dtype=x.dtype)
        y = x + self.sigma * grey_where_grey(x, noise)
        return y.clamp(0, 1) if self.clip else y


class SaltPepper(Corruption):
    """Impulse noise: a fraction ``amount`` of pixels set to white (salt) or black (pepper).

    One uniform draw u per pixel (shared by its channels unless ``per_channel``):
    u < amount·salt_vs_pepper -> 1, u < amount -> 0. The draws are the same for every
    amount, so a higher amount corrupts a superset of the pixels.
    """

    name = "salt_pepper"
    in_forward_model = False
    stochastic = True
    paper = {"amount": 0.05}
    severities = tuple({"amount": a} for a in (0.03, 0.06, 0.09, 0.17, 0.27))  # ImageNet-C

    def __init__(
        self,
        amount: float,
        salt_vs_pepper: float = 0.5,
        per_channel: bool = False,
        side: str | None = None,
        in_loss: bool | None = None,
    ):
        super().__init__(side, in_loss)
        if not 0 <= amount <= 1 or not 0 <= salt_vs_pepper <= 1:
            raise ValueError(
                f"salt_pepper: amount and salt_vs_pepper must lie in [0, 1], "
                f"got {amount} and {salt_vs_pepper}"
            )
        self.amount = float(amount)
        self.salt_vs_pepper = float(salt_vs_pepper)
        self.per_channel = per_channel

    def settings(self):
        return {"amount": self.amount, "salt_vs_pepper": self.salt_vs_pepper}

    def observe(self, x, seeds):
        c, h, w = x.shape[1:]
        u = rand_per_seed(seeds, (c if self.per_channel else 1, h, w), x.device, x.dtype)
        if self.per_channel:
            u = grey_where_grey(x, u)
        salt = u < self.amount * self.salt_vs_pepper
        pepper = (u < self.amount) & ~salt
        return torch.where(salt, torch.ones_like(x), torch.where(pepper, torch.zeros_like(x), x))


FFT_MIN_KERNEL = 15  # from this kernel size on, filter through the FFT


def fft_filter2d(x: torch.Tensor, kernel: torch.Tensor, border_type: str) -> torch.Tensor:
    """kornia ``filter2d`` (same-size cross-correlation, odd k×k ``kernel`` [1, k, k]) via FFT.

    Hand-written because a direct k×k convolution costs k² operations per pixel: the
    paper's 49-tap motion blur at 1024² took seconds per step on CPU this way, and it runs
    at the HR resolution in every search step. Padding as kornia's, then a circular
    convolution of the padded image whose wrap-free part is exactly the filtered image.
    """
    k = kernel.shape[-1]
    p = k // 2
    padded = F.pad(x, (p, p, p, p), mode=border_type)
    h, w = padded.shape[-2:]
    # Any FFT size >= the padded size keeps the wanted part wrap-free; pick a fast one.
    size = (_fft_size(h), _fft_size(w))
    spectrum = torch.fft.rfft2(kernel[0].flip(-2, -1).to(x.dtype), s=size)
    y = torch.fft.irfft2(torch.fft.rfft2(padded, s=size) * spectrum, s=size)
    return y[..., k - 1 : h, k - 1 : w]


def _fft_size(n: int) -> int:
    """The smallest 2^a·3^b·5^c >= n (sizes the FFT handles fastest)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


class _FilterCorruption(Corruption):
    """A fixed 2-D filter (kornia ``filter2d``) whose kernel is a buffer built once."""

    in_forward_model = True
    border_type: str

    def corrupt(self, x):
        kernel = self.kernel.to(device=x.device, dtype=x.dtype)
        if kernel.shape[-1] >= FFT_MIN_KERNEL:
            return fft_filter2d(x, kernel, self.border_type)
        return filter2d(x, kernel, border_type=self.border_type)


class GaussianBlur(_FilterCorruption):
    """Gaussian blur of radius r, read as PIL's ``GaussianBlur(radius=r)``: sigma = r.

    The kernel spans ±3 sigma (size 2·ceil(3r) + 1, 7 taps at the paper's r = 1); borders
    are replicated, like PIL's edge handling.
    """

    name = "gaussian_blur"
    paper = {"radius": 1.0}
    severities = tuple({"radius": r} for r in (0.5, 1.0, 1.5, 2.0, 3.0))

    def __init__(
        self,
        radius: float,
        kernel_size: int | None = None,
        border_type: str = "replicate",
        side: str | None = None,
        in_loss: bool | None = None,
    ):
        super().__init__(side, in_loss)
        if radius <= 0:
            raise ValueError(f"gaussian_blur: radius must be > 0, got {radius}")
        self.radius = float(radius)
        self.kernel_size = kernel_size or 2 * math.ceil(3 * self.radius) + 1
        self.border_type = border_type
        k = get_gaussian_kernel2d(
            (self.kernel_size, self.kernel_size), torch.tensor([[self.radius, self.radius]])
        )
        self.register_buffer("kernel", k.reshape(1, self.kernel_size, self.kernel_size), False)

    def settings(self):
        return {"radius": self.radius, "kernel_size": self.kernel_size}


class MotionBlur(_FilterCorruption):
    """Linear motion blur (kornia), applied to the HR image before downsampling (method.md §6).

    Paper: kernel 49, angle 45°, direction 1 (kornia ``MotionBlur(49, 45, 1)``); the
    authors' kornia 0.5.8 ``MotionBlur`` padded with zeros (its default then; kornia 0.9
    defaults to reflect), hence ``border_type="constant"`` and the dark rim it leaves.
    """

    name = "motion_blur"
    default_side = "hr"
    paper = {"kernel_size": 49, "angle": 45.0, "direction": 1.0}
    severities = tuple(
        {"kernel_size": k, "angle": 45.0, "direction": 1.0} for k in (9, 17, 33, 49, 65)
    )

    def __init__(
        self,
        kernel_size: int,
        angle: float = 45.0,
        direction: float = 1.0,
        border_type: str = "constant",
        side: str | None = None,
        in_loss: bool | None = None,
    ):
        super().__init__(side, in_loss)
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"motion_blur: kernel_size must be odd and >= 3, got {kernel_size}")
        self.kernel_size = int(kernel_size)
        self.angle = float(angle)
        self.direction = float(direction)
        self.border_type = border_type
        k = get_motion_kernel2d(self.kernel_size, self.angle, self.direction)
        self.register_buffer("kernel", k.reshape(1, self.kernel_size, self.kernel_size), False)

    def settings(self):
        return {"kernel_size": self.kernel_size, "angle": self.angle, "direction": self.direction}


class Jpeg(Corruption):
    """JPEG compression at ``quality`` (paper: PIL's default, 75, used to store the LR inputs).

    Inside the loss: kornia's differentiable JPEG model (Reich et al. 2024); in ``observe``:
    a real PIL encode/decode round trip of the 8-bit image. Grayscale images go through the
    codec as gray RGB.
    """

    name = "jpeg"
    in_forward_model = True
    paper = {"quality": 75}
    severities = tuple({"quality": q} for q in (25, 18, 15, 10, 7))  # ImageNet-C

    def __init__(self, quality: int, side: str | None = None, in_loss: bool | None = None):
        super().__init__(side, in_loss)
        if not 1 <= quality <= 100:
            raise ValueError(f"jpeg: quality must lie in 1..100, got {quality}")
        self.quality = int(quality)
        self.register_buffer("quality_t", torch.tensor([float(quality)]), persistent=False)

    def settings(self):
        return {"quality": self.quality}

    @staticmethod
    def _check_channels(x):
        if x.shape[1] not in (1, 3):
            raise ValueError(f"jpeg: needs 1 or 3 channels, got {x.shape[1]}")

    def corrupt(self, x):
        self._check_channels(x)
        rgb = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        y = jpeg_codec_differentiable(rgb, self.quality_t.to(device=x.device, dtype=x.dtype))
        y = y.mean(1, keepdim=True) if x.shape[1] == 1 else y
        return y.clamp(0, 1)

    def observe(self, x, seeds):
        self._check_channels(x)
        pixels = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        out = []
        for img in pixels:  # the codec works one image at a time
            arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
            buffer = io.BytesIO()
            Image.fromarray(arr).save(buffer, format="JPEG", quality=self.quality)
            decoded = np.asarray(Image.open(buffer))
            out.append(decoded[None] if decoded.ndim == 2 else decoded.transpose(2, 0, 1))
        return torch.from_numpy(np.stack(out)).to(device=x.device, dtype=x.dtype) / 255


CORRUPTIONS: dict[str, type[Corruption]] = {
    c.name: c for c in (GaussianNoise, SaltPepper, GaussianBlur, MotionBlur, Jpeg)
}


def build_corruption(name: str, severity: int | None = None, **params) -> Corruption:
    """One corruption by name, at the paper's setting (``severity=None``) or severity 1..5."""
    if name not in CORRUPTIONS:
        raise ValueError(
            f"unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)} (or 'none')"
        )
    return CORRUPTIONS[name].from_severity(severity, **params)
