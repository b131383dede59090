"""Face metrics (rls.metrics.faces): detection, identity and landmark distance with dlib's
models, checked on real photographs against dlib's own outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data

from rls import weights
from rls.data.lfw import lfw_faces
from rls.metrics import RestorationMetrics
from rls.metrics.faces import (
    FACE_NAMES,
    MIN_SIDE,
    SAME_PERSON,
    SCORE_FLOOR,
    FaceMetrics,
    FaceModels,
    to_uint8_rgb,
)


@pytest.fixture(scope="module")
def faces() -> FaceMetrics:
    models = FaceModels.pretrained(allow_download=False)
    assert models is not None, "face_recognition_models (a dependency) ships dlib's models"
    return FaceMetrics(models)


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    return torch.from_numpy(data.astronaut()).permute(2, 0, 1).float()[None] / 255


def test_an_image_against_itself_is_the_same_face(faces, astronaut):
    out = faces(astronaut, astronaut)
    assert set(out) == set(FACE_NAMES)
    assert out["face_detected"].item() == 1.0
    assert out["identity_distance"].item() == 0.0 and out["identity_match"].item() == 1.0
    assert out["landmark_distance"].item() == 0.0 and out["landmark_nme"].item() == 0.0


def test_detection_score_is_dlibs_own(faces, astronaut):
    """The score of the output's best window is what dlib's detector itself reports."""
    import dlib

    array = to_uint8_rgb(astronaut[0])
    _, scores, _ = dlib.get_frontal_face_detector().run(array, 0, SCORE_FLOOR)
    assert faces(astronaut)["face_score"].item() == pytest.approx(max(scores), abs=1e-6)


def test_landmarks_follow_a_shift_in_pixels_and_nme_divides_by_the_eye_corners(faces, astronaut):
    """A 3-pixel shift of the photo moves its 68 landmarks by about 3 pixels; the NME is
    that distance over dlib's outer-eye-corner distance (points 36, 45) of the original."""
    import dlib

    shifted = torch.roll(astronaut, shifts=(0, 3), dims=(2, 3))
    out = faces(shifted, astronaut)
    assert 2.0 < out["landmark_distance"].item() < 4.5
    assert out["identity_match"].item() == 1.0  # the same person
    array = to_uint8_rgb(astronaut[0])
    box = dlib.get_frontal_face_detector()(array, 0)[0]
    shape = faces.models.predictor(array, box)
    corners = np.array([[shape.part(i).x, shape.part(i).y] for i in (36, 45)], dtype=float)
    inter_ocular = np.linalg.norm(corners[0] - corners[1])
    expected = out["landmark_distance"].item() / inter_ocular
    assert out["landmark_nme"].item() == pytest.approx(expected, rel=1e-5)


def test_different_people_are_told_apart_on_32px_faces(faces):
    """The 10 held-out LFW faces, each scored against the next one: different people, so
    every identity distance is above dlib's same-person threshold."""
    hr = lfw_faces("heldout", resolution=32)
    out = faces(hr.roll(1, 0), hr)
    measured = ~torch.isnan(out["identity_distance"])
    assert measured.sum() >= 8  # dlib finds most of these 32² faces
    assert (out["identity_distance"][measured] > SAME_PERSON).all()
    assert (out["identity_match"][measured] == 0).all()
    same = faces(hr, hr)
    assert (same["identity_distance"][measured] == 0).all()


def test_a_blank_output_has_no_face_but_is_still_measured_in_the_hr_box(faces, astronaut):
    blank = torch.full_like(astronaut, 0.5)
    out = faces(blank, astronaut)
    assert out["face_detected"].item() == 0.0 and out["face_score"].item() == SCORE_FLOOR
    assert out["identity_distance"].item() > SAME_PERSON
    assert math.isfinite(out["landmark_distance"].item())


def test_no_face_in_the_hr_leaves_identity_and_landmarks_nan(faces, astronaut):
    blank = torch.full_like(astronaut, 0.5)
    out = faces(astronaut, blank)
    for name in ("identity_distance", "identity_match", "landmark_distance", "landmark_nme"):
        assert math.isnan(out[name].item())
    assert out["face_detected"].item() == 1.0  # without an HR face box: any window counts


def test_images_below_the_smallest_size_give_nan(faces):
    small = lfw_faces("heldout", resolution=16)[:2]
    assert small.shape[-1] < MIN_SIDE
    out = faces(small, small)
    assert all(torch.isnan(v).all() for v in out.values())


def test_the_suite_reports_face_columns_per_image(faces):
    hr = lfw_faces("heldout", resolution=32)[:3]
    metrics = RestorationMetrics(faces=faces)
    rows = metrics.update(hr, hr)
    assert set(FACE_NAMES) <= set(rows)
    assert metrics.compute()["identity_distance"].item() == 0.0


def test_model_files_come_from_the_installed_package_first(monkeypatch, tmp_path):
    path = weights.resolve_weights("dlib_face_recognition", allow_download=False)
    assert "face_recognition_models" in str(path)
    assert weights.resolve_weights("dlib_landmarks68", allow_download=False).is_file()
    # without the package, offline: one message naming the file and the package
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "face_recognition_models" else real(name, *a),
    )
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(weights.MissingWeightsError) as err:
        weights.resolve_weights("dlib_face_recognition", allow_download=False)
    assert "dlib_face_recognition_resnet_model_v1.dat" in str(err.value)
    assert "face_recognition_models" in str(err.value)
    assert FaceModels.pretrained(allow_download=False) is None  # skipped with a warning
