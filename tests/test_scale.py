"""The paper's setting offline: FFHQ config-f with random weights, through evaluate.py on photos.

The default suite builds the 1024² network and runs the evaluate path at config-f widths on
32² (one step); ``-m slow`` runs RLS, RLS+ and PULSE at 1024² at x8 to x64, batch 1 and 2.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from benchmarks.gpu_check import make_photos
from rls.generators import load_generator
from rls.generators.make_random import main as make_random_main
from rls.generators.make_random import make_random
from rls.reports.run_files import image_path, read_rows

CONFIG_F_PARAMS = 30_370_060  # NVIDIA's published size of the FFHQ config-f generator


def test_random_config_f_has_the_official_shapes_and_behaves_like_a_trained_net():
    G = load_generator("ffhq-1024", random_init=True, seed=3, calibration_samples=0)
    assert sum(p.numel() for p in G.parameters()) == CONFIG_F_PARAMS
    assert (G.img_resolution, G.num_ws, G.w_dim, G.z_dim) == (1024, 18, 512, 512)
    assert len(G.synthesis.noise_shapes()) == 17
    strengths = [p for n, p in G.named_parameters() if n.endswith("noise_strength")]
    assert len(strengths) == 17 and all(float(s.detach()) > 0 for s in strengths)
    # w_avg is the centre of mapped z, not the official init's zeros
    assert G.mapping.w_avg.abs().mean() > 0.05
    other = make_random("ffhq1024", seed=4, calibration_samples=0)
    assert not torch.equal(G.synthesis.b1024.conv1.weight, other.synthesis.b1024.conv1.weight)


def test_random_generator_output_is_calibrated_into_the_image_range():
    G = make_random("ffhq1024", img_resolution=32)  # config-f widths (512 channels) at 32²
    with torch.no_grad():
        img = G(torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(1)))
    assert 0.3 < float(img.std()) < 0.8  # a fresh network: std ~2, two thirds saturated
    assert float((img.abs() > 1).float().mean()) < 0.2


def test_unknown_architecture_name_is_refused_with_the_known_ones():
    with pytest.raises(KeyError, match="ffhq-1024"):
        make_random("celeba-512")


def test_make_random_command_writes_a_checkpoint_that_loads_back(tmp_path, capsys):
    out = tmp_path / "ffhq256.safetensors"
    make_random_main(["ffhq256", str(out), "--seed", "2"])
    assert "parameters, 14 x 512 W+" in capsys.readouterr().out
    G = load_generator(str(out))
    ref = make_random("ffhq256", seed=2)
    assert G.img_resolution == 256 and G.num_ws == 14
    for (name, a), b in zip(G.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), name


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    config_dir = str(Path(__file__).resolve().parents[1] / "configs")
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        return compose(config_name="evaluate", overrides=overrides)


def _run_config_f(tmp_path, photos, run, scale, batch_size, steps, resolution=None):
    import evaluate

    extra = [f"+generator.img_resolution={resolution}"] if resolution else []
    cfg = _compose(
        [
            "generator=ffhq1024",
            "generator.random_init=true",
            *extra,
            "method=[rls,rls_plus,pulse]",
            f"method.rls.steps={steps}",
            f"method.rls_plus.anchor.steps={steps}",  # = RLS: RLS is read off RLS+'s anchor
            f"method.rls_plus.steps={steps}",
            f"method.pulse.steps={steps}",
            "method.pulse.fit_samples=4096",
            "method.rls.start_samples=4096",  # w̄ from 1e6 mapped z: minutes at 512-d on a CPU
            "method.rls_plus.anchor.start_samples=4096",
            "data=folder",
            f"data.dataset.root={photos}",
            f"data.batch_size={batch_size}",
            "data.num_workers=0",
            f"scale={scale}",
            "logger=none",
            "trainer.enable_progress_bar=false",
            "metrics.fid=false",
            "metrics.lpips=[]",
            "flow_training.max_steps=2",
            "flow_training.batch_size=64",
            "flow_training.epoch_size=256",
            "flow_training.val_size=256",
            f"flow_training.cache_dir={tmp_path / 'flows'}",
            f"run_dir={tmp_path / run}",
        ]
    )
    evaluate.evaluate(cfg)
    return tmp_path / run


def _check_outputs(run_dir: Path, ids, size: int, scale: int):
    rows = read_rows(run_dir / "results.csv")
    methods = ("bicubic", "rls", "rls_plus", "pulse")
    assert {(r["image_id"], r["method"]) for r in rows} == {(i, m) for i in ids for m in methods}
    assert all(r["status"] == "ok" and r["scale"] == str(scale) for r in rows)
    assert (run_dir / "report.html").exists() and (run_dir / "summary.json").exists()
    for i in ids:
        assert Image.open(image_path(run_dir, "lr", i)).size == (size // scale,) * 2
        for kind in ("hr", "rls", "rls_plus", "pulse"):
            assert Image.open(image_path(run_dir, kind, i)).size == (size, size)


def test_evaluate_runs_config_f_widths_on_a_folder_of_photos(tmp_path):
    """The whole path of a real run (random config-f, 1024² JPEGs resized, flow trained,
    RLS / RLS+ / PULSE, a batch of 2) at 32² so that the default suite stays fast."""
    make_photos(tmp_path / "photos", 2, 1024)
    ids = ["face000", "face001"]
    run_dir = _run_config_f(tmp_path, tmp_path / "photos", "x8", 8, 2, 1, resolution=32)
    _check_outputs(run_dir, ids, 32, 8)


@pytest.mark.slow
@pytest.mark.parametrize("scale,batch_size", [(8, 2), (16, 1), (32, 2), (64, 1)])
def test_evaluate_runs_config_f_at_1024_on_photos(tmp_path_factory, scale, batch_size):
    """The paper's setting: FFHQ config-f 1024², RLS / RLS+ / PULSE on 1024² photos, x8 to
    x64, batch 1 and 2, every output written (two steps each: speed is benchmarks/search.py's)."""
    tmp_path = tmp_path_factory.getbasetemp() / "config_f_1024"
    make_photos(tmp_path / "photos", 2, 1024)
    ids = ["face000", "face001"]
    run_dir = _run_config_f(tmp_path, tmp_path / "photos", f"x{scale}", scale, batch_size, 2)
    _check_outputs(run_dir, ids, 1024, scale)


def test_gpu_check_dry_run_runs_every_phase_on_cpu(tmp_path):
    """scripts/gpu_check.sh --dry-run: the GPU command's phases at tiny size on the CPU,
    each writing its JSON, so the command is known to work the day a GPU is lent."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {"PYTHON": sys.executable, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    cmd = ["bash", "scripts/gpu_check.sh", "--dry-run", "--out", str(tmp_path)]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["ok"] and report["dry_run"]
    assert [p["phase"] for p in report["phases"]] == ["tests", "search_fp32", "speed", "evaluate"]
    tests = json.loads((tmp_path / "gpu_tests.json").read_text())
    assert tests["counts"].get("skipped", 0) >= 3  # the CUDA tests: collected, no device here
    bench = json.loads((tmp_path / "gpu_search_fp32.json").read_text())
    assert {(r["method"], r["batch"]) for r in bench["rows"]} == {
        (m, b) for m in ("rls", "rls_plus") for b in (1, 2)
    }
    assert not bench["tf32"] and bench["load_average_1_5_15"]
    assert all(r["s_per_step"] > 0 and r["peak_bytes"] > 0 for r in bench["rows"])
    assert (tmp_path / "gpu_search_fp32.md").exists()  # the table the README quotes
    speed = json.loads((tmp_path / "gpu_speed.json").read_text())
    assert [r["variant"] for r in speed["rows"]] == ["eager", "bf16"]
    assert 0 < speed["rows"][1]["max_abs_diff_vs_eager"] < 0.1  # bf16 ran, close to fp32
    evaluation = json.loads((tmp_path / "gpu_evaluate.json").read_text())
    methods = evaluation["summary"]["methods"]
    assert methods["rls"]["ok"] == methods["rls_plus"]["ok"] == 2
