"""FID/KID against a fixed real set: its features computed once, cached by set + protocol,
and the same FID and KID as torch-fidelity's own computation on the same images with the
same feature network (a small stand-in: the Inception weights are not available offline)."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from rls import fid_stats
from rls.data import ImageFolderDataset
from rls.metrics import RestorationMetrics

N = 6
SIDE = 32


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("RLS_OFFLINE", "1")
    monkeypatch.setenv("RLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("RLS_WEIGHTS_DIR", raising=False)


class StandIn(nn.Module):
    """Inception's place: [0, 1] images quantised to uint8 (as InceptionFeatures does),
    then a fixed random conv and a spatial mean: 4 features."""

    num_features = 4

    def __init__(self, seed=0):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 5, stride=2)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.2)
            self.conv.bias.zero_()

    def forward(self, x):
        x = (x.clamp(0, 1) * 255).round() / 255
        return torch.tanh(self.conv(x)).mean((2, 3))


def write_set(folder, seed, n=N):
    """n smooth colour images (PNG, 8-bit): blurred noise, so the sets differ in statistics."""
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        x = torch.rand(3, 8, 8, generator=g) * (0.5 + 0.1 * seed)
        x = torch.nn.functional.interpolate(x[None], size=SIDE, mode="bilinear")[0]
        array = (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(array).save(folder / f"img{i}.png")
    return folder


def loaded(folder):
    data = ImageFolderDataset(folder, SIDE)
    return torch.stack([data[i]["hr"] for i in range(len(data))])


def test_fid_and_kid_against_a_cached_set_equal_torch_fidelity(tmp_path):
    import torch_fidelity
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    real_dir, fake_dir = write_set(tmp_path / "real", 1), write_set(tmp_path / "fake", 2)
    net = StandIn()

    class Fidelity(FeatureExtractorBase):  # torch-fidelity hands it uint8 images
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            self.net = net

        @staticmethod
        def get_provided_features_list():
            return ("f",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "f"

        @staticmethod
        def can_be_compiled():
            return False

        def forward(self, x):
            return (self.net(x.float() / 255).double(),)

    torch_fidelity.register_feature_extractor("rls-stand-in", Fidelity)

    class Uint8(torch.utils.data.Dataset):
        def __init__(self, images):
            self.images = (images * 255).round().byte()

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            return self.images[i]

    real, fake = loaded(real_dir), loaded(fake_dir)
    expected = torch_fidelity.calculate_metrics(
        input1=Uint8(fake),
        input2=Uint8(real),
        fid=True,
        kid=True,
        kid_subset_size=N,
        kid_subsets=3,
        feature_extractor="rls-stand-in",
        cuda=False,
        cache=False,
        verbose=False,
    )
    features, proto, _ = fid_stats.reference_features(real_dir, net, SIDE)
    suite = RestorationMetrics(feature=net, kid_subset_size=N, kid_subsets=3, reference=features)
    other_hr = torch.rand_like(fake)  # the run's own HR images play no part now
    suite.update(fake, other_hr)
    result = suite.compute()
    # FID: float32 output of torchmetrics; KID: float64 on both sides
    assert result["fid"].item() == pytest.approx(expected["frechet_inception_distance"], rel=1e-6)
    kid = expected["kernel_inception_distance_mean"]
    assert result["kid_mean"].item() == pytest.approx(kid, rel=1e-9)
    assert result["fid"].item() > 1e-3  # the sets differ: not a trivially zero distance
    assert proto["images"] == N and proto["reference_set"] == str(real_dir.resolve())
    # without the reference, the run's HR images are the real set
    plain = RestorationMetrics(feature=net, kid_subset_size=N, kid_subsets=3)
    plain.update(fake, other_hr)
    assert plain.compute()["fid"].item() != pytest.approx(result["fid"].item(), rel=1e-3)


def test_reference_features_are_cached_by_set_and_protocol(tmp_path, monkeypatch):
    real_dir = write_set(tmp_path / "real", 1)
    net = StandIn()
    first, proto, path = fid_stats.reference_features(real_dir, net, SIDE)
    assert path.parent == tmp_path / "cache" / "fid_stats" and path.is_file()
    calls = []
    net.register_forward_hook(lambda *a: calls.append(1))
    again, proto_again, path_again = fid_stats.reference_features(real_dir, net, SIDE)
    assert not calls and path_again == path and proto_again == proto  # read, not computed
    torch.testing.assert_close(again, first)
    # another network, another resolution, or another image: another entry
    _, _, other_net = fid_stats.reference_features(real_dir, StandIn(seed=1), SIDE)
    _, _, other_size = fid_stats.reference_features(real_dir, net, 16)
    Image.fromarray(np.zeros((SIDE, SIDE, 3), np.uint8)).save(real_dir / "img0.png")
    _, _, other_set = fid_stats.reference_features(real_dir, net, SIDE)
    assert len({path, other_net, other_size, other_set}) == 4
    assert proto["resolution"] == SIDE and "StandIn" in proto["feature"]
    assert proto["set_sha256"] != json.loads(json.dumps(proto))["feature"]


def test_fid_stats_command_names_the_missing_inception_file(tmp_path, caplog):
    from rls.metrics import build_inception
    from rls.metrics.cli import fid_stats_main

    caplog.set_level(logging.WARNING, logger="rls.metrics")
    assert fid_stats_main([str(write_set(tmp_path / "real", 1)), "--resolution", "32"]) == 1
    assert build_inception() is None
    assert any("weights-inception-2015-12-05" in r.getMessage() for r in caplog.records)
    with pytest.raises(FileNotFoundError, match="no such image folder"):
        fid_stats.reference_features(tmp_path / "nothere", StandIn(), SIDE)
