"""Operator mistakes and endings of ``python evaluate.py``: every documented key that
cannot work is refused before the generator loads, in one line naming the key; the command
exits non-zero when nothing was restored or a sweep member failed, without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import test_bad_inputs
from PIL import Image
from test_bad_inputs import _compose, _evaluate

from rls.preflight import PreflightError

ROOT = Path(__file__).resolve().parents[1]
spies = test_bad_inputs.spies  # the fixture counting generator loads and flow trainings


def _folder(tmp_path, files: dict[str, bytes]) -> Path:
    root = tmp_path / "faces"
    root.mkdir()
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.dataset.n=0"], "data.dataset.n=0: must be a positive integer"),
        (["data.batch_size=0"], "data.batch_size=0: must be a positive integer or auto"),
        (["data.num_workers=-1"], "data.num_workers=-1: must be 0"),
        (["seed=abc"], "seed='abc': must be an integer"),
        (["seed=1.5"], "seed=1.5: must be an integer"),
        (["threads=0"], "threads=0: must be null"),
        (["trainer.devices=0"], "trainer.devices=0: must be a positive integer, -1 (all), auto"),
        (["+trainer.max_epoch=1"], "trainer.max_epoch: not a pytorch_lightning.Trainer argument"),
        (
            ["corruption=gaussian_noise", "corruption.severity=9"],
            "corruption: gaussian_noise: severity must be None or an integer 1..5, got 9",
        ),
        (["corruption.severity=3"], "corruption.severity=3: corruption=none applies no corruption"),
        (["metrics.lpips=[alexx]"], "metrics.lpips='alexx': must be one of alex, vgg"),
        (["metrics.kid_subset_size=0"], "metrics.kid_subset_size=0: must be an integer"),
        (["bicubic_baseline=maybe"], "bicubic_baseline='maybe': must be true or false"),
        (["logger.kind=tensorboard"], "logger.kind='tensorboard': must be one of wandb, csv, none"),
        (["data.dataset.noise_mode=loud"], "data.dataset.noise_mode='loud': must be one of"),
        (["prior.stats=/nowhere/stats.pkl"], "prior.stats=/nowhere/stats.pkl: no such file"),
    ],
)
def test_each_bad_key_fails_in_one_line_before_the_generator_loads(
    tmp_path, spies, overrides, message
):
    run = tmp_path / "run"
    with pytest.raises(PreflightError) as err:
        _evaluate([*overrides, f"run_dir={run}"])
    text = str(err.value)
    assert text.startswith(message) and "\n" not in text, text
    assert spies == {"generator": 0, "flow": 0}
    assert not run.exists()


def test_folders_without_readable_images_are_named_with_what_they_hold(tmp_path, spies):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PreflightError, match=f"data.dataset.root={empty}: the folder is empty"):
        _evaluate(["data=folder", f"data.dataset.root={empty}", f"run_dir={tmp_path / 'r'}"])
    notes = _folder(tmp_path, {"a.txt": b"x", "b.txt": b"y", "c.pdf": b"%PDF"})
    with pytest.raises(PreflightError) as err:
        _evaluate(["data=folder", f"data.dataset.root={notes}", f"run_dir={tmp_path / 'r'}"])
    assert "no image the reader takes (it holds 2 .txt, 1 .pdf)" in str(err.value)
    nested = tmp_path / "nested"
    (nested / "faces").mkdir(parents=True)
    with pytest.raises(PreflightError, match="holds only folders \\(faces\\); the images must"):
        _evaluate(["data=folder", f"data.dataset.root={nested}", f"run_dir={tmp_path / 'r'}"])
    assert spies == {"generator": 0, "flow": 0}


def test_every_documented_default_passes_the_checks():
    """The checks refuse mistakes only: each shipped data, corruption and trainer choice
    (with a folder where one is needed) passes."""
    from omegaconf import OmegaConf

    from rls.preflight import check_evaluation

    for group in ("corruption", "trainer", "data"):
        for choice in sorted(p.stem for p in (ROOT / "configs" / group).glob("*.yaml")):
            extra = [f"data.dataset.root={ROOT / 'tests' / 'data' / 'faces'}"]
            cfg = _compose([f"{group}={choice}", *(extra if "folder" in choice else [])])
            plain = OmegaConf.to_container(cfg, resolve=True)
            if "folder" in choice:  # the checks read the folder: give it one image
                plain["data"]["dataset"]["resolution"] = None
                plain["data"]["dataset"]["root"] = str(_one_image_folder())
            check_evaluation(plain)


def _one_image_folder() -> Path:
    import tempfile

    root = Path(tempfile.mkdtemp())
    Image.new("RGB", (4, 4), (10, 20, 30)).save(root / "a.png")
    return root


def test_rls_plus_with_another_anchor_than_rls_says_so(tmp_path):
    """``method.rls.steps=30`` alone: RLS+'s anchor keeps 500 steps; the run says so (a
    warning naming the difference and the fix, a note in RLS+'s rows), and the same
    recipe shares one anchor without a word."""
    import evaluate

    cfg = _compose(["method=[rls,rls_plus]", "method.rls.steps=30"])
    methods = evaluate.build_methods(cfg)
    with pytest.warns(UserWarning) as caught:
        evaluate.check_anchor_reuse(cfg, methods)
    message = str(caught[0].message)
    assert "rls_plus's RLS anchor differs from rls in steps 500 vs 30" in message
    assert "method.rls_plus.anchor.steps=30" in message
    assert "own RLS anchor, not rls's (steps 500 vs 30)" in methods["rls_plus"].notes
    same = _compose(
        ["method=[rls,rls_plus]", "method.rls.steps=30", "method.rls_plus.anchor.steps=30"]
    )
    methods = evaluate.build_methods(same)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate.check_anchor_reuse(same, methods)
    assert methods["rls_plus"].notes == ""


def test_failed_run_names_a_run_in_which_every_image_failed(tmp_path):
    import evaluate

    header = "image_id,method,scale,corruption,psnr,ssim,lpips,lr_psnr,flow_nll,latent_error,"
    header += "steps,seconds,status,notes\n"
    failed = "a,wplus,8,none,,,,,,,,,failed,a.png: UnidentifiedImageError\n"
    other = "b,wplus,8,none,,,,,,,,,failed,b.png: too small\n"
    (tmp_path / "results.csv").write_text(header + failed + other)
    message = evaluate.failed_run(tmp_path)
    assert message.startswith("every image failed (2 failed rows; 1 of them: a.png: Unident")
    ok = "c,wplus,8,none,20,,,,,,,,ok,\n"
    (tmp_path / "results.csv").write_text(header + failed + ok)
    assert evaluate.failed_run(tmp_path) is None


def _cli(args, tmp_path, full_error=False):
    """``python evaluate.py args`` launched from ``tmp_path`` (runs/ and outputs/ land there)
    without HYDRA_FULL_ERROR (scripts/test.sh sets it), unless ``full_error``."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(WANDB_MODE="disabled", RLS_OFFLINE="1", PYTHONPATH=f"{ROOT / 'src'}:{ROOT}")
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    cmd = [sys.executable, str(ROOT / "evaluate.py"), *args, f"hydra.run.dir={tmp_path / 'h'}"]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


FAST_CLI = [
    *("logger=none", "metrics.fid=false", "metrics.lpips=[]", "prior.train_if_missing=false"),
    *("trainer.enable_progress_bar=false", "method=[wplus]", "method.wplus.steps=2"),
]


@pytest.mark.slow
def test_the_command_prints_one_line_and_exits_non_zero(tmp_path):
    done = _cli(["data.dataset.n=0", f"run_dir={tmp_path / 'run'}"], tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "[evaluate] data.dataset.n=0: must be a positive integer (images)"
    ], done.stderr
    full = _cli(["data.dataset.n=0", f"run_dir={tmp_path / 'run'}"], tmp_path, full_error=True)
    assert full.returncode == 1 and "Traceback" in full.stderr and "PreflightError" in full.stderr


@pytest.mark.slow
def test_a_run_in_which_every_image_failed_exits_non_zero(tmp_path):
    faces = _folder(tmp_path, {"a.png": b"not a png", "b.jpg": b"nor a jpeg"})
    run = tmp_path / "run"
    done = _cli(
        [*FAST_CLI, "data=folder", f"data.dataset.root={faces}", f"run_dir={run}"], tmp_path
    )
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("[evaluate] every image failed (2 failed rows;"), last
    assert "Traceback" not in done.stderr
    assert (run / "report.html").exists()


@pytest.mark.slow
def test_a_sweep_with_a_failed_member_names_its_report_and_exits_non_zero(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST_CLI, "data.dataset.n=1", "scale=7,8", f"hydra.sweep.dir={sweep}"]
    done = _cli(args, tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert " scale=7' failed: scale=7: the generator's resolution 32" in done.stderr
    assert f"every member's outcome: {sweep / 'sweep_report.html'}" in done.stderr
    html = (sweep / "sweep_report.html").read_text()
    assert "failed" in html and "PreflightError: scale=7" in html  # the member's own error


def test_a_bad_file_met_while_building_the_generator_is_one_line(tmp_path):
    """A truncated generator.source fails inside Hydra's instantiate: the user sees the
    file and its damage in the same one line as every other mistake, not Hydra's wrapper."""
    from hydra.utils import instantiate

    import evaluate

    shipped = ROOT / "src" / "rls" / "generators" / "weights" / "lfw32.safetensors"
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(shipped.read_bytes()[:300_000])
    with pytest.raises(Exception) as caught:
        instantiate({"_target_": "rls.generators.load_generator", "source": str(cut)})
    line = evaluate._one_line_error(caught.value)
    assert line is not None
    text = str(line)
    assert text.startswith(f"[evaluate] {cut}: corrupt or truncated safetensors file")
    assert "Error in call to target" not in text and "\n" not in text


@pytest.mark.slow
def test_the_command_names_a_truncated_generator_in_one_line(tmp_path):
    shipped = ROOT / "src" / "rls" / "generators" / "weights" / "lfw32.safetensors"
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(shipped.read_bytes()[:300_000])
    done = _cli([*FAST_CLI, "generator=local", f"generator.source={cut}"], tmp_path)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"[evaluate] {cut}: corrupt"), done.stderr
