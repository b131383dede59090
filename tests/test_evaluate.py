"""The evaluation job: per-image search in Lightning's test loop, resume, failures, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from callbacks.report import ReportWriter
from callbacks.results import ResultsWriter
from rls.data import (
    GeneratorSampleDataset,
    ImageFolderDataset,
    LRFolderDataset,
    RestorationDataModule,
)
from rls.degradations import build_degradation
from rls.generators import load_generator
from rls.lit.search_module import SearchModule
from rls.reports.run_files import finished_pairs, image_path, read_rows
from rls.search import Method, OptimGroup, Rendered, Stage
from rls.search.losses import lr_l1, to_unit


def wplus_l1(steps: int = 4, lr: float = 0.05, name: str = "wplus") -> Method:
    """Plain W+ search from w̄ with the RLS fidelity term only (the paper's w_A)."""

    def init(ctx):
        w_avg = ctx.G.mapping.w_avg.to(ctx.device)
        return {"w": w_avg.expand(ctx.batch_size, ctx.G.num_ws, -1).clone()}

    def render(ctx, v):
        return Rendered(ctx.G.synthesis(v["w"], noise_mode="const"), v["w"])

    def losses(ctx, v, r):
        return {"l1": 10 * lr_l1(ctx.D, to_unit(r.image), ctx.y)}

    stage = Stage(name, steps, init, render, losses, [OptimGroup(["w"], lr=lr)])
    return Method(name, [stage], notes=f"{name}: test recipe")


@pytest.fixture(scope="module")
def G():
    return load_generator("tiny")


def _trainer(run_dir, extra=()):
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        inference_mode=False,
        callbacks=[ResultsWriter(run_dir), ReportWriter(run_dir), *extra],
    )


def _module(G, skip=(), methods=None, **kwargs):
    D = build_degradation(8, "none")
    methods = methods or {"wplus": wplus_l1(), "wplus_b": wplus_l1(name="wplus_b")}
    return SearchModule(G, methods, D, scale=8, corruption="none", skip=skip, **kwargs)


def _generated(G, n=4, batch_size=2):
    return RestorationDataModule(GeneratorSampleDataset(G, n=n), batch_size=batch_size)


class Recorder(pl.Callback):
    """Remembers the rows each run computed; optionally crashes after ``crash_after`` batches."""

    def __init__(self, crash_after=None):
        self.rows, self.crash_after, self.batches = [], crash_after, 0

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.rows += outputs["rows"]
        self.batches += 1
        if self.crash_after is not None and self.batches >= self.crash_after:
            raise RuntimeError("simulated crash")


def test_every_image_and_method_gets_a_row_images_and_report(tmp_path, G):
    _trainer(tmp_path).test(_module(G), datamodule=_generated(G), verbose=False)
    rows = read_rows(tmp_path / "results.csv")
    assert len(rows) == 4 * 2 and {r["status"] for r in rows} == {"ok"}
    row = rows[0]
    assert row["scale"] == "8" and row["corruption"] == "none" and row["steps"] == "4"
    # 4 W+ steps from w̄ at x8: HR PSNR 17.3-21.1 dB, LR-PSNR 1.6-3.0 dB above it (measured);
    # the LR side of the same error averages out its finest detail, so it scores higher
    for r in rows:
        assert 15 < float(r["psnr"]) < 30 and float(r["lr_psnr"]) > float(r["psnr"]) + 1
    assert row["notes"] == f"{row['method']}: test recipe"
    for kind in ("lr", "hr", "wplus", "wplus_b"):
        assert Image.open(image_path(tmp_path, kind, "gen00003")).size[0] in (4, 32)
    assert (tmp_path / "summary.json").exists() and (tmp_path / "report.html").exists()


def test_methods_see_identical_inputs_and_results_do_not_depend_on_batch(tmp_path, G):
    """Two copies of one method, batch 1 vs batch 4: the same numbers per image."""
    _trainer(tmp_path / "b4").test(_module(G), datamodule=_generated(G, 4, 4), verbose=False)
    _trainer(tmp_path / "b1").test(_module(G), datamodule=_generated(G, 4, 1), verbose=False)
    b4 = {(r["image_id"], r["method"]): r for r in read_rows(tmp_path / "b4" / "results.csv")}
    b1 = {(r["image_id"], r["method"]): r for r in read_rows(tmp_path / "b1" / "results.csv")}
    assert b4.keys() == b1.keys()
    for key, row in b4.items():
        assert float(row["psnr"]) == pytest.approx(float(b1[key]["psnr"]), abs=1e-3)
        twin = b4[(key[0], "wplus_b" if key[1] == "wplus" else "wplus")]
        assert row["psnr"] == twin["psnr"]  # same y, same seeds, same recipe


def test_resume_after_interruption_computes_only_the_rest(tmp_path, G):
    crash = Recorder(crash_after=1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _trainer(tmp_path, [crash]).test(_module(G), datamodule=_generated(G), verbose=False)
    assert len(crash.rows) == 2 * 2  # first batch (2 images x 2 methods) done
    done = finished_pairs(tmp_path)
    assert done == {(r["image_id"], r["method"]) for r in crash.rows}

    again = Recorder()
    module = _module(G, skip=done)
    _trainer(tmp_path, [again]).test(module, datamodule=_generated(G), verbose=False)
    assert {(r["image_id"], r["method"]) for r in again.rows}.isdisjoint(done)
    assert len(again.rows) == 2 * 2
    pairs = [(r["image_id"], r["method"]) for r in read_rows(tmp_path / "results.csv")]
    assert len(pairs) == len(set(pairs)) == 4 * 2


def test_a_bad_image_is_a_failed_row_and_the_run_completes(tmp_path, G):
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (40, 40), (40 * i, 100, 200)).save(folder / f"face{i}.png")
    (folder / "broken.png").write_bytes(b"not a png at all")
    data = RestorationDataModule(ImageFolderDataset(folder, resolution=32), batch_size=2)
    run_dir = tmp_path / "run"
    _trainer(run_dir).test(_module(G), datamodule=data, verbose=False)
    rows = {(r["image_id"], r["method"]): r for r in read_rows(run_dir / "results.csv")}
    assert len(rows) == 3 * 2
    bad = rows[("broken", "wplus")]
    assert bad["status"] == "failed" and "broken.png" in bad["notes"]
    assert rows[("face0", "wplus")]["status"] == "ok"
    assert "broken.png" in (run_dir / "report.html").read_text()


def test_bicubic_baseline_rows_score_the_upsampled_input(tmp_path, G):
    module = _module(G, methods={"wplus": wplus_l1()}, bicubic_baseline=True)
    data = _generated(G, n=2)
    _trainer(tmp_path).test(module, datamodule=data, verbose=False)
    rows = {(r["image_id"], r["method"]): r for r in read_rows(tmp_path / "results.csv")}
    assert len(rows) == 2 * 2
    sample = data.dataset[0]
    y = module.D(sample["hr"][None])  # corruption none: y = D(hr)
    up = torch.nn.functional.interpolate(y, size=(32, 32), mode="bicubic").clamp(0, 1)
    expected = 10 * torch.log10(1 / (up - sample["hr"][None]).pow(2).mean())
    assert float(rows[("gen00000", "bicubic")]["psnr"]) == pytest.approx(float(expected), abs=1e-3)
    assert rows[("gen00000", "bicubic")]["steps"] == "0"
    assert image_path(tmp_path, "bicubic", "gen00001").exists()


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    config_dir = str(Path(__file__).resolve().parents[1] / "configs")
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        return compose(config_name="evaluate", overrides=overrides)


def test_evaluate_command_runs_a_corruption_at_another_scale(tmp_path):
    import evaluate

    cfg = _compose(
        [
            "method=[wplus]",
            "method.wplus.steps=3",
            "corruption=gaussian_noise",
            "scale=16",
            "data.dataset.n=2",
            "logger=none",
            "trainer.enable_progress_bar=false",
            "metrics.fid=false",
            "metrics.lpips=[]",
            # no flow given: one is trained and cached (kept tiny here)
            "flow_training.max_steps=5",
            "flow_training.epoch_size=1024",
            "flow_training.val_size=256",
            f"flow_training.cache_dir={tmp_path / 'flows'}",
            f"run_dir={tmp_path}",
        ]
    )
    report = evaluate.evaluate(cfg)
    assert report == tmp_path / "report.html" and report.exists()
    assert list((tmp_path / "flows").glob("*/flow.safetensors"))
    rows = read_rows(tmp_path / "results.csv")
    assert {(r["method"], r["scale"], r["corruption"]) for r in rows} == {
        ("wplus", "16", "gaussian_noise"),
        ("bicubic", "16", "gaussian_noise"),
    }
    assert len(rows) == 2 * 2 and all(r["status"] == "ok" for r in rows)
    assert "scale: 16" in (tmp_path / "config.yaml").read_text()
    assert Image.open(image_path(tmp_path, "lr", "gen00000")).size == (2, 2)  # 32² / 16


def test_default_config_runs_rls_and_rls_plus_each_under_its_name():
    cfg = _compose([])
    assert list(cfg.method) == ["rls", "rls_plus"]
    assert all(cfg.method[m]._target_ == "rls.search.build_method" for m in cfg.method)
    assert cfg.method.rls_plus.name == "rls_plus" and cfg.method.rls.steps == 500


def test_run_directory_is_deterministic_and_names_the_run():
    import evaluate

    base = ["method=[pulse]", "corruption=gaussian_noise"]
    a, b = _compose(base), _compose([*base, "trainer=ddp", "logger=csv"])
    c = _compose([*base, "method.pulse.steps=7"])
    assert evaluate.run_name(a) == evaluate.run_name(b)  # devices and loggers do not matter
    assert evaluate.run_name(a) != evaluate.run_name(c)  # a different recipe: a new directory
    assert evaluate.run_name(a).startswith("eval_pulse_gaussian_noise_x8_")


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    """trainer=ddp shards the images over 2 processes; each image's result is unchanged."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    common = [
        "method=[pulse]",
        "method.pulse.steps=3",
        "data.dataset.n=3",
        "data.batch_size=1",
        "logger=none",
        "threads=1",
        "metrics.lpips=[]",
        "metrics.fid=false",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    runs = {
        "ddp": ["trainer=ddp", "trainer.accelerator=cpu"],
        "single": ["trainer.accelerator=cpu"],
    }
    results = {}
    for name, extra in runs.items():
        cmd = [sys.executable, "evaluate.py", *common, *extra, f"run_dir={tmp_path / name}"]
        done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        rows = read_rows(tmp_path / name / "results.csv")
        results[name] = {(r["image_id"], r["method"]): float(r["psnr"]) for r in rows}
    assert len(results["ddp"]) == 3 * 2  # each (image, method) exactly once across ranks
    assert results["ddp"].keys() == results["single"].keys()
    for key, value in results["ddp"].items():
        assert value == pytest.approx(results["single"][key], abs=1e-4)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo recipe without corruption, plus plain W+ search, on the same 4 targets."""
    import evaluate

    run_dir = tmp_path_factory.mktemp("demo")
    cfg = _compose(
        [
            "experiment=demo_tiny",
            "corruption=none",
            "method=[rls,rls_plus,wplus]",
            "method.wplus.steps=200",  # as the demo's RLS
            "logger=none",
            f"run_dir={run_dir}",
        ]
    )
    evaluate.evaluate(cfg)
    return {m: e for m, e in json.loads((run_dir / "summary.json").read_text())["methods"].items()}


@pytest.mark.slow
def test_demo_orderings_flow_prior_and_fidelity_stage(demo_run):
    """RLS's solutions are far likelier under the flow than unregularised W+ search, and
    RLS+ fits the LR input better than its RLS anchor (method.md §3-4)."""
    s = demo_run
    assert {"bicubic", "rls", "rls_plus", "wplus"} <= s.keys()
    assert all(e["failed"] == 0 for e in s.values())
    assert s["rls"]["flow_nll"]["mean"] < s["wplus"]["flow_nll"]["mean"]
    assert s["rls_plus"]["lr_psnr"]["mean"] > s["rls"]["lr_psnr"]["mean"] + 3
    assert s["rls_plus"]["psnr"]["mean"] > s["rls"]["psnr"]["mean"]


def test_lr_only_inputs_are_restored_and_scored_on_the_lr_side(tmp_path, G):
    folder = tmp_path / "lr"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (4, 4), (60 * i, 90, 30)).save(folder / f"small{i}.png")
    data = RestorationDataModule(LRFolderDataset(folder), batch_size=2)
    module = _module(G, methods={"wplus": wplus_l1()}, bicubic_baseline=True)
    _trainer(tmp_path / "run").test(module, datamodule=data, verbose=False)
    rows = read_rows(tmp_path / "run" / "results.csv")
    assert len(rows) == 2 * 2 and all(r["status"] == "ok" for r in rows)
    assert all(r["psnr"] == "" and float(r["lr_psnr"]) > 0 for r in rows)  # no HR to compare
    assert Image.open(image_path(tmp_path / "run", "wplus", "small1")).size == (32, 32)
    assert not image_path(tmp_path / "run", "hr", "small1").exists()


def test_rls_results_can_be_read_off_the_rls_plus_anchor(tmp_path, G):
    """With the same RLS recipe, RLS's rows equal RLS+'s stage 1: no need to search twice."""
    from rls.lit.search_module import anchor_sources
    from rls.search import build_method

    recipe = dict(steps=4, lambda_logp=0.0, lambda_pn=0.0)  # no prior needed
    methods = {
        "rls": build_method("rls", **recipe),
        "rls_plus": build_method("rls_plus", anchor=recipe, steps=3),
    }
    assert anchor_sources(methods) == {"rls": "rls_plus"}
    other = {"rls": build_method("rls", **{**recipe, "steps": 5}), "rls_plus": methods["rls_plus"]}
    assert anchor_sources(other) == {}  # a different recipe is searched on its own

    rows = {}
    for reuse in (False, True):
        module = _module(G, methods=methods, anchor_from=anchor_sources(methods) if reuse else {})
        _trainer(tmp_path / str(reuse)).test(module, datamodule=_generated(G, 2), verbose=False)
        rows[reuse] = {
            (r["image_id"], r["method"]): r
            for r in read_rows(tmp_path / str(reuse) / "results.csv")
        }
    assert rows[True].keys() == rows[False].keys()
    for key, row in rows[False].items():
        assert float(rows[True][key]["psnr"]) == pytest.approx(float(row["psnr"]), abs=1e-4)
        assert rows[True][key]["steps"] == row["steps"]
    assert "rls_plus's anchor" in rows[True][("gen00000", "rls")]["notes"]


def test_set_level_metrics_reach_summary_and_report(tmp_path, G):
    """FID/KID per method (here on a tiny injected feature network) land in summary.json."""
    from rls.metrics import RestorationMetrics

    class PooledColours(torch.nn.Module):
        num_features = 12

        def forward(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(x.float(), 2).flatten(1)

    feature = PooledColours()
    metrics = lambda: RestorationMetrics(None, feature, kid_subset_size=3, kid_subsets=5)  # noqa: E731
    module = _module(G, methods={"wplus": wplus_l1()}, metrics=metrics)
    _trainer(tmp_path).test(module, datamodule=_generated(G, 4), verbose=False)
    entry = json.loads((tmp_path / "summary.json").read_text())["methods"]["wplus"]
    assert entry["fid"] >= 0 and "kid_mean" in entry and entry["psnr"]["n"] == 4
    assert entry["set_metrics_images"] == 4
    assert "kid_mean" in (tmp_path / "report.html").read_text()


def test_niqe_per_method_and_the_ground_truths_reference_row(tmp_path, G):
    """NIQE (here a stand-in no-reference score: mean brightness, the real one needs 96²)
    per image for every method, and the HR images' own value as the method ground_truth."""
    from rls.metrics import GROUND_TRUTH, RestorationMetrics

    class Brightness(torch.nn.Module):
        min_size = 1

        def forward(self, x):
            return x.float().mean((1, 2, 3))

    metrics = lambda: RestorationMetrics(niqe=Brightness())  # noqa: E731
    module = _module(G, methods={"wplus": wplus_l1()}, metrics=metrics, bicubic_baseline=True)
    data = _generated(G, n=2)
    _trainer(tmp_path).test(module, datamodule=data, verbose=False)
    rows = {(r["image_id"], r["method"]): r for r in read_rows(tmp_path / "results.csv")}
    assert len(rows) == 2 * 3
    hr = data.dataset[1]["hr"]
    truth = rows[("gen00001", GROUND_TRUTH)]
    assert float(truth["niqe"]) == pytest.approx(float(hr.mean()), abs=1e-6)
    assert truth["psnr"] == "" and truth["status"] == "ok"
    restored = Image.open(image_path(tmp_path, "wplus", "gen00001"))
    expected = torch.tensor(list(restored.getdata()), dtype=torch.float32).mean() / 255
    assert float(rows[("gen00001", "wplus")]["niqe"]) == pytest.approx(float(expected), abs=3e-3)
    summary = json.loads((tmp_path / "summary.json").read_text())["methods"]
    assert summary[GROUND_TRUTH]["niqe"]["n"] == 2 and "psnr" not in summary[GROUND_TRUTH]
    assert "niqe" in summary["bicubic"] and "niqe" in summary["wplus"]
    page = (tmp_path / "report.html").read_text()
    assert "NIQE ↓" in page and f"<th>{GROUND_TRUTH}</th>" not in page  # a row, no grid column
    # NIQE's own minimum (96²) above the generator's 32²: no ground-truth rows at all
    Brightness.min_size = 96
    assert GROUND_TRUTH not in _module(G, metrics=metrics).baselines
