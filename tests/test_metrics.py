"""Metrics: hand-checkable per-image values, LPIPS/FID/KID plumbing on small networks built
here, skipping missing pretrained weights with one warning, and DDP-synced accumulation."""

import logging
import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from rls import weights
from rls.metrics import (
    LPIPS,
    MS_SSIM_MIN_SIZE,
    RestorationMetrics,
    build_inception,
    build_lpips,
    per_image_metrics,
)


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No test may touch the network or the user's caches."""
    monkeypatch.setenv("RLS_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("RLS_WEIGHTS_DIR", raising=False)


def pool4(x):
    return F.avg_pool2d(x, 4)


class TinyFeatures(nn.Module):
    """A small fixed conv feature extractor standing in for Inception."""

    num_features = 4

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, self.num_features, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.zero_()

    def forward(self, x):
        return torch.tanh(self.conv(x)).mean((2, 3))


def images(n, seed, size=32):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_psnr_of_a_known_mse_and_identical_images():
    hr = torch.full((2, 3, 16, 16), 0.5)
    sr = hr.clone()
    sr[0] += 0.1  # MSE 0.01 -> 20 dB
    sr[1, :, :8] += 0.2  # half the pixels off by 0.2: MSE 0.02
    m = per_image_metrics(sr, hr)
    torch.testing.assert_close(m["psnr"], torch.tensor([20.0, 10 * math.log10(50)]))
    same = per_image_metrics(hr, hr)
    assert torch.isinf(same["psnr"]).all()
    torch.testing.assert_close(same["ssim"], torch.ones(2))


def test_ssim_equals_scikit_image_with_a_gaussian_window():
    """SSIM as Wang et al. define it, computed independently by scikit-image: Gaussian
    window σ 1.5, population covariances, data range 1, mean over the pixels whose window
    lies inside the image."""
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(4)
    hr = torch.rand(3, 3, 40, 28, generator=g)
    sr = torch.stack(
        [
            hr[0] + 0.3 * torch.randn(hr[0].shape, generator=g),  # noise
            F.avg_pool2d(hr[1:2], 3, stride=1, padding=1)[0],  # blur
            0.6 * hr[2] + 0.3,  # contrast and brightness
        ]
    ).clamp(0, 1)
    ours = per_image_metrics(sr, hr)["ssim"]
    expected = [
        structural_similarity(
            s.double().numpy(),
            h.double().numpy(),
            channel_axis=0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        for s, h in zip(sr, hr)
    ]
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float32), atol=2e-5, rtol=0)
    assert ours.max() < 0.9  # far from 1: a wrong data range (255) would give ~1


def test_ssim_is_nan_when_its_window_does_not_fit():
    small = images(2, 0, size=10)
    assert torch.isnan(per_image_metrics(small, small)["ssim"]).all()
    fits = images(1, 0, size=11)
    torch.testing.assert_close(per_image_metrics(fits, fits)["ssim"], torch.ones(1))


def test_metrics_are_per_image_whatever_the_batch():
    hr, noise = images(3, 0), 0.1 * torch.randn(3, 3, 32, 32, generator=torch.Generator())
    sr = (hr + noise).clamp(0, 1)
    batch = per_image_metrics(sr, hr, pool4(hr), pool4)
    for i in range(3):
        alone = per_image_metrics(sr[i : i + 1], hr[i : i + 1], pool4(hr[i : i + 1]), pool4)
        for key in ("psnr", "ssim", "lr_psnr"):
            torch.testing.assert_close(batch[key][i : i + 1], alone[key])
    assert (batch["ssim"] < 1).all() and (batch["ssim"] > 0).all()


def test_lr_psnr_compares_the_degraded_output_with_the_observation():
    hr = images(2, 1)
    y = pool4(hr)
    sr = hr + 0.05 * torch.randn_like(hr)  # LR-consistent up to noise averaged by the pool
    m = per_image_metrics(sr.clamp(0, 1), hr, y, pool4)
    expected = -10 * torch.log10((pool4(sr.clamp(0, 1)) - y).pow(2).flatten(1).mean(1))
    torch.testing.assert_close(m["lr_psnr"], expected)
    assert "lr_psnr" not in per_image_metrics(sr, hr)  # no y, no D: not computed
    lr_only = per_image_metrics(sr.clamp(0, 1), None, y, pool4)
    assert set(lr_only) == {"lr_psnr"}


def test_lr_psnr_with_the_real_degradation():
    degradations = pytest.importorskip("rls.degradations")
    D = degradations.Degradation(scale=4)
    hr = images(2, 2)
    m = per_image_metrics(hr, hr, D(hr), D)
    assert torch.isinf(m["lr_psnr"]).all()
    m = per_image_metrics(hr.flip(-1), hr, D(hr), D)
    assert torch.isfinite(m["lr_psnr"]).all() and (m["lr_psnr"] > m["psnr"]).all()


def test_ms_ssim_is_nan_with_a_note_when_too_small(caplog):
    caplog.set_level(logging.INFO, logger="rls.metrics")
    from rls.metrics import per_image as metrics

    metrics._notes_given.discard("ms_ssim")
    m = per_image_metrics(images(2, 0), images(2, 1))
    assert torch.isnan(m["ms_ssim"]).all()
    assert any("MS-SSIM" in r.getMessage() for r in caplog.records)
    big = images(1, 3, size=MS_SSIM_MIN_SIZE)
    torch.testing.assert_close(per_image_metrics(big, big)["ms_ssim"], torch.ones(1))


def test_latent_error_is_the_mean_squared_w_plus_error():
    w_true = torch.zeros(2, 4, 8)
    w_hat = w_true.clone()
    w_hat[1, 0] = 2.0  # one of 4 rows off by 2 everywhere: mean 4 / 4 = 1
    m = per_image_metrics(images(2, 0), images(2, 0), w_hat=w_hat, w_true=w_true)
    torch.testing.assert_close(m["latent_error"], torch.tensor([0.0, 1.0]))


# ---------------------------------------------------------------------------------------------
# LPIPS on a random AlexNet backbone written to a checkpoint file like torchvision's


@pytest.fixture(scope="module")
def alex_file(tmp_path_factory):
    import torchvision

    torch.manual_seed(0)
    features = torchvision.models.alexnet(weights=None).features
    path = tmp_path_factory.mktemp("weights") / weights.KNOWN_WEIGHTS["alexnet"].filename
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def alex_lpips(alex_file):
    return build_lpips("alex", alex_file)


def test_lpips_from_a_backbone_file(alex_lpips, alex_file):
    net = alex_lpips
    a, b = images(2, 0), images(2, 1)
    torch.testing.assert_close(net(a, a), torch.zeros(2))
    d = net(a, b)
    assert d.shape == (2,) and (d > 0).all()
    torch.testing.assert_close(d, net(b, a))
    m = per_image_metrics(b, a, lpips_nets={"alex": net})
    torch.testing.assert_close(m["lpips_alex"], d)
    # the backbone really is the file's (torchvision layer indices kept: conv 3 is features.3)
    state = torch.load(alex_file)
    torch.testing.assert_close(getattr(net.net.net.slice2, "3").weight, state["features.3.weight"])


def test_lpips_matches_the_reference_lpips_package(alex_lpips, alex_file):
    """Same backbone file into the authors' ``lpips`` package: the same distances."""
    import warnings

    import lpips

    with warnings.catch_warnings():  # lpips uses torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore")
        reference = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    state = torch.load(alex_file)
    reference.net.load_state_dict(
        {
            k: state[f"features.{k.split('.', 2)[1]}.{k.split('.', 2)[2]}"]
            for k in reference.net.state_dict()
        }  # fmt: skip
    )
    a, b = images(2, 0), images(2, 1)
    with torch.no_grad():
        expected = reference(a, b, normalize=True).reshape(2)
    torch.testing.assert_close(alex_lpips(a, b), expected)


def test_lpips_is_differentiable_in_its_inputs(alex_lpips):
    """Search losses (robust, BRGM) backpropagate through LPIPS to the image."""
    a = images(2, 0).mul(0.8).add(0.1).requires_grad_(True)
    alex_lpips(a, images(2, 1)).sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_lpips_rejects_a_wrong_file_naming_it(alex_lpips, tmp_path):
    path = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match=r"bad.pth: .*features\.0\.weight has shape"):
        alex_lpips.load_backbone(path)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.pth: not a readable torch checkpoint"):
        alex_lpips.load_backbone(tmp_path / "junk.pth")
    with pytest.raises(ValueError, match="squeeze"):
        LPIPS("squeeze")


def test_weights_found_in_the_configured_dir_and_never_downloaded_offline(
    alex_file, monkeypatch, tmp_path
):
    with pytest.raises(weights.MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
        weights.resolve_weights("alexnet")  # offline: no download attempt
    with pytest.raises(weights.MissingWeightsError, match="nothere.pth"):
        weights.resolve_weights("alexnet", tmp_path / "nothere.pth")
    monkeypatch.setenv("RLS_WEIGHTS_DIR", str(alex_file.parent))
    assert weights.resolve_weights("alexnet") == alex_file
    assert weights.resolve_weights("alexnet", alex_file.parent) == alex_file


def test_missing_weights_skip_those_metrics_with_one_warning_each(caplog):
    caplog.set_level(logging.WARNING, logger="rls.metrics")
    metrics = RestorationMetrics.pretrained(lpips=("alex", "vgg"), fid=True, niqe=True, faces=False)
    warnings = [r.getMessage() for r in caplog.records if r.name == "rls.metrics"]
    assert len(warnings) == 4
    names = ("alexnet-owt-7be5be79.pth", "vgg16-397923af.pth", "weights-inception", "niqe_pris")
    for filename in names:
        assert sum(filename in w for w in warnings) == 1
    assert all("download" in w and "checkpoints" in w for w in warnings)
    assert build_lpips("alex") is None and build_inception() is None
    hr = images(3, 0)
    rows = metrics.update((hr + 0.1).clamp(0, 1), hr, pool4(hr), pool4)
    assert set(rows) == {"psnr", "ssim", "ms_ssim", "lr_psnr"}
    result = metrics.compute()
    assert set(result) == {"psnr", "ssim", "lr_psnr"}  # MS-SSIM NaN at 32² is left out


# ---------------------------------------------------------------------------------------------
# FID / KID plumbing with a small feature network


def frechet_distance(f1, f2):
    """Independent FID: numpy/scipy on the features."""
    f1, f2 = f1.double().numpy(), f2.double().numpy()
    m1, m2 = f1.mean(0), f2.mean(0)
    c1, c2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(c1 @ c2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean))


def test_fid_and_kid_on_a_small_feature_network():
    feat = TinyFeatures()
    hr, sr = images(24, 0), images(24, 1) ** 2  # darker: a real distribution shift
    metrics = RestorationMetrics(feature=feat, kid_subset_size=1000, kid_subsets=20)
    for i in range(0, 24, 5):  # uneven batches
        metrics.update(sr[i : i + 5], hr[i : i + 5])
    result = metrics.compute()
    with torch.no_grad():
        expected = frechet_distance(feat(sr), feat(hr))
    assert expected > 1e-3
    assert result["fid"].item() == pytest.approx(expected, rel=1e-3)
    assert result["kid_mean"] > 0  # subset size clamped to the 24 images, no error
    # subsets of 10 of the 24: the draws are seeded, whatever the global RNG state
    kids = []
    for global_seed, seed in ((1, 0), (2, 0), (1, 5)):
        twin = RestorationMetrics(feature=feat, kid_subset_size=10, kid_subsets=5, seed=seed)
        twin.update(sr, hr)
        torch.manual_seed(global_seed)
        kids.append(twin.compute()["kid_mean"])
    assert kids[0] == kids[1] and kids[0] != kids[2]
    metrics.reset()
    metrics.update(hr, hr)
    same = metrics.compute()
    assert abs(same["fid"].item()) < 1e-3
    # KID is unbiased: about 0 (either sign) for one distribution, far below the shift's
    assert abs(same["kid_mean"].item()) < 0.1 * result["kid_mean"].item()


def test_fid_with_a_single_image_is_left_out_not_a_crash(caplog):
    metrics = RestorationMetrics(feature=TinyFeatures())
    hr = images(1, 0)
    metrics.update(hr, hr)
    result = metrics.compute()
    assert "fid" not in result and "kid_mean" not in result and "psnr" in result
    assert any("at least two images" in r.getMessage() for r in caplog.records)


def test_set_means_are_the_means_of_the_per_image_values():
    metrics = RestorationMetrics()
    hr = images(5, 0)
    sr = (hr + 0.1 * images(5, 1)).clamp(0, 1)
    rows = [metrics.update(sr[i : i + 2], hr[i : i + 2], pool4(hr[i : i + 2]), pool4)
            for i in range(0, 5, 2)]  # fmt: skip
    result = metrics.compute()
    for key in ("psnr", "ssim", "lr_psnr"):
        torch.testing.assert_close(result[key], torch.cat([r[key] for r in rows]).mean())


# ---------------------------------------------------------------------------------------------
# DDP: two CPU ranks with gloo see disjoint images; the synced result equals one process's


def _ddp_worker(rank, world, init_file, hr, sr, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    metrics = RestorationMetrics(feature=TinyFeatures(), kid_subsets=5)
    shard = slice(rank, None, world)
    metrics.update(sr[shard], hr[shard], pool4(hr[shard]), pool4)
    result = metrics.compute()
    if rank == 0:
        torch.save({k: v.cpu() for k, v in result.items()}, out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_restoration_metrics_sync_across_ranks(tmp_path):
    import torch.multiprocessing as mp

    hr, sr = images(7, 0), images(7, 1)
    out = tmp_path / "rank0.pt"
    mp.spawn(_ddp_worker, args=(2, tmp_path / "init", hr, sr, out), nprocs=2, join=True)
    synced = torch.load(out)
    single = RestorationMetrics(feature=TinyFeatures(), kid_subsets=5)
    single.update(sr, hr, pool4(hr), pool4)
    expected = single.compute()
    for key in ("psnr", "ssim", "lr_psnr", "fid"):
        torch.testing.assert_close(synced[key], expected[key], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_inception_features_load_a_torch_fidelity_file(tmp_path, monkeypatch):
    """The real Inception wrapper on a randomly initialised torch-fidelity weight file."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Skeleton(FeatureExtractorInceptionV3):  # builds the layers, loads nothing
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None

    torch.save({}, tmp_path / "empty.pth")
    torch.manual_seed(0)
    state = Skeleton("skeleton", ["2048"], str(tmp_path / "empty.pth")).state_dict()
    torch.save(state, tmp_path / weights.KNOWN_WEIGHTS["inception"].filename)
    monkeypatch.setenv("RLS_WEIGHTS_DIR", str(tmp_path))
    metrics = RestorationMetrics.pretrained(lpips=(), fid=True, kid_subset_size=2, kid_subsets=2)
    hr = images(3, 0, size=48)
    gray = hr[:, :1]
    features = metrics.feature(hr)
    assert features.shape == (3, 2048) and torch.isfinite(features).all()
    assert metrics.feature(gray).shape == (3, 2048)  # grayscale repeated to RGB
    metrics.update(hr.flip(-1), hr)
    assert {"fid", "kid_mean", "kid_std"} <= set(metrics.compute())


def test_feature_network_runs_once_per_set_and_is_shareable():
    class Counting(TinyFeatures):
        calls = 0

        def forward(self, x):
            Counting.calls += 1
            return super().forward(x)

    first = RestorationMetrics(feature=Counting())
    hr, sr = images(4, 0), images(4, 1)
    first.update(sr, hr)
    assert Counting.calls == 2  # HR once, SR once, shared by FID and KID
    # a new instance built from another's FID network (one set of networks per run)
    second = RestorationMetrics(feature=first.fid.inception)
    assert second.feature is first.feature
    second.update(sr, hr)
    torch.testing.assert_close(second.compute()["fid"], first.compute()["fid"])
