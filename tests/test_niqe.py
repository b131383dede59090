"""NIQE: the same numbers as pyiqa's NIQE (the maintained implementation, run once outside
this project: tests/data/reference/niqe_pyiqa.json) on scikit-image's photographs, with the
authors' pristine model; its parameter file handled like the other weight files."""

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from niqe_cases import CASES, case_image

from rls import niqe, weights
from rls.metrics import RestorationMetrics, per_image, per_image_metrics

REFERENCE = Path(__file__).parent / "data" / "reference"
PARAMS = REFERENCE / "niqe_pris_params.npz"
# pyiqa builds its 7x7 Gaussian window and its grey-level weights in float32, this code (as
# MATLAB) in float64: on these photographs that moves NIQE by at most 4.2e-3 (measured);
# with pyiqa's float32 constants the two agree to 1e-6.
TOLERANCE = 5e-3
TOLERANCE_SAME_WINDOW = 1e-5
FAST_CASES = ("astronaut:crop", "chelsea")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("RLS_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("RLS_WEIGHTS_DIR", raising=False)


@pytest.fixture(scope="module")
def reference():
    return json.loads((REFERENCE / "niqe_pyiqa.json").read_text())["scores"]


@pytest.fixture(scope="module")
def net():
    return niqe.NIQE.from_file(PARAMS)


def _check(net, reference, cases, monkeypatch):
    ours = {c: float(net(case_image(c))[0]) for c in cases}
    for c in cases:
        assert ours[c] == pytest.approx(reference[c], abs=TOLERANCE), c
    window = niqe._gaussian_window
    monkeypatch.setattr(niqe, "_gaussian_window", lambda: window().float().double())
    weights = tuple(torch.tensor(niqe.Y_WEIGHTS).tolist())  # float32-rounded
    monkeypatch.setattr(niqe, "Y_WEIGHTS", weights)
    for c in cases:
        same_window = float(net(case_image(c))[0])
        assert same_window == pytest.approx(reference[c], abs=TOLERANCE_SAME_WINDOW), c


def test_niqe_equals_pyiqa_on_photographs(net, reference, monkeypatch):
    _check(net, reference, FAST_CASES, monkeypatch)


@pytest.mark.slow
def test_niqe_equals_pyiqa_on_every_photograph(net, reference, monkeypatch):
    _check(net, reference, CASES, monkeypatch)


def test_the_test_parameters_are_the_pinned_file():
    spec = weights.KNOWN_WEIGHTS["niqe"]
    assert weights._sha256(PARAMS).startswith(spec.sha256_prefix)


def test_niqe_ranks_noise_and_blur_as_less_natural(reference):
    # the stored reference numbers: a sanity check of what NIQE measures
    assert reference["astronaut:noise"] > reference["astronaut:blur"] > reference["astronaut"]


def test_small_images_are_nan_with_one_note(net, caplog):
    caplog.set_level(logging.INFO, logger="rls.metrics")
    per_image._notes_given.discard("niqe")
    x = torch.rand(2, 3, 64, 64)
    out = per_image_metrics(x, x, niqe=net)["niqe"]
    assert out.shape == (2,) and torch.isnan(out).all()
    assert any("NIQE needs images of at least 96px" in r.getMessage() for r in caplog.records)
    assert torch.isfinite(net(torch.rand(1, 3, 96, 100))).all()


def test_niqe_per_image_and_its_mean_in_the_metric_suite(net):
    hr = case_image("astronaut:crop").repeat(2, 1, 1, 1)
    sr = hr.clone()
    sr[1] = (sr[1] + 0.1 * torch.randn(sr[1].shape, generator=torch.Generator())).clamp(0, 1)
    suite = RestorationMetrics(niqe=net)
    values = suite.update(sr, hr)
    torch.testing.assert_close(values["niqe"], net(sr))
    assert values["niqe"][1] > values["niqe"][0]
    assert suite.compute()["niqe"].item() == pytest.approx(values["niqe"].mean().item())
    lr_only = per_image_metrics(sr, None, niqe=net)  # no reference needed
    torch.testing.assert_close(lr_only["niqe"], values["niqe"])


def test_missing_parameters_skip_niqe_with_a_warning_naming_the_file(caplog):
    caplog.set_level(logging.WARNING, logger="rls.metrics")
    suite = RestorationMetrics.pretrained(lpips=(), fid=False)
    assert suite.niqe is None
    (message,) = [r.getMessage() for r in caplog.records if "NIQE" in r.getMessage()]
    assert "niqe_pris_params.npz" in message and "basicsr==1.4.2" in message


def test_parameters_found_in_the_weights_dir(monkeypatch, tmp_path):
    (tmp_path / "niqe_pris_params.npz").write_bytes(PARAMS.read_bytes())
    monkeypatch.setenv("RLS_WEIGHTS_DIR", str(tmp_path))
    suite = RestorationMetrics.pretrained(lpips=(), fid=False)
    assert isinstance(suite.niqe, niqe.NIQE)
    torch.testing.assert_close(suite.niqe.mu.numpy(), np.load(PARAMS)["mu_pris_param"][0])


def test_bad_parameter_files_are_named(tmp_path):
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, mu_pris_param=np.zeros(18), cov_pris_param=np.eye(18))
    with pytest.raises(ValueError, match=r"wrong.npz: .*mean of 36"):
        niqe.NIQE.from_file(wrong)
    lacking = tmp_path / "lacking.npz"
    np.savez(lacking, mu_pris_param=np.zeros(36))
    with pytest.raises(ValueError, match=r"lacking.npz: .*cov_pris_param"):
        niqe.NIQE.from_file(lacking)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, mu_pris_param=np.array([object()]), cov_pris_param=np.eye(36))
    with pytest.raises(ValueError, match="pickled.npz: not a readable NIQE parameter file"):
        niqe.NIQE.from_file(pickled)


def test_matlab_imresize_halves_a_linear_ramp_exactly():
    # bicubic weights sum to 1 and are symmetric: a linear ramp stays linear inside
    ramp = torch.arange(32, dtype=torch.float64)[None].expand(8, 32)
    half = niqe._imresize_half(ramp)
    assert half.shape == (4, 16)
    expected = (2 * torch.arange(16, dtype=torch.float64) + 0.5).expand(4, -1)
    torch.testing.assert_close(half[:, 2:-2], expected[:, 2:-2])
    assert not math.isnan(float(half.sum()))
