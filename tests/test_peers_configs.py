"""The peers' method configs compose with Hydra side by side and build their methods."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PEERS = ["wplus", "pulse", "pulse_rls_paper", "brgm", "ilo", "robust"]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No weights on disk, no downloads: the perceptual peers must say so, not fail."""
    monkeypatch.setenv("RLS_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("RLS_WEIGHTS_DIR", str(tmp_path))


def compose_methods(names):
    (CONFIGS / "method").exists() or pytest.skip("no configs/method")
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"method=[{','.join(names)}]"])
    return cfg.method


@pytest.mark.parametrize("name", [p for p in PEERS if (CONFIGS / "method" / f"{p}.yaml").exists()])
def test_each_peer_config_builds_its_method(name):
    pytest.importorskip(f"rls.search.{name}")
    methods = compose_methods([name])
    assert list(methods) == [name]
    method = instantiate(methods[name])
    assert method.name == name
    if name in ("brgm", "ilo", "robust"):  # perceptual weights absent: noted, not fatal
        assert "vgg16-397923af.pth missing" in method.notes
    else:
        assert method.notes == ""


def test_peer_configs_compose_side_by_side():
    names = ["pulse", "brgm", "ilo", "robust"]
    methods = compose_methods(names)
    assert list(methods) == names
    assert methods.pulse.lr == 0.4 and methods.brgm.steps == 501
    assert list(methods.ilo.steps) == [50, 50, 25, 25] and list(methods.robust.lrs) == [
        0.08,
        0.02,
        0.005,
    ]


def test_compare_experiment_runs_every_peer_and_the_radius_sweep():
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("evaluate", overrides=["experiment=compare"])
    assert {"pulse", "brgm", "ilo", "robust"} <= set(cfg.method)
    sweep = {k: v for k, v in cfg.method.items() if k.startswith("rls_plus_r")}
    assert sorted(v.radius for v in sweep.values()) == [0.05, 0.1, 0.2, 0.4, 0.8]
    assert all(v.name == k for k, v in sweep.items())
    assert cfg.generator.img_resolution == 64 and cfg.data.dataset.n == 8


def test_radius_sweep_methods_keep_distinct_names():
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("evaluate", overrides=["method=[rls]", "experiment=radius_sweep"])
    names = [instantiate(v).name for k, v in cfg.method.items() if k.startswith("rls_plus_r")]
    # distinct, and without dots (the Lightning module keys its methods by name)
    assert names == [f"rls_plus_r{r}" for r in ("0_05", "0_1", "0_2", "0_4", "0_8")]
