"""Awkward and wrong inputs through ``python evaluate.py``: every one gives the expected
row, file or message, and settings that cannot work fail before anything expensive."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from rls.data import RestorationDataModule
from rls.preflight import PreflightError
from rls.reports.run_files import image_path, read_rows

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FAST = [
    "logger=none",
    "metrics.fid=false",
    "metrics.lpips=[]",
    "prior.train_if_missing=false",
    "trainer.enable_progress_bar=false",
    "data.num_workers=0",
    "data.batch_size=4",
]


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="evaluate", overrides=overrides)


def _evaluate(overrides):
    """``python evaluate.py`` with ``overrides``: plain W+ search for 2 steps unless they
    choose the methods."""
    import evaluate

    if not any(o.startswith("method=") for o in overrides):
        overrides = ["method=[wplus]", "method.wplus.steps=2", *overrides]
    return evaluate.evaluate(_compose([*FAST, *overrides]))


def _solid(size, colour):
    return Image.new("RGB", size, colour)


def _rows(run_dir):
    return {(r["image_id"], r["method"]): r for r in read_rows(run_dir / "results.csv")}


@pytest.fixture
def spies(monkeypatch):
    """Counts generator loads and flow trainings (the real functions still run)."""
    import rls.generators
    import rls.lit.flow_module

    calls = {"generator": 0, "flow": 0}

    def counting(name, module, attr):
        real = getattr(module, attr)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, attr, wrapper)

    counting("generator", rls.generators, "load_generator")
    counting("flow", rls.lit.flow_module, "fit_flow")  # what the flow cache trains with
    return calls


def _phone_photo(path):
    """A portrait photo stored sideways with EXIF orientation 6, as phones write them:
    upright, its top half is red and its bottom half blue."""
    upright = Image.new("RGB", (40, 64), (0, 0, 255))
    upright.paste((255, 0, 0), (0, 0, 40, 32))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # 64 x 40, red on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    stored.save(path, quality=95, exif=exif)


def test_a_folder_of_awkward_inputs_gives_the_expected_rows_files_and_messages(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    faces = tmp_path / "faces"
    faces.mkdir()
    colours = {"a b": (255, 0, 0), "a_b": (0, 255, 0), "é": (0, 0, 255), "ü": (255, 255, 255)}
    for name, colour in colours.items():  # ids that sanitise alike, non-ASCII names
        _solid((32, 32), colour).save(faces / f"{name}.png")
    _phone_photo(faces / "phone.jpg")
    _solid((20, 20), (90, 90, 90)).save(faces / "small.png")  # upscaled, with a warning
    _solid((5, 5), (90, 90, 90)).save(faces / "tiny.png")  # refused
    (faces / "broken.png").write_bytes(b"not a png at all")
    os.symlink("loop.png", faces / "loop.png")
    os.symlink("missing.png", faces / "dangling.png")
    (faces / "dir.png").mkdir()
    run = tmp_path / "run"

    _evaluate(["data=folder", f"data.dataset.root={faces}", f"run_dir={run}"])

    rows = _rows(run)
    ok = ["a b", "a_b", "phone", "small", "é", "ü"]
    failed = {
        "broken": "broken.png: UnidentifiedImageError",
        "dangling": "dangling.png: dangling symlink (its target missing.png does not exist)",
        "dir": "dir.png: a directory, not an image file",
        "loop": "loop.png: symlink loop",
        "tiny": "tiny.png: HR image 5x5 is smaller than 0.5 x the generator's resolution 32",
    }
    assert sorted(rows) == sorted((i, m) for i in [*ok, *failed] for m in ("bicubic", "wplus"))
    for image_id in ok:
        assert rows[(image_id, "wplus")]["status"] == "ok"
    for image_id, reason in failed.items():
        for method in ("bicubic", "wplus"):
            row = rows[(image_id, method)]
            assert row["status"] == "failed" and reason in row["notes"], row["notes"]
            assert str(faces) in row["notes"]  # the full path
    # every input has its own files, and each file shows its own input
    paths = {(k, i): image_path(run, k, i) for k in ("hr", "lr", "wplus") for i in ok}
    assert len(set(paths.values())) == len(paths) and all(p.exists() for p in paths.values())
    for name, colour in colours.items():
        hr = np.asarray(Image.open(paths[("hr", name)]))
        assert (hr[16, 16] == colour).all(), name
    assert len(list((run / "images" / "hr").iterdir())) == len(ok)
    phone = np.asarray(Image.open(paths[("hr", "phone")])).astype(int)
    assert phone[2, 16, 0] > 200 and phone[2, 16, 2] < 60  # upright: red on top
    assert phone[29, 16, 2] > 200 and phone[29, 16, 0] < 60  # blue at the bottom
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "phone.jpg: EXIF orientation 6 applied" in messages
    assert "small.png: HR image 20x20 is smaller than the generator's resolution 32" in messages
    for reason in failed.values():
        assert reason.split(":")[1].strip()[:20] in messages  # each failure is logged


def test_failed_rows_are_computed_again_on_rerun_without_duplicates(tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    _solid((32, 32), (200, 30, 30)).save(faces / "fine.png")
    (faces / "fixed.png").write_bytes(b"broken for now")
    _solid((5, 5), (0, 0, 0)).save(faces / "still.png")  # too small, then unreadable
    run = tmp_path / "run"
    args = ["data=folder", f"data.dataset.root={faces}", f"run_dir={run}"]
    _evaluate(args)
    first = _rows(run)
    assert first[("fixed", "wplus")]["status"] == "failed"
    assert "smaller than 0.5" in first[("still", "wplus")]["notes"]

    _solid((32, 32), (30, 200, 30)).save(faces / "fixed.png")
    (faces / "still.png").write_bytes(b"now unreadable")
    _evaluate(args)
    rows = read_rows(run / "results.csv")
    pairs = [(r["image_id"], r["method"]) for r in rows]
    assert len(pairs) == len(set(pairs)) == 3 * 2
    again = _rows(run)
    assert again[("fixed", "wplus")]["status"] == "ok"
    assert image_path(run, "wplus", "fixed").exists()
    assert again[("still", "wplus")]["status"] == "failed"
    assert "UnidentifiedImageError" in again[("still", "wplus")]["notes"]
    assert again[("fine", "wplus")] == first[("fine", "wplus")]  # done: not recomputed


def test_lr_folder_with_mismatched_and_mixed_sizes_finishes_with_failed_rows(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    lr = tmp_path / "lr"
    lr.mkdir()
    for i in range(2):
        _solid((4, 4), (60 * i, 90, 30)).save(lr / f"good{i}.png")  # 32² / x8 = 4²
    _solid((8, 8), (9, 9, 9)).save(lr / "big.png")
    _solid((5, 3), (9, 9, 9)).save(lr / "odd.png")
    run = tmp_path / "run"
    _evaluate(["data=lr_folder", f"data.dataset.root={lr}", f"run_dir={run}"])
    rows = _rows(run)
    assert len(rows) == 4 * 2
    for image_id in ("good0", "good1"):
        assert rows[(image_id, "wplus")]["status"] == "ok"
    for image_id, size in (("big", "8x8"), ("odd", "5x3")):
        row = rows[(image_id, "wplus")]
        assert row["status"] == "failed"
        assert f"{image_id}.png: LR image {size}, but the search needs 4x4" in row["notes"]
    assert "only the 4x4 ones" in caplog.text


def test_lr_folder_of_only_the_wrong_size_names_the_setting_to_change(tmp_path, spies):
    lr = tmp_path / "lr"
    lr.mkdir()
    for i in range(2):
        _solid((8, 8), (60 * i, 90, 30)).save(lr / f"x{i}.png")
    with pytest.raises(PreflightError) as err:
        _evaluate(["data=lr_folder", f"data.dataset.root={lr}", f"run_dir={tmp_path / 'run'}"])
    message = str(err.value)
    assert message.startswith(f"data.dataset.root={lr}: the LR images are 8x8 (2)")
    assert "needs 4x4; set scale=4" in message and "data.dataset.resolution=4" in message
    assert spies == {"generator": 0, "flow": 0}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["scale=7"], "scale=7: the generator's resolution 32 is not divisible by 7"),
        (
            ["+generator.img_resolution=64", "scale=64"],
            "scale=64: the bicubic_pulse downsampler reflect-pads the HR image by 96 pixels",
        ),
    ],
)
def test_an_unreachable_scale_fails_before_any_generator_or_flow(
    tmp_path, spies, overrides, message
):
    run = tmp_path / "run"
    with pytest.raises(PreflightError, match=message) as err:
        _evaluate(
            [
                *overrides,
                "method=[rls]",
                "prior.train_if_missing=true",
                f"flow_training.cache_dir={tmp_path / 'flows'}",
                f"run_dir={run}",
            ]
        )
    assert "scales that work with it: 2, 4, 8, 16" in str(err.value) or "64" in overrides[0]
    assert spies == {"generator": 0, "flow": 0}
    assert not run.exists() and not (tmp_path / "flows").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method=[rls_plus]", "method.rls_plus.steps=0"], "method.rls_plus.steps=0: must be"),
        (["method=[rls_plus]", "method.rls_plus.radius=-1"], "method.rls_plus.radius=-1: an l1"),
        (["method=[rls_plus]", "method.rls_plus.radius=0"], "method.rls_plus.radius=0: an l1"),
        (
            ["method=[rls_plus]", "method.rls_plus.anchor.lr=-0.5"],
            "method.rls_plus.anchor.lr=-0.5: a learning rate must be positive",
        ),
        (["method=[rls]", "method.rls.lr=-0.5"], "method.rls.lr=-0.5: a learning rate"),
        (["method.wplus.steps=-3"], "method.wplus.steps=-3: must be a positive integer"),
    ],
)
def test_method_settings_are_checked_before_anything_is_loaded(tmp_path, spies, overrides, message):
    with pytest.raises(PreflightError, match=message.replace("+", r"\+")):
        _evaluate([*overrides, f"run_dir={tmp_path / 'run'}"])
    assert spies == {"generator": 0, "flow": 0}


def test_methods_built_with_bad_settings_fail_when_built():
    from rls.search import build_method
    from rls.search.settings import SettingError

    with pytest.raises(SettingError, match=r"^steps=0: must be a positive integer"):
        build_method("rls_plus", steps=0)
    with pytest.raises(SettingError, match=r"^radius=-0.5: an l1-ball radius must be positive"):
        build_method("rls_plus", radius=-0.5)
    with pytest.raises(SettingError, match=r"^lr_weights=-0.001: a learning rate must not"):
        build_method("rls_plus", lr_weights=-1e-3)
    with pytest.raises(SettingError, match=r"^steps=\[50, 0\]"):
        build_method("ilo", steps=[50, 0])
    build_method("rls_plus", lr_weights=0.0)  # weights frozen: allowed


def test_checkpoint_paths_that_cannot_work_are_named(tmp_path, spies):
    out = tmp_path / "flow_run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"lightning")
    (out / "flow.safetensors").write_bytes(b"flow")
    run = f"run_dir={tmp_path / 'run'}"
    with pytest.raises(PreflightError) as err:
        _evaluate([f"prior.path={out / 'checkpoints' / 'last.ckpt'}", run])
    assert "a Lightning training checkpoint" in str(err.value)
    assert f"pass prior.path={out / 'flow.safetensors'}" in str(err.value)
    with pytest.raises(PreflightError, match=f"prior.path={out}: a directory"):
        _evaluate([f"prior.path={out}", run])
    with pytest.raises(PreflightError, match=f"generator.source={out}: a directory"):
        _evaluate(["generator=local", f"generator.source={out}", run])
    missing = tmp_path / "nowhere"
    with pytest.raises(PreflightError, match=f"data.dataset.root={missing}: no such folder"):
        _evaluate(["data=folder", f"data.dataset.root={missing}", run])
    assert spies == {"generator": 0, "flow": 0}


class _Twins(Dataset):
    image_ids = ["a", "b", "a"]

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return {"image_id": self.image_ids[i], "hr": torch.zeros(3, 4, 4)}


def test_two_inputs_with_one_id_are_refused():
    with pytest.raises(ValueError, match=r"image id\(s\) shared by several inputs: \['a'\]"):
        RestorationDataModule(_Twins()).setup("test")
