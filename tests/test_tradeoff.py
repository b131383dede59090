"""The realism-fidelity trade-off: one curve per method family, labelled by the swept value."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from rls.reports.run_files import ShardWriter, image_path, merge, save_png, write_summary
from rls.reports.run_html import build_report
from rls.reports.tradeoff import families, method_configs


def _cfg(name, method, **values):
    return {"_target_": "rls.search.build_method", "name": name, "method": method, **values}


CONFIGS = {
    "rls": _cfg("rls", "rls", lambda_logp=0.002),
    "wplus": _cfg("wplus", "wplus"),
    "rls_plus": _cfg("rls_plus", "rls_plus", radius=1.0, anchor={"steps": 500}),
    "rls_plus_r0_5": _cfg("rls_plus_r0_5", "rls_plus", radius=0.5, anchor={"steps": 500}),
    "rls_plus_r0_1": _cfg("rls_plus_r0_1", "rls_plus", radius=0.1, anchor={"steps": 500}),
}
MEANS = {
    "bicubic": {"psnr": 20.0, "lr_psnr": 30.0, "flow_nll": math.nan},
    "rls": {"psnr": 21.0, "lr_psnr": 20.0, "flow_nll": 25.0},
    "wplus": {"psnr": 19.0, "lr_psnr": 35.0, "flow_nll": 9000.0},
    "rls_plus": {"psnr": 18.0, "lr_psnr": 34.0, "flow_nll": 190.0},
    "rls_plus_r0_5": {"psnr": 19.0, "lr_psnr": 31.0, "flow_nll": 120.0},
    "rls_plus_r0_1": {"psnr": 20.5, "lr_psnr": 25.0, "flow_nll": 40.0},
}


def test_a_family_is_a_curve_ordered_and_labelled_by_its_swept_setting():
    fams = {f.name: f for f in families(MEANS, CONFIGS)}
    assert set(fams) == {"rls", "wplus", "rls_plus"}  # bicubic has no flow NLL: not drawn
    curve = fams["rls_plus"]
    assert curve.is_curve and curve.swept == ["radius"]
    assert [p.label for p in curve.points] == ["r=0.1", "r=0.5", "r=1"]
    assert [(p.x, p.y) for p in curve.points] == [(20.5, 40.0), (19.0, 120.0), (18.0, 190.0)]
    assert not fams["rls"].is_curve and fams["rls"].points[0].label == "rls"  # reference
    assert not fams["wplus"].is_curve


def test_without_hr_the_fidelity_axis_is_lr_psnr():
    means = {k: {**v, "psnr": math.nan} for k, v in MEANS.items()}
    curve = {f.name: f for f in families(means, CONFIGS)}["rls_plus"]
    assert [p.x for p in curve.points] == [25.0, 31.0, 34.0]


def test_method_configs_are_read_by_display_name():
    config = {"method": {"rls_plus_r0_5": CONFIGS["rls_plus_r0_5"], "tuning": {"steps": 3}}}
    assert method_configs(config) == {"rls_plus_r0_5": CONFIGS["rls_plus_r0_5"]}


def test_report_draws_the_curve_of_a_swept_run(tmp_path):
    rows = []
    for method, m in MEANS.items():
        save_png(image_path(tmp_path, method, "img0"), _img())
        rows.append({"image_id": "img0", "method": method, "status": "ok", **m})
    save_png(image_path(tmp_path, "lr", "img0"), _img())
    ShardWriter(tmp_path).write(rows)
    write_summary(tmp_path, merge(tmp_path))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"method": CONFIGS}))
    page = build_report(tmp_path).read_text()
    assert 'alt="realism-fidelity trade-off"' in page
    assert "rls_plus: radius" in page  # which setting the curve sweeps


def _img():
    import torch

    return torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_no_sweep_no_curve():
    alone = {k: v for k, v in CONFIGS.items() if k in ("rls", "wplus")}
    assert not any(f.is_curve for f in families(MEANS, alone))


@pytest.mark.slow
def test_radius_sweep_curve_has_distinct_points(tmp_path):
    """experiment=radius_sweep as a user runs it: at the configured radii the ball binds,
    so every radius gives another point (the curve is not flat), and report.html draws it."""
    import json

    from hydra import compose, initialize_config_dir

    import evaluate

    radii = ["rls_plus", "rls_plus_r0_05", "rls_plus_r0_1", "rls_plus_r0_2", "rls_plus_r0_4",
             "rls_plus_r0_8"]  # fmt: skip
    shorter = [f"method.{m}.anchor.steps=100" for m in radii]  # the RLS+ steps stay 80
    overrides = [
        "experiment=radius_sweep",
        "data.dataset.n=2",
        "data.batch_size=2",
        "method.rls.steps=100",
        "method.wplus.steps=100",
        "metrics.fid=false",
        "logger=none",
        "trainer.enable_progress_bar=false",
        "flow_training.max_steps=300",
        "flow_training.epoch_size=4096",
        "flow_training.val_size=1024",
        f"flow_training.cache_dir={tmp_path / 'flows'}",
        f"run_dir={tmp_path / 'run'}",
        *shorter,
    ]
    configs = str(Path(evaluate.__file__).resolve().parent / "configs")
    with initialize_config_dir(config_dir=configs, version_base="1.3"):
        cfg = compose("evaluate", overrides)
    page = evaluate.evaluate(cfg).read_text()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())["methods"]
    keys = ("psnr", "lr_psnr", "flow_nll")
    means = {m: {k: e[k]["mean"] for k in keys} for m, e in summary.items() if "flow_nll" in e}
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    curve = {f.name: f for f in families(means, method_configs(config))}["rls_plus"]
    assert [p.label for p in curve.points] == ["r=0.05", "r=0.1", "r=0.2", "r=0.4", "r=0.8", "r=1"]
    xs = [p.x for p in curve.points]
    ys = [p.y for p in curve.points]
    pairs = [(i, j) for i in range(len(xs)) for j in range(i + 1, len(xs))]
    # distinct points of the plane: no two closer than 1e-3 dB in PSNR *and* 1e-2 nats in NLL
    assert all(abs(xs[i] - xs[j]) > 1e-3 or abs(ys[i] - ys[j]) > 1e-2 for i, j in pairs)
    assert len({round(x, 3) for x in xs}) >= 4  # and PSNR itself moves along the curve
    assert ys[0] < ys[-1]  # the smallest ball stays nearer the realistic RLS anchor
    assert 'alt="realism-fidelity trade-off"' in page and "rls_plus: radius" in page
