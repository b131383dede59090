"""Files a folder run meets in the wild: a decompression bomb beside good images, formats
beyond PNG/JPEG, files that are no images at all. Each bad file is its own failed row (or
a listed skip); the good ones are restored."""

from __future__ import annotations

import logging

import pytest
from PIL import Image
from test_bad_inputs import _evaluate, _rows

from rls.data import ImageFolderDataset, LRFolderDataset, check_image


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """A 16000² PNG of about 30 KB: 256 million pixels, over Pillow's refusal limit."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (16000, 16000)).save(path)
    return path


def _faces(tmp_path, bomb=None):
    faces = tmp_path / "faces"
    faces.mkdir()
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30)]):
        Image.new("RGB", (32, 32), colour).save(faces / f"good{i}.png")
    if bomb is not None:
        (faces / "bomb.png").write_bytes(bomb.read_bytes())
    return faces


def test_a_decompression_bomb_is_a_failed_row_beside_restored_good_images(tmp_path, bomb):
    faces = _faces(tmp_path, bomb)
    run = tmp_path / "run"
    _evaluate(["data=folder", f"data.dataset.root={faces}", f"run_dir={run}"])
    rows = _rows(run)
    assert rows[("good0", "wplus")]["status"] == rows[("good1", "wplus")]["status"] == "ok"
    failed = rows[("bomb", "wplus")]
    assert failed["status"] == "failed"
    assert "bomb.png: DecompressionBombError: 16000x16000 = 256000000 pixels" in failed["notes"]
    assert "data.dataset.max_pixels" in failed["notes"]


def test_the_pixel_limit_is_a_setting(tmp_path, bomb):
    faces = _faces(tmp_path)
    assert check_image(faces / "good0.png", max_pixels=32 * 32) is None
    assert "over the limit of 1023" in check_image(faces / "good0.png", max_pixels=32 * 32 - 1)
    small = ImageFolderDataset(faces, resolution=32, max_pixels=1000)
    assert all("error" in small[i] for i in range(len(small)))
    # no limit: the bomb's header reads (its 256 M pixels are not decoded here)
    assert check_image(bomb, max_pixels=None) is None
    assert "DecompressionBombError" in check_image(bomb)  # the default: Pillow's limit
    lr = LRFolderDataset(faces, max_pixels=1000)
    assert "error" in lr[0]


def test_any_exception_while_decoding_is_that_images_failed_row(tmp_path, monkeypatch):
    """Not only the errors Pillow documents: whatever decoding one file raises."""
    import rls.data.datasets as datasets

    faces = _faces(tmp_path)
    dataset = ImageFolderDataset(faces, resolution=32)
    real = datasets.load_image

    def explode(path, *args, **kwargs):
        if path.name == "good1.png":
            raise MemoryError("cannot allocate the pixels")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_image", explode)
    assert "hr" in dataset[0]
    assert dataset[1]["error"].endswith("good1.png: MemoryError: cannot allocate the pixels")


def test_every_format_pillow_reads_is_restored_and_other_files_are_listed(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    faces = tmp_path / "faces"
    faces.mkdir()
    colours = {"gif": (250, 0, 0), "bmp": (0, 250, 0), "tif": (0, 0, 250), "tga": (250, 250, 0)}
    for ext, colour in colours.items():
        Image.new("RGB", (32, 32), colour).save(faces / f"face_{ext}.{ext}")
    (faces / "notes.txt").write_text("not an image")
    (faces / "scan.pdf").write_bytes(b"%PDF-1.4")
    run = tmp_path / "run"
    _evaluate(["data=folder", f"data.dataset.root={faces}", f"run_dir={run}"])
    rows = _rows(run)
    assert {i for i, _ in rows} == {f"face_{ext}" for ext in colours}
    assert all(r["status"] == "ok" for r in rows.values())
    assert "2 file(s) skipped, not in an image format Pillow reads: notes.txt, scan.pdf" in (
        caplog.text
    )
