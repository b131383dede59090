"""The start-code guard: a prior that places RLS's start far off its support is reported
(a warning naming the file and the numbers, the results' notes, the report)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import evaluate
from rls.flows import WFlow, sample_w
from rls.flows.support import check_start
from rls.generators import load_generator
from rls.reports.run_files import read_rows

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")


@pytest.fixture(scope="module")
def G():
    return load_generator("tiny")


def standardised_flow(G, **maps):
    """An untrained flow on W standardised from mapping samples; with LeakyReLU(5) input and
    whitening (as flow=maf), w̄ maps far beyond every sample, as after training."""
    torch.manual_seed(0)
    flow = WFlow(G.w_dim, family="maf", transforms=1, hidden=(16, 16), **maps)
    return flow.fit_standardisation(sample_w(G, 8192, seed=3)).eval()


def test_check_start_tells_an_off_support_start_from_an_inside_one(G):
    held_out = sample_w(G, 4096, seed=4)
    w_bar = G.mapping.w_avg
    off = check_start(standardised_flow(G, leaky_input=True, whiten=True), w_bar, held_out)
    inside = check_start(standardised_flow(G), w_bar, held_out)
    assert off.outside and off.start_norm > 3 * off.sample_q999
    assert not inside.outside and inside.start_norm < inside.sample_median
    assert inside.shell == pytest.approx(8.0) and 6 < off.sample_median < 10
    assert "‖f(start)‖" in off.summary() and "√d = 8" in off.summary()


def _evaluate(tmp_path, flow_file, run):
    overrides = [
        "method=[rls]",
        "method.rls.steps=2",
        "method.rls.start_samples=4096",
        "data.dataset.n=2",
        "logger=none",
        "trainer.enable_progress_bar=false",
        "metrics.fid=false",
        "metrics.lpips=[]",
        "bicubic_baseline=false",
        f"prior.path={flow_file}",
        f"run_dir={tmp_path / run}",
    ]
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=overrides)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate.evaluate(cfg)
    guard = [w for w in caught if "far outside the prior" in str(w.message)]
    return guard, read_rows(tmp_path / run / "results.csv"), tmp_path / run / "report.html"


def test_evaluate_warns_once_and_notes_it_when_the_start_is_off_support(G, tmp_path):
    off = standardised_flow(G, leaky_input=True, whiten=True)
    off_file = off.save(tmp_path / "off.safetensors")
    guard, rows, report = _evaluate(tmp_path, off_file, "off")
    assert len(guard) == 1
    message = str(guard[0].message)
    assert str(off_file) in message and "√d = 8" in message and "flow=maf_paper" in message
    assert len(rows) == 2 and all("start off the prior's support" in r["notes"] for r in rows)
    assert all(str(off_file) in r["notes"] for r in rows)
    assert "start off the prior&#x27;s support" in report.read_text()

    inside_file = standardised_flow(G).save(tmp_path / "inside.safetensors")
    guard, rows, _ = _evaluate(tmp_path, inside_file, "inside")
    assert not guard and not any("support" in r["notes"] for r in rows)


def test_start_flow_centre_begins_inside_any_flows_support(G, tmp_path):
    """start=flow_centre: RLS starts at f⁻¹(0), which the flow maps to the centre of its
    Gaussian, so even a flow with w̄ far off its support starts inside it (no warning)."""
    from rls.search.rls import start_centre

    off = standardised_flow(G, leaky_input=True, whiten=True)
    centre = start_centre(G, "flow_centre", 0, 0, off)
    assert off.to_gaussian(centre[None]).norm().item() < 1e-3
    with pytest.raises(ValueError, match="flow_centre needs a flow prior"):
        start_centre(G, "flow_centre", 0, 0, None)
    off_file = off.save(tmp_path / "off.safetensors")
    overrides_run = "centre"
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[
            "method=[rls]", "method.rls.steps=2", "method.rls.start=flow_centre",
            "data.dataset.n=2", "logger=none", "trainer.enable_progress_bar=false",
            "metrics.fid=false", "metrics.lpips=[]", "bicubic_baseline=false",
            f"prior.path={off_file}", f"run_dir={tmp_path / overrides_run}",
        ])  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate.evaluate(cfg)
    assert not [w for w in caught if "far outside the prior" in str(w.message)]
    rows = read_rows(tmp_path / overrides_run / "results.csv")
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
