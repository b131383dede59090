"""W&B as a user gets it: offline runs of evaluate.py and train_flow.py, read back from the
run directory's transaction log (no account, no network)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from callbacks.loggers import wandb_run_id
from rls.reports.run_files import read_rows
from rls.reports.wandb_offline import find_runs, read_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def offline_wandb(tmp_path_factory):
    """W&B offline, with every folder it writes inside a temporary directory."""
    home = tmp_path_factory.mktemp("wandb_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
            mp.setenv(var, str(home / var.lower()))
        yield home


def flush_wandb():
    """wandb writes a finished run's last records in the background: shut its service
    down (the next run starts another) so that the files are complete when read."""
    import wandb

    wandb.teardown()


def _compose(name, overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def evaluate_offline(run_dir, flows, *overrides):
    """evaluate.py with logger=wandb on 2 generated images, a few steps per method."""
    import evaluate

    cfg = _compose(
        "evaluate",
        [
            "data.dataset.n=2",
            "logger=wandb",
            "metrics.fid=false",
            "metrics.lpips=[]",
            "trainer.enable_progress_bar=false",
            "flow_training.max_steps=5",
            "flow_training.epoch_size=1024",
            "flow_training.val_size=256",
            f"flow_training.cache_dir={flows}",
            f"run_dir={run_dir}",
            *overrides,
        ],
    )
    evaluate.evaluate(cfg)
    flush_wandb()
    return {read_run(p).job_type: read_run(p) for p in find_runs(run_dir)}


@pytest.fixture(scope="module")
def sweep(offline_wandb, tmp_path_factory):
    """Two members of one sweep (W&B group), as `-m corruption=none,gaussian_noise` makes;
    the first trains the flow (logged as its own run), the second reuses it."""
    base = tmp_path_factory.mktemp("sweep")
    methods = ["method=[wplus,rls]", "method.wplus.steps=3", "method.rls.steps=4"]
    group = ["logger.group=sweep-test", *methods]
    return {
        corruption: evaluate_offline(
            base / corruption, base / "flows", f"corruption={corruption}", *group
        )
        for corruption in ("none", "gaussian_noise")
    } | {"dir": base}


def test_evaluate_run_logs_grids_results_curves_and_summary(sweep):
    runs = sweep["none"]
    assert set(runs) == {"wplus+rls", "train_flow"}  # job type = the method set
    run = runs["wplus+rls"]
    assert run.finished and run.group == "sweep-test"
    run_dir = sweep["dir"] / "none"

    # the full resolved config, flat: filterable by corruption / scale / method settings
    assert run.config["corruption.name"] == "none" and run.config["scale"] == 8
    assert run.config["method.rls.steps"] == 4 and run.config["run_dir"] == str(run_dir)

    # image grids: LR | bicubic | wplus | rls | HR for both images, as PNG files
    grids = run.values("grids")[-1]
    assert grids["count"] == 2 and grids["_type"] == "images/separated"
    for name, caption in zip(grids["filenames"], grids["captions"]):
        assert caption.endswith("LR | bicubic | wplus | rls | HR")
        assert Image.open(run.files / name).size == (32 * 5, 32)

    # the results table: every row of results.csv, numbers as numbers
    table = run.table("results")
    rows = [dict(zip(table["columns"], r)) for r in table["data"]]
    csv_rows = read_rows(run_dir / "results.csv")
    assert len(rows) == len(csv_rows) == 2 * 3
    for row, csv_row in zip(rows, csv_rows):
        assert row["psnr"] == pytest.approx(float(csv_row["psnr"]))
        assert isinstance(row["scale"], int) and isinstance(row["steps"], int)
    # its solution images travel in the table's artifact (one PNG per row)
    artifact = next(a for a in run.artifacts if a["name"].endswith("-results"))
    assert sum(f.endswith(".png") for f in artifact["files"]) == len(rows)
    bicubic = next(r for r in rows if r["method"] == "bicubic")
    assert bicubic["flow_nll"] is None  # an empty cell stays empty, not "" or "nan"

    # loss curves: every step of every term, on the search/step axis
    steps = run.values("search/step")
    assert sorted(set(steps)) == list(range(4))
    for key in ("search/rls/total", "search/rls/rls/l1", "search/rls/rls/logp"):
        values = run.values(key)
        assert len(values) == 4 and all(math.isfinite(v) for v in values)
    assert len(run.values("search/wplus/total")) == 3

    # summary metrics and the summary table / artifact: the numbers of summary.json
    summary = json.loads((run_dir / "summary.json").read_text())["methods"]
    for method in ("bicubic", "wplus", "rls"):
        assert run.summary[f"{method}/psnr"] == pytest.approx(summary[method]["psnr"]["mean"])
        assert run.summary[f"{method}/count"] == 2
    assert run.summary["rls/flow_nll_std"] == pytest.approx(summary["rls"]["flow_nll"]["std"])
    table = run.table("summary")
    assert [r[0] for r in table["data"]] == sorted(summary)
    artifact = next(a for a in run.artifacts if a["type"] == "summary")
    assert {"summary.json", "results.csv", "summary.table.json"} <= set(artifact["files"])


def test_flow_trained_by_evaluate_logs_nll_priors_and_diagnostics(sweep):
    run = sweep["none"]["train_flow"]
    assert run.finished and run.group == "sweep-test" and run.config["flow_training.max_steps"] == 5
    assert run.values("val/nll") and all(math.isfinite(v) for v in run.values("val/nll"))
    priors = run.table("flow/priors")
    assert [r[0] for r in priors["data"]][0] == "flow" and len(priors["data"]) == 4
    for key in ("flow/chi2", "flow/qq", "flow/nll"):
        assert (run.files / run.values(key)[-1]["filenames"][0]).is_file()
    # the second member reused the cached flow: no second flow run
    assert set(sweep["gaussian_noise"]) == {"wplus+rls"}


def test_a_resumed_run_reports_every_image_to_wandb(offline_wandb, tmp_path):
    args = ("method=[wplus]", "method.wplus.steps=2", "prior.train_if_missing=false")
    evaluate_offline(tmp_path, tmp_path / "flows", *args, "data.dataset.n=1")
    runs = [read_run(p) for p in find_runs(tmp_path)]
    evaluate_offline(tmp_path, tmp_path / "flows", *args)  # 2 images: only the second is new
    resumed = next(read_run(p) for p in find_runs(tmp_path) if p not in [r.path for r in runs])
    # the rerun continues the run directory's own W&B run: one run, not two of one name
    assert resumed.run_id == runs[0].run_id == wandb_run_id(tmp_path, "wplus")
    assert resumed.summary["wplus/count"] == 2
    assert len(resumed.table("results")["data"]) == 2 * 2
    summary = json.loads((tmp_path / "summary.json").read_text())["methods"]
    assert resumed.summary["wplus/psnr"] == pytest.approx(summary["wplus"]["psnr"]["mean"])


def test_train_flow_logs_nll_curves_priors_and_diagnostics(offline_wandb, tmp_path):
    import train_flow

    cfg = _compose(
        "train_flow",
        [
            f"output_dir={tmp_path}",
            "flow.transforms=2",
            "flow.hidden=[32,32]",
            "flow_training.epoch_size=512",
            "flow_training.val_size=256",
            "flow_training.batch_size=128",
            "flow_training.max_steps=8",
            "trainer.log_every_n_steps=2",
            "trainer.enable_progress_bar=false",
            "callbacks.flow_diagnostics.every_n_epochs=1",
        ],
    )
    train_flow.main(cfg)
    flush_wandb()
    (path,) = find_runs(tmp_path)
    run = read_run(path)
    assert run.finished and run.job_type == "train_flow"
    assert run.config["flow.transforms"] == 2 and run.config["flow_training.max_steps"] == 8
    assert len(run.values("val/nll")) == 2 and run.values("train/nll")
    nll = json.loads((tmp_path / "metrics.json").read_text())["val_nll"]
    assert run.summary["final/val_nll/flow"] == pytest.approx(nll["flow"])
    priors = {r[0]: r[1] for r in run.table("flow/priors")["data"]}
    assert priors == pytest.approx(nll)
    for key in ("flow/chi2", "flow/qq", "flow/moments", "flow/chi2_during_training"):
        assert (run.files / run.values(key)[-1]["filenames"][0]).is_file()


def test_sweep_report_shows_the_offline_runs_and_their_numbers(sweep, monkeypatch):
    """The W&B Report built after `wandb sync` (only its upload is replaced)."""
    from rls.reports import wandb_report

    published = []
    monkeypatch.setattr(wandb_report, "publish", lambda report: published.append(report))
    members = [sweep["dir"] / c for c in ("none", "gaussian_noise")]
    wandb_report.main([*map(str, members), "--entity", "someone"])
    (report,) = published
    runs = [sweep[c]["wplus+rls"] for c in ("none", "gaussian_noise")]
    flow_run = sweep["none"]["train_flow"]
    assert (report.entity, report.project) == ("someone", "rls")

    grids = [b for b in report.blocks if hasattr(b, "panels")]
    panels = {type(p).__name__: [] for g in grids for p in g.panels}
    for g in grids:
        for p in g.panels:
            panels[type(p).__name__].append((g.runsets[0].filters, p))
    evaluation = "Group = 'sweep-test' and JobType != 'train_flow'"

    # the aggregated table: the runs' own summary numbers, column by column
    psnr = next(b.text for b in report.blocks if getattr(b, "text", "").startswith("| method"))
    lines = {line.split(" | ")[0].strip("| "): line for line in psnr.splitlines()[2:]}
    assert psnr.splitlines()[0] == "| method | none | gaussian_noise |"
    for method in ("bicubic", "wplus", "rls"):
        cells = lines[method].strip("|").split("|")[1:]
        for cell, run in zip(cells, runs):
            assert cell.strip(" *").startswith(f"{run.summary[f'{method}/psnr']:.4g} ± ")

    # the paper's layout: methods × (column × metric), the members' summary.json values
    paper = next(
        b.text for b in report.blocks if getattr(b, "text", "").startswith("| method | none PSNR")
    )
    lines = {line.split(" | ")[0].strip("| "): line for line in paper.splitlines()[2:]}
    head = paper.splitlines()[0].strip("|").split("|")
    for method, label in (("bicubic", "Bicubic"), ("rls", "RLS"), ("wplus", "wplus")):
        cells = lines[label].strip("|").split("|")
        for run, column in zip(runs, ("none", "gaussian_noise")):
            cell = cells[[h.strip() for h in head].index(f"{column} PSNR ↑")]
            assert cell.strip(" *") == f"{run.summary[f'{method}/psnr']:.2f}"

    # realism-fidelity: one scatter per method with a flow NLL, on keys every run has
    scatters = panels["ScatterPlot"]
    assert {p.title.split(":")[0] for _, p in scatters} == {"wplus", "rls"}
    for filters, p in scatters:
        assert filters == evaluation
        assert all(p.x in r.summary and p.y in r.summary for r in runs)

    # image grids, loss curves per method, tables: keys the runs logged
    history = set().union(*(r.history_keys() for r in runs))
    assert [p.media_keys for f, p in panels["MediaBrowser"] if f == evaluation] == [["grids"]]
    curves = [p for f, p in panels["LinePlot"] if f == evaluation]
    assert sorted(p.title for p in curves) == ["rls loss terms", "wplus loss terms"]
    for p in curves:
        assert p.x == "search/step" and set(p.y) <= history
        assert f"search/{p.title.split()[0]}/total" in p.y
    tables = {p.table_name for _, p in panels["WeavePanelSummaryTable"]}
    assert {"summary", "results", "flow/priors"} == tables

    # the flow trained for the sweep: its NLL curves and diagnostics
    flow = [
        p
        for f, p in panels["LinePlot"] + panels["MediaBrowser"]
        if f.endswith("= 'train_flow'") and "!=" not in f
    ]
    keys = {k for p in flow for k in getattr(p, "y", None) or p.media_keys}
    assert {"val/nll", "flow/chi2", "flow/qq", "flow/nll"} <= keys <= flow_run.history_keys()


def test_members_of_a_multirun_share_the_sweep_group(offline_wandb, tmp_path, monkeypatch, capsys):
    """`python evaluate.py -m ... logger=wandb`: one W&B run per member, grouped by sweep,
    and (offline) the command that builds the sweep's W&B Report once they are synced."""
    import sys

    import evaluate

    monkeypatch.chdir(tmp_path)
    sweep_dir = tmp_path / "outputs" / "sweeps" / "s1"
    argv = ["evaluate.py", "-m", f"--config-path={ROOT / 'configs'}", "method=[wplus]"]
    argv += ["method.wplus.steps=2", "data.dataset.n=1", "prior.train_if_missing=false"]
    argv += ["metrics.fid=false", "metrics.lpips=[]", "trainer.enable_progress_bar=false"]
    argv += ["logger=wandb", "corruption=none,jpeg", f"hydra.sweep.dir={sweep_dir}"]
    monkeypatch.setattr(sys, "argv", argv)
    evaluate.main()
    flush_wandb()
    runs = [read_run(p) for p in sorted(tmp_path.glob("runs/*/wandb/offline-run-*"))]
    assert sorted(r.config["corruption.name"] for r in runs) == ["jpeg", "none"]
    assert {r.group for r in runs} == {"outputs/sweeps/s1"}
    assert {r.job_type for r in runs} == {"wplus"} and all(r.finished for r in runs)
    assert f"python -m callbacks.wandb_report {sweep_dir}" in capsys.readouterr().out

    # online, the same Hydra callback publishes the report (only the upload is replaced)
    from omegaconf import OmegaConf

    from callbacks import wandb_report

    published = []
    monkeypatch.setattr(wandb_report, "publish", lambda report: published.append(report) or "u")
    monkeypatch.setenv("WANDB_MODE", "online")
    config = OmegaConf.load(sweep_dir / "multirun.yaml")
    wandb_report.PublishReport(entity="someone").on_multirun_end(config)
    (report,) = published
    filters = {b.runsets[0].filters for b in report.blocks if hasattr(b, "runsets")}
    assert filters == {"Group = 'outputs/sweeps/s1' and JobType != 'train_flow'"}
    assert "jpeg" in next(b.text for b in report.blocks if hasattr(b, "text"))


def test_the_wandb_run_id_belongs_to_the_run_directory_and_job(tmp_path):
    from callbacks.loggers import make_logger

    a = wandb_run_id(tmp_path / "run_x8", "rls+rls_plus")
    assert a == wandb_run_id(tmp_path / "run_x8", "rls+rls_plus")
    assert a.startswith("run_x8-") and a != wandb_run_id(tmp_path / "run_x16", "rls+rls_plus")
    assert a != wandb_run_id(tmp_path / "run_x8", "train_flow")
    logger = make_logger(
        {"kind": "wandb", "mode": "disabled"}, tmp_path / "run_x8", job_type="rls+rls_plus"
    )
    assert logger._wandb_init["id"] == a and logger._wandb_init["resume"] == "allow"
