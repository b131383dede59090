"""FFHQ alignment: the crop geometry, the resampling, pasting back, and the landmark model."""

from __future__ import annotations

import bz2
import warnings

import numpy as np
import pytest
from PIL import Image

from rls import weights
from rls.align import (
    DlibLandmarks,
    FFHQAligner,
    NoFaceError,
    ffhq_quad,
    paste_back,
    warp_quad,
)


def symmetric_face(eye: float = 20.0, mouth: float = 30.0, centre=(100.0, 90.0)) -> np.ndarray:
    """68 landmarks of a frontal face: eyes at (±eye, 0), mouth corners at (±eye/2, mouth)."""
    lm = np.zeros((68, 2))
    lm[36:42] = (-eye, 0.0)
    lm[42:48] = (eye, 0.0)
    lm[48] = (-eye / 2, mouth)
    lm[54] = (eye / 2, mouth)
    return lm + np.asarray(centre)


def similarity(points: np.ndarray, angle: float, scale: float, shift) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ (scale * np.array([[c, s], [-s, c]])) + np.asarray(shift)


def smooth_photo(h: int = 240, w: int = 260, seed: int = 0) -> Image.Image:
    """A photo with only low frequencies (so resampling errors stay tiny), values in [40, 215]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / 40.0
    chans = []
    for _ in range(3):
        a, b, p = rng.uniform(0.5, 1.5, 3)
        chans.append(np.sin(a * xx + p) * np.cos(b * yy - p))
    return Image.fromarray((127.5 + 87.5 * np.stack(chans, -1)).round().astype(np.uint8))


def test_quad_of_a_frontal_face_matches_the_hand_derived_square():
    # eye_to_eye = (40, 0), eye_to_mouth = (0, 30): x ∥ (1, 0), half side
    # max(2·40, 1.8·30) = 80, centre = eye midpoint + 0.1·(0, 30).
    quad = ffhq_quad(symmetric_face())
    c = np.array([100.0, 93.0])
    expected = c + np.array([[-80, -80], [-80, 80], [80, 80], [80, -80]])
    np.testing.assert_allclose(quad, expected, atol=1e-9)


def test_quad_side_follows_the_mouth_when_the_face_is_long():
    quad = ffhq_quad(symmetric_face(eye=10.0, mouth=50.0))
    assert np.hypot(*(quad[3] - quad[0])) == pytest.approx(2 * 1.8 * 50.0)


def test_quad_moves_with_the_face_under_rotation_scale_and_shift():
    lm = symmetric_face() + np.random.default_rng(1).normal(0, 2, (68, 2))
    args = (0.4, 1.7, (13.0, -7.0))
    np.testing.assert_allclose(
        ffhq_quad(similarity(lm, *args)), similarity(ffhq_quad(lm), *args), atol=1e-9
    )


def test_quad_rejects_wrong_landmark_counts():
    with pytest.raises(ValueError, match="68"):
        ffhq_quad(np.zeros((5, 2)))


def test_warp_samples_the_photo_inside_the_rotated_square():
    from scipy.ndimage import map_coordinates

    photo = smooth_photo()
    quad = similarity(
        np.array([[-50, -50], [-50, 50], [50, 50], [50, -50.0]]), 0.3, 1.0, (130, 120)
    )
    out = np.asarray(warp_quad(photo, quad, 64), dtype=np.float64)
    # Independent: the output pixel centre (u, v) sits at q0 + (u/n)(q3-q0) + (v/n)(q1-q0).
    n = 64
    u, v = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n)
    pts = quad[0] + u[..., None] * (quad[3] - quad[0]) + v[..., None] * (quad[1] - quad[0])
    src = np.asarray(photo, dtype=np.float64)
    expected = np.stack(
        [map_coordinates(src[..., c], [pts[..., 1] - 0.5, pts[..., 0] - 0.5], order=1)
         for c in range(3)], -1
    )  # fmt: skip
    assert np.abs(out - expected).mean() < 1.5


def test_warp_mirrors_the_photo_where_the_square_leaves_it():
    photo = smooth_photo()  # every value >= 40: a black fill would show as 0
    quad = np.array([[-60, -60], [-60, 100], [100, 100], [100, -60.0]])  # top-left corner out
    out = np.asarray(warp_quad(photo, quad, 32))
    assert out.min() >= 30


def test_paste_back_restores_the_photo_from_its_own_crop():
    photo = smooth_photo()
    quad = similarity(
        np.array([[-60, -60], [-60, 60], [60, 60], [60, -60.0]]), -0.25, 1.0, (130, 120)
    )
    pasted = paste_back(photo, warp_quad(photo, quad, 128), quad)
    a, b = np.asarray(pasted, np.float64), np.asarray(photo, np.float64)
    assert pasted.size == photo.size
    inner = np.zeros(b.shape[:2], bool)
    yy, xx = np.mgrid[0 : b.shape[0], 0 : b.shape[1]]
    inner[np.hypot(xx - 130, yy - 120) < 45] = True
    assert np.abs(a - b)[inner].mean() < 2.0
    # Far outside the square the photo is untouched, to the byte.
    assert np.array_equal(a[:20], b[:20]) and np.array_equal(a[:, -40:], b[:, -40:])


def test_paste_back_puts_the_face_where_the_quad_is():
    photo = Image.new("RGB", (200, 200), (0, 0, 0))
    face = Image.new("RGB", (64, 64), (255, 255, 255))
    quad = np.array([[50, 40], [50, 140], [150, 140], [150, 40.0]])
    out = np.asarray(paste_back(photo, face, quad))[..., 0]
    assert out[90, 100] == 255 and out[10, 10] == 0 and out[190, 100] == 0
    assert out[:, 100].nonzero()[0].min() in range(38, 46)  # top edge near y = 40


def test_aligner_crops_the_face_square_and_keeps_it():
    lm = symmetric_face(eye=15, mouth=22, centre=(130, 110))
    aligner = FFHQAligner(32, landmarks=lambda image: lm)
    aligned = aligner(smooth_photo())
    assert aligned.image.size == (32, 32)
    np.testing.assert_allclose(aligned.quad, ffhq_quad(lm))


def test_dlib_finds_no_face_in_a_blank_photo():
    pytest.importorskip("dlib")
    with pytest.raises(NoFaceError, match="no face"):
        DlibLandmarks(allow_download=False)(Image.new("RGB", (160, 160), (128, 128, 128)))


def without_shipped_models(monkeypatch):
    """As on a machine without the face_recognition_models package."""
    monkeypatch.setattr(weights, "package_file", lambda spec: None)


def test_missing_landmark_model_names_the_file_and_where_to_get_it(tmp_path, monkeypatch):
    without_shipped_models(monkeypatch)
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path / "w"))
    monkeypatch.setattr("torch.hub.get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(weights.MissingWeightsError) as err:
        weights.resolve_weights("dlib_landmarks68", allow_download=False)
    msg = str(err.value)
    assert "shape_predictor_68_face_landmarks.dat" in msg
    assert "dlib.net/files/shape_predictor_68_face_landmarks.dat.bz2" in msg
    assert "install the package face_recognition_models" in msg
    with pytest.raises(weights.MissingWeightsError, match="not found"):
        weights.resolve_weights("dlib_landmarks68", tmp_path / "nowhere.dat")


def test_landmark_model_download_is_decompressed_and_its_hash_reported(tmp_path, monkeypatch):
    without_shipped_models(monkeypatch)
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setattr("torch.hub.get_dir", lambda: str(tmp_path / "hub"))
    payload = b"landmark model bytes" * 100

    def fake_download(url, dst, hash_prefix=None):  # the network only
        assert url.endswith(".bz2") and hash_prefix is None
        with open(dst, "wb") as f:
            f.write(bz2.compress(payload))

    monkeypatch.setattr("torch.hub.download_url_to_file", fake_download)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = weights.resolve_weights("dlib_landmarks68", allow_download=True)
    assert path.name == "shape_predictor_68_face_landmarks.dat"
    assert path.read_bytes() == payload
    assert not list(path.parent.glob("*.bz2")) and not list(path.parent.glob("*.part"))
    import hashlib

    assert any(hashlib.sha256(payload).hexdigest() in str(w.message) for w in caught)


def test_evaluate_aligns_faces_fails_faceless_photos_and_pastes_back(tmp_path):
    """``python evaluate.py data=folder data.dataset.align=ffhq data.dataset.paste_back=true``."""
    from face_fixtures import CentredFace
    from hydra import compose, initialize_config_dir

    import evaluate
    from rls.reports.run_files import image_path, read_rows

    faces = tmp_path / "faces"
    faces.mkdir()
    photo = smooth_photo(160, 200)
    photo.save(faces / "portrait.png")
    Image.new("RGB", (200, 160), (90, 90, 90)).save(faces / "wall.png")
    run_dir = tmp_path / "run"
    overrides = [
        "logger=none",
        "metrics.fid=false",
        "metrics.lpips=[]",
        "prior.train_if_missing=false",
        "trainer.enable_progress_bar=false",
        "bicubic_baseline=false",
        "method=[wplus]",
        "method.wplus.steps=2",
        "data=folder",
        f"data.dataset.root={faces}",
        "data.num_workers=0",
        "data.dataset.align=ffhq",
        "data.dataset.paste_back=true",
        "+data.dataset.landmarks._target_=face_fixtures.CentredFace",
        f"run_dir={run_dir}",
    ]
    configs = str(__import__("pathlib").Path(evaluate.__file__).parent / "configs")
    with initialize_config_dir(config_dir=configs, version_base="1.3"):
        evaluate.evaluate(compose(config_name="evaluate", overrides=overrides))

    rows = {r["image_id"]: r for r in read_rows(run_dir / "results.csv")}
    assert rows["wall"]["status"] == "failed" and "no face found" in rows["wall"]["notes"]
    assert rows["portrait"]["status"] == "ok"
    # The HR target is the FFHQ crop (the photo's central 128² square, resampled to R²).
    hr = Image.open(image_path(run_dir, "hr", "portrait"))
    quad = ffhq_quad(CentredFace()(photo))
    expected = warp_quad(photo, quad, hr.size[0])
    np.testing.assert_allclose(np.asarray(hr, np.float64), np.asarray(expected, np.float64), atol=1)
    pasted = Image.open(image_path(run_dir, "wplus_pasted", "portrait"))
    assert pasted.size == photo.size
    a, b = np.asarray(pasted, np.float64), np.asarray(photo, np.float64)
    assert np.array_equal(a[:, :30], b[:, :30])  # left of the 128² square: the photo
    sr = np.asarray(Image.open(image_path(run_dir, "wplus", "portrait")).resize((128, 128)))
    centre = a[40:120, 50:150]
    assert np.abs(centre - sr[8:88, 14:114]).mean() < np.abs(centre - b[40:120, 50:150]).mean()
    assert not image_path(run_dir, "wplus_pasted", "wall").exists()


def test_a_face_too_small_for_the_generator_is_a_failed_row(tmp_path):
    from face_fixtures import CentredFace

    from rls.data import ImageFolderDataset

    smooth_photo(30, 30).save(tmp_path / "far.png")  # crop 24 px < 0.5 x 64
    smooth_photo(200, 200).save(tmp_path / "near.png")  # crop 160 px
    ds = ImageFolderDataset(tmp_path, 64, align="ffhq", landmarks=CentredFace())
    records = {r["image_id"]: r for r in (ds[i] for i in range(len(ds)))}
    assert "face crop 24 px across" in records["far"]["error"]
    assert "min_hr_fraction" in records["far"]["error"]
    assert records["near"]["hr"].shape == (3, 64, 64) and "quad" not in records["near"]


def test_paste_back_needs_alignment():
    with pytest.raises(ValueError, match="paste_back=true needs data.dataset.align=ffhq"):
        from rls.data import ImageFolderDataset

        ImageFolderDataset("unused", 64, paste_back=True)


def test_align_without_the_landmark_model_fails_before_the_generator(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    import evaluate
    import rls.generators
    from rls.preflight import PreflightError

    without_shipped_models(monkeypatch)
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path / "w"))
    monkeypatch.setattr("torch.hub.get_dir", lambda: str(tmp_path / "hub"))
    built = []
    monkeypatch.setattr(rls.generators, "load_generator", lambda *a, **k: built.append(1))
    smooth_photo().save(tmp_path / "face.png")
    overrides = ["data=folder", f"data.dataset.root={tmp_path}", "data.dataset.align=ffhq"]
    configs = str(__import__("pathlib").Path(evaluate.__file__).parent / "configs")
    with initialize_config_dir(config_dir=configs, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[*overrides, f"run_dir={tmp_path}/r"])
    with pytest.raises(PreflightError) as err:
        evaluate.evaluate(cfg)
    assert "data.dataset.landmarks_model" in str(err.value)
    assert "shape_predictor_68_face_landmarks.dat" in str(err.value)
    assert not built


def test_a_real_photo_is_aligned_restored_and_pasted_back_offline(tmp_path, monkeypatch):
    """scikit-image's astronaut portrait, end to end with no download: dlib finds the face
    (its model from the installed face_recognition_models package), the FFHQ square is cut,
    restored with the shipped generator, and pasted back: the face region changes, the rest
    of the photo is untouched, and the face metrics score the restored crop."""
    from hydra import compose, initialize_config_dir
    from skimage import data

    import evaluate
    from rls.reports.run_files import image_path, read_rows

    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    photos = tmp_path / "photos"
    photos.mkdir()
    photo = Image.fromarray(data.astronaut())
    photo.save(photos / "astronaut.png")
    run_dir = tmp_path / "run"
    overrides = [
        "logger=none", "metrics.fid=false", "metrics.lpips=[]", "prior.train_if_missing=false",
        "trainer.enable_progress_bar=false", "method=[wplus]", "method.wplus.steps=20",
        "generator=lfw32", "scale=4", "data=folder", f"data.dataset.root={photos}",
        "data.num_workers=0", "data.dataset.align=ffhq", "data.dataset.paste_back=true",
        f"run_dir={run_dir}",
    ]  # fmt: skip
    configs = str(__import__("pathlib").Path(evaluate.__file__).parent / "configs")
    with initialize_config_dir(config_dir=configs, version_base="1.3"):
        evaluate.evaluate(compose(config_name="evaluate", overrides=overrides))

    rows = {r["method"]: r for r in read_rows(run_dir / "results.csv")}
    assert rows["wplus"]["status"] == "ok", rows["wplus"]["notes"]
    assert rows["wplus"]["identity_distance"] != ""  # face metrics on the 32² crop
    landmarks = DlibLandmarks(allow_download=False)(photo)
    quad = ffhq_quad(landmarks)
    hr = Image.open(image_path(run_dir, "hr", "astronaut"))
    expected = warp_quad(photo, quad, hr.size[0])
    np.testing.assert_allclose(np.asarray(hr, np.float64), np.asarray(expected, np.float64), atol=1)
    pasted = np.asarray(Image.open(image_path(run_dir, "wplus_pasted", "astronaut")), np.float64)
    original = np.asarray(photo, np.float64)
    assert pasted.shape == original.shape
    x0, y0 = quad.min(0).astype(int)
    x1, y1 = np.ceil(quad.max(0)).astype(int)
    outside = np.ones(original.shape[:2], bool)
    outside[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = False
    assert np.array_equal(pasted[outside], original[outside])  # the rest: untouched
    cx, cy = landmarks[27:36].mean(0).astype(int)  # the nose: inside the pasted face
    changed = np.abs(
        pasted[cy - 10 : cy + 10, cx - 10 : cx + 10]
        - original[cy - 10 : cy + 10, cx - 10 : cx + 10]
    )
    assert changed.mean() > 2.0
