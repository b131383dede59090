"""Degradations (method.md §1, §6): the paper's downsampler, corruptions, seeding, configs."""

from __future__ import annotations

from pathlib import Path

import kornia
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rls.degradations import (
    CORRUPTIONS,
    KERNELS,
    Degradation,
    Downsample,
    build_corruption,
    build_degradation,
    downsample,
    pulse_bicubic_conv,
    pulse_bicubic_taps,
)
from rls.degradations.corruptions import fft_filter2d

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "corruption"


def structured_image(size: int = 64, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """A smooth gradient + disc + checkerboard, values well inside (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    disc = ((xx - 0.5) ** 2 + (yy - 0.45) ** 2 < 0.09).float()
    checker = ((torch.arange(size)[:, None] // 4 + torch.arange(size)[None] // 4) % 2).float()
    base = 0.25 + 0.3 * xx + 0.2 * disc + 0.1 * checker
    tint = 0.9 + 0.1 * torch.rand(channels, 1, 1, generator=g)
    return (base[None] * tint).clamp(0, 1)[None]


# --- the paper's bicubic downsampler ---------------------------------------------------------


def numpy_pulse_bicubic(x: np.ndarray, s: int) -> np.ndarray:
    """Independent computation: Keys cubic (a=-0.5) taps, reflect pad, strided correlation."""
    a = -0.5
    n = 4 * s
    t = np.abs((np.arange(n) - n // 2 + 0.5) / s)
    k = np.piecewise(
        t,
        [t <= 1, (t > 1) & (t < 2)],
        [
            lambda u: (a + 2) * u**3 - (a + 3) * u**2 + 1,
            lambda u: a * u**3 - 5 * a * u**2 + 8 * a * u - 4 * a,
            0.0,
        ],
    )
    k = k / k.sum()
    before, after = (3 * s) // 2, 3 * s - (3 * s) // 2

    def along(arr: np.ndarray, axis: int) -> np.ndarray:
        axis = axis % arr.ndim  # the window axis is appended last: use a positive index
        pad = [(0, 0)] * arr.ndim
        pad[axis] = (before, after)
        padded = np.pad(arr, pad, mode="reflect")  # numpy "reflect" = torch "reflect"
        windows = np.lib.stride_tricks.sliding_window_view(padded, n, axis=axis)
        windows = np.take(windows, np.arange(0, windows.shape[axis], s), axis=axis)
        return windows @ k

    return along(along(x, axis=-2), axis=-1)


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_pulse_bicubic_matches_independent_numpy(scale):
    x = torch.rand(2, 3, 4 * scale, 6 * scale, generator=torch.Generator().manual_seed(scale))
    ref = numpy_pulse_bicubic(x.double().numpy(), scale)
    for ours in (downsample(x.double(), scale), pulse_bicubic_conv(x.double(), scale)):
        np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-12)
        assert ours.shape == (2, 3, 4, 6)
    module = Downsample(scale)
    np.testing.assert_allclose(module(x).numpy(), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("scale", [2, 4, 8, 16])
def test_taps_are_normalised_symmetric_4s(scale):
    k = pulse_bicubic_taps(scale)
    assert k.shape == (4 * scale,)
    assert torch.allclose(k.sum(), torch.tensor(1.0, dtype=k.dtype))
    assert torch.allclose(k, k.flip(0))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("scale", [2, 3, 8, 16])
def test_constant_image_is_preserved(kernel, scale):
    x = torch.full((1, 3, 4 * scale, 4 * scale), 0.37, dtype=torch.float64)
    y = downsample(x, scale, kernel)
    assert y.shape == (1, 3, 4, 4)
    assert torch.allclose(y, torch.full_like(y, 0.37), atol=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("scale", [2, 4, 8, 16])
def test_shapes_for_paper_scales(kernel, scale):
    x = torch.rand(3, 3, 64, 64)
    D = build_degradation(scale, downsampler=kernel)
    assert D(x).shape == (3, 3, 64 // scale, 64 // scale)
    assert D.lr_size(64) == 64 // scale
    assert D.lr_size((64, 128)) == (64 // scale, 128 // scale)


def test_module_matches_functional_and_box_equals_area():
    x = torch.rand(2, 3, 32, 32)
    for kernel in KERNELS:
        assert torch.allclose(Downsample(4, kernel)(x), downsample(x, 4, kernel), atol=1e-6)
    assert torch.allclose(downsample(x, 4, "box"), downsample(x, 4, "area"), atol=1e-6)


def test_bad_downsampling_arguments_give_clear_errors():
    with pytest.raises(ValueError, match="not divisible by the downsampling scale 8"):
        downsample(torch.rand(1, 3, 30, 32), 8)
    with pytest.raises(ValueError, match="not divisible"):
        build_degradation(8).lr_size(100)
    with pytest.raises(ValueError, match="unknown downsampling kernel 'lanczos'"):
        downsample(torch.rand(1, 3, 32, 32), 2, kernel="lanczos")
    with pytest.raises(ValueError, match="positive integer"):
        Downsample(2.5)
    with pytest.raises(ValueError, match="needs an image larger"):
        downsample(torch.rand(1, 3, 16, 16), 16)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        downsample(torch.rand(3, 32, 32), 2)


# --- corruptions ------------------------------------------------------------------------------


def deviation(name: str, severity: int, x: torch.Tensor, seeds: torch.Tensor) -> float:
    clean = build_degradation(2)(x)
    y = build_degradation(2, name, severity=severity).observe(x, seeds)
    return (y - clean).abs().mean().item()


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_higher_severity_deviates_more(name):
    x = structured_image(64).expand(2, -1, -1, -1)
    seeds = torch.tensor([11, 12])
    devs = [deviation(name, s, x, seeds) for s in range(1, 6)]
    assert all(d > 0 for d in devs)
    assert all(a < b for a, b in zip(devs, devs[1:])), devs


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_severity_outside_1_to_5_is_refused(name):
    with pytest.raises(ValueError, match="severity must be None or an integer 1..5"):
        build_corruption(name, severity=6)


def test_paper_presets():
    assert build_corruption("gaussian_noise").sigma == 0.1
    assert build_corruption("salt_pepper").amount == 0.05
    blur = build_corruption("gaussian_blur")
    assert (blur.radius, blur.kernel_size) == (1.0, 7)
    motion = build_corruption("motion_blur")
    assert (motion.kernel_size, motion.angle, motion.side) == (49, 45.0, "hr")
    assert build_corruption("jpeg").quality == 75
    for name in ("gaussian_noise", "salt_pepper", "gaussian_blur", "jpeg"):
        assert build_corruption(name).side == "lr"


def test_gaussian_blur_radius_is_sigma():
    k = build_corruption("gaussian_blur", radius=2.0).kernel[0].double()
    r = torch.arange(k.shape[-1], dtype=torch.float64) - k.shape[-1] // 2
    assert torch.allclose(k.sum(), torch.tensor(1.0, dtype=k.dtype))
    std = (k.sum(0) * r**2).sum().sqrt()  # marginal std of the truncated Gaussian
    assert abs(std.item() - 2.0) < 0.05


def test_noise_statistics_match_settings():
    x = torch.full((4, 3, 32, 32), 0.5)
    seeds = torch.arange(4)
    noisy = build_corruption("gaussian_noise", sigma=0.05).observe(x, seeds)
    assert abs((noisy - x).std().item() - 0.05) < 0.003
    sp = build_corruption("salt_pepper", amount=0.2).observe(x, seeds)
    hit = (sp != 0.5).all(1).float()  # whole pixels flipped, channels together
    assert ((sp == 0) | (sp == 1) | (sp == 0.5)).all()
    assert abs(hit.mean().item() - 0.2) < 0.02
    assert abs((sp == 1).all(1).float().mean().item() - 0.1) < 0.02


def test_noise_is_identity_inside_the_loss():
    x = torch.rand(2, 3, 32, 32)
    for name in ("gaussian_noise", "salt_pepper"):
        D = build_degradation(4, name)
        assert torch.equal(D(x), downsample(x, 4))


def test_motion_blur_acts_on_hr_before_downsampling():
    x = torch.rand(2, 3, 64, 64)
    D = build_degradation(4, "motion_blur", kernel_size=9)
    blurred = kornia.filters.motion_blur(x, 9, 45.0, 1.0, border_type="constant")
    assert torch.allclose(D.apply_hr(x), blurred, atol=1e-6)
    assert torch.allclose(D(x), downsample(blurred, 4), atol=1e-6)
    assert torch.allclose(D.observe(x, torch.tensor([0, 1])), D(x))


@pytest.mark.parametrize("border_type", ["constant", "reflect", "replicate"])
def test_fft_filter_equals_kornia_direct_filter(border_type):
    x = torch.rand(2, 3, 64, 48, dtype=torch.float64)
    kernel = build_corruption("motion_blur").kernel.double()  # 49 taps: the FFT path
    direct = kornia.filters.filter2d(x, kernel, border_type=border_type)
    assert torch.allclose(fft_filter2d(x, kernel, border_type), direct, atol=1e-12)
    D = build_degradation(1, "motion_blur", border_type=border_type)
    assert torch.allclose(D(x), direct, atol=1e-12)


def test_side_is_a_parameter():
    x = torch.rand(1, 3, 64, 64)
    on_hr = build_degradation(4, "gaussian_blur", side="hr")
    assert torch.allclose(on_hr(x), downsample(on_hr.corruptions[0](x), 4))
    assert not torch.allclose(on_hr(x), build_degradation(4, "gaussian_blur")(x))
    with pytest.raises(ValueError, match="side must be 'hr' or 'lr'"):
        build_corruption("jpeg", side="middle")


def test_module_apply_still_works():
    D = build_degradation(2, ["gaussian_blur", "jpeg", "gaussian_noise", "motion_blur"])
    seen = []
    D.apply(lambda m: seen.append(type(m).__name__))
    assert {"GaussianBlur", "Jpeg", "GaussianNoise", "MotionBlur", "Degradation"} <= set(seen)


def test_in_loss_false_keeps_a_corruption_out_of_the_loss_only():
    x = structured_image(32)
    D = build_degradation(2, {"name": "jpeg", "in_loss": False})
    assert torch.equal(D(x), downsample(x, 2))
    assert torch.equal(
        D.observe(x, torch.tensor([0])), build_degradation(2, "jpeg").observe(x, torch.tensor([0]))
    )
    assert "not in loss" in D.describe()
    cfg = OmegaConf.load(CONFIGS / "authors_inputs.yaml")
    assert build_degradation(scale=2, **cfg).corruptions[0].in_loss is False


def test_real_jpeg_close_to_differentiable_jpeg():
    x = structured_image(32)
    jpeg = build_corruption("jpeg")
    real = jpeg.observe(x, torch.tensor([0]))
    model = jpeg(x)
    assert (real - x).abs().mean() > 1e-3  # the codec changed something
    assert (real - model).abs().mean() < 0.5 * (real - x).abs().mean() + 5e-3
    gray = jpeg.observe(x[:, :1], torch.tensor([0]))
    assert gray.shape == (1, 1, 32, 32) and jpeg(x[:, :1]).shape == (1, 1, 32, 32)


# --- gradients --------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", KERNELS)
def test_gradcheck_downsamplers(kernel):
    x = torch.rand(1, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: downsample(t, 2, kernel), (x,))


@pytest.mark.parametrize(
    "name,params",
    [
        ("gaussian_blur", {}),
        ("motion_blur", {"kernel_size": 5, "side": "lr"}),
        ("motion_blur", {"kernel_size": 15, "side": "lr"}),  # the FFT path
        ("jpeg", {}),
    ],
)
def test_gradcheck_forward_model_corruptions(name, params):
    c = build_corruption(name, **params)
    x = (0.2 + 0.6 * torch.rand(1, 3, 8, 8, dtype=torch.float64)).requires_grad_()
    # fast_mode checks random projections of the Jacobian: the JPEG model is slow to probe
    assert torch.autograd.gradcheck(c, (x,), atol=1e-5, fast_mode=name == "jpeg")


def test_gradcheck_full_degradation():
    D = build_degradation(
        2, ["gaussian_blur", "gaussian_noise", {"name": "motion_blur", "kernel_size": 5}]
    )
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(D, (x,))


# --- seeding ----------------------------------------------------------------------------------


NOISY = ["gaussian_noise", "salt_pepper", ["gaussian_blur", "gaussian_noise"]]


@pytest.mark.parametrize("corruption", NOISY)
def test_same_seed_same_lr_different_seed_different(corruption):
    x = structured_image(32).expand(3, -1, -1, -1)
    D = build_degradation(4, corruption)
    a = D.observe(x, torch.tensor([5, 5, 6]))
    b = D.observe(x, torch.tensor([5, 5, 6]))
    assert torch.equal(a, b)
    assert torch.equal(a[0], a[1])
    assert not torch.equal(a[0], a[2])


@pytest.mark.parametrize("corruption", NOISY + ["jpeg", "motion_blur"])
def test_observe_is_batch_invariant(corruption):
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    seeds = torch.tensor([3, 1, 4, 1_000_000_000_007])
    D = build_degradation(4, corruption)
    batch = D.observe(x, seeds)
    for b in range(4):
        alone = D.observe(x[b : b + 1], seeds[b : b + 1])
        assert torch.allclose(batch[b : b + 1], alone, atol=1e-6)


def test_noise_draw_does_not_depend_on_the_rest_of_the_chain():
    x = structured_image(32)
    seeds = torch.tensor([9])
    alone = build_degradation(2, "gaussian_noise").observe(x, seeds)
    composed = build_degradation(2, ["jpeg", "gaussian_noise"], quality=100)
    jpeg_only = build_degradation(2, "jpeg", quality=100).observe(x, seeds)
    assert torch.allclose(
        composed.observe(x, seeds) - jpeg_only, alone - downsample(x, 2), atol=0.02
    )


def test_wrong_number_of_seeds_is_refused():
    with pytest.raises(ValueError, match="2 seeds for a batch of 3"):
        build_degradation(2, "gaussian_noise").observe(torch.rand(3, 3, 8, 8), torch.tensor([1, 2]))


# --- building from config ---------------------------------------------------------------------

EXPECTED_CONFIGS = {
    "none",
    "gaussian_noise",
    "salt_pepper",
    "gaussian_blur",
    "motion_blur",
    "jpeg",
    "noise_blur",
}


def test_config_files_build_at_paper_scales():
    found = {p.stem for p in CONFIGS.glob("*.yaml")}
    assert EXPECTED_CONFIGS <= found
    for stem in sorted(found):
        cfg = OmegaConf.create({"scale": 8, "corruption": OmegaConf.load(CONFIGS / f"{stem}.yaml")})
        assert set(cfg.corruption) >= {"name", "corruptions", "severity"}
        for scale in (8, 16, 32, 64):
            D = build_degradation(scale=scale, **cfg.corruption)
            assert isinstance(D, Degradation) and D.scale == scale
            assert D.lr_size(1024) == 1024 // scale
            assert D.name == stem
        assert D(torch.rand(1, 3, 128, 128)).shape == (1, 3, 2, 2)
        assert stem in D.describe()


def test_build_parameters_and_compositions():
    D = build_degradation(8, "gaussian_noise", sigma=0.05)
    assert D.corruptions[0].sigma == 0.05
    D = build_degradation(
        8, ["gaussian_blur", {"name": "gaussian_noise", "severity": 5}], severity=1
    )
    assert D.corruptions[0].radius == 0.5 and D.corruptions[1].sigma == 0.38
    assert build_degradation(8, "none").corruptions.__len__() == 0
    assert "gaussian_blur" in repr(D) and "x8 bicubic_pulse" in D.describe()
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        build_degradation(8, "fog")
    with pytest.raises(ValueError, match="'quality' is not taken by any corruption"):
        build_degradation(8, "gaussian_noise", quality=10)
    with pytest.raises(ValueError, match="either 'corruption' or 'corruptions'"):
        build_degradation(8, "jpeg", corruptions=["jpeg"])


@pytest.mark.parametrize("corruption", [*CORRUPTIONS, ["gaussian_blur", "gaussian_noise"]])
@pytest.mark.parametrize("per_channel", [False, True])
def test_grey_faces_stay_grey_under_every_corruption(corruption, per_channel):
    """data=lfw serves grey faces replicated to RGB: the observed LR input must be grey
    too (one noise draw per pixel for the replicated channels), as a grey photo's would be;
    a colour image in the same batch keeps independent per-channel noise."""
    from rls.data.lfw import lfw_faces

    faces = lfw_faces("heldout", resolution=32)[:3]  # [3, 3, 32, 32] grey replicated
    colour = structured_image(32)[:1]
    x = torch.cat([faces, colour])
    params = {"per_channel": True} if per_channel and corruption == "salt_pepper" else {}
    D = build_degradation(4, corruption, **params)
    y = D.observe(x, torch.arange(4))
    spread = (y - y[:, :1]).abs().amax(dim=(1, 2, 3))
    assert (spread[:3] <= 1e-6).all(), f"{corruption}: grey inputs came out coloured {spread}"
    if corruption in ("gaussian_noise", "salt_pepper") or isinstance(corruption, list):
        if corruption != "salt_pepper" or per_channel:
            clean = build_degradation(4, "none").observe(colour, torch.arange(1))
            noise = y[3:] - clean
            assert not torch.allclose(noise[:, 0], noise[:, 1])  # colour: per-channel draws
