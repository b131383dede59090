"""Sweeps: ``python evaluate.py -m ...`` members, their aggregation and the sweep report."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from rls.reports.cli import sweep_main as main
from rls.reports.run_files import ShardWriter, image_path, merge, save_png
from rls.reports.sweep import load_sweep
from rls.reports.sweep_html import write_sweep

FAST = [
    "method=[wplus]",
    "method.wplus.steps=2",
    "method.wplus.start_samples=1000",  # w̄ from 1e3 mapped codes, not 1e6: seconds
    "data.dataset.n=2",
    "data.batch_size=2",
    "prior.train_if_missing=false",
    "metrics.fid=false",
    "metrics.lpips=[]",
    "logger=none",
    "trainer.enable_progress_bar=false",
]


def _multirun(monkeypatch, sweep_dir, *overrides):
    """``python evaluate.py -m <overrides>`` in this process (Hydra's own entry point)."""
    import evaluate

    configs = Path(evaluate.__file__).resolve().parent / "configs"  # as from the repo root
    argv = ["evaluate.py", "-m", f"--config-path={configs}", *FAST, *overrides]
    argv.append(f"hydra.sweep.dir={sweep_dir}")
    monkeypatch.setattr(sys, "argv", argv)
    # HYDRA_FULL_ERROR=1 (scripts/test.sh sets it) makes Hydra re-raise instead of exiting 1
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    try:
        evaluate.main()
    except SystemExit as stop:  # Hydra exits 1 after the sweep when a member failed
        return stop.code
    return 0


def test_multirun_reports_every_member_and_a_failed_one_as_failed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # members' default run directories: runs/<name>_..._<hash>
    # the second member fails inside its search (Adam refuses a negative learning rate)
    code = _multirun(monkeypatch, tmp_path / "sweep", "method.wplus.lr=0.05,-1")
    assert code == 1
    sweep = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert sweep["varied"] == ["method.wplus.lr"]
    assert sweep["columns"] == ["wplus.lr=0.05", "wplus.lr=-1"]
    done, failed = sweep["members"]
    assert done["status"] == "done" and done["rows"] == 4  # 2 images x (wplus + bicubic)
    assert failed["status"] == "failed" and "learning rate" in failed["error"]
    assert done["run_dir"].startswith(str(tmp_path / "runs" / "eval_wplus_none_x8_"))
    psnr = sweep["table"]["psnr"]
    assert psnr["wplus"]["wplus.lr=0.05"]["n"] == 2 and psnr["wplus"]["wplus.lr=-1"] is None
    page = (tmp_path / "sweep" / "sweep_report.html").read_text()
    assert "failed" in page and "learning rate" in page
    csv_lines = (tmp_path / "sweep" / "sweep.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 4 and csv_lines[0].startswith("column,method.wplus.lr,image_id")


def test_rerunning_a_sweep_resumes_its_members(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _multirun(monkeypatch, tmp_path / "first", "corruption=jpeg") == 0
    first = json.loads((tmp_path / "first" / "sweep.json").read_text())
    capsys.readouterr()
    # the same command again (Hydra makes a new sweep directory): nothing is computed twice
    assert _multirun(monkeypatch, tmp_path / "again", "corruption=jpeg") == 0
    assert "resuming: 4 (image, method) results already in" in capsys.readouterr().out
    again = json.loads((tmp_path / "again" / "sweep.json").read_text())
    assert [m["run_dir"] for m in again["members"]] == [m["run_dir"] for m in first["members"]]
    assert again["table"] == first["table"] and first["members"][0]["rows"] == 4


def _fake_run(run_dir, corruption, methods, psnr0=20.0):
    """A finished run directory as evaluate.py writes it (rows, images, config)."""
    rows = []
    for i, image_id in enumerate(["img0", "img1"]):
        save_png(image_path(run_dir, "lr", image_id), _img(4))
        save_png(image_path(run_dir, "hr", image_id), _img(16))
        for k, method in enumerate(methods):
            save_png(image_path(run_dir, method, image_id), _img(16))
            values = {"psnr": psnr0 + k + i, "ssim": 0.5, "lr_psnr": 30.0 + k}
            values["flow_nll"] = 10.0 * (k + 1)
            rows.append({"image_id": image_id, "method": method, "scale": 8,
                         "corruption": corruption, "status": "ok", **values})  # fmt: skip
    ShardWriter(run_dir).write(rows)
    merge(run_dir)
    methods_cfg = "\n".join(
        f"  {m}:\n    _target_: rls.search.build_method\n    name: {m}\n    method: {m}"
        for m in methods
    )
    (run_dir / "config.yaml").write_text(
        f"scale: 8\ncorruption:\n  name: {corruption}\n  severity: null\nmethod:\n{methods_cfg}\n"
    )
    return run_dir


def _img(size):
    import torch

    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(size))


def test_by_hand_on_run_directories_marks_best_and_missing(tmp_path):
    a = _fake_run(tmp_path / "a", "none", ["rls", "wplus"], psnr0=20.0)
    b = _fake_run(tmp_path / "b", "jpeg", ["rls", "wplus"], psnr0=15.0)
    paths = main([str(a), str(b), str(tmp_path / "never_ran"), "--out", str(tmp_path / "out")])
    sweep = json.loads(paths["json"].read_text())
    assert sweep["columns"] == ["none", "jpeg", "never_ran"]
    assert [m["status"] for m in sweep["members"]] == ["done", "done", "missing"]
    assert sweep["best"]["psnr"] == {"none": "wplus", "jpeg": "wplus"}  # higher is better
    assert sweep["best"]["flow_nll"] == {"none": "rls", "jpeg": "rls"}  # lower is better
    assert sweep["table"]["psnr"]["rls"]["jpeg"]["mean"] == pytest.approx(15.5)
    page = paths["html"].read_text()
    assert "20.5 ± 0.71" in page and "missing" in page
    assert "http://" not in page and "https://" not in page  # self-contained
    # one grid per column, LR | each method | HR, the same two images in each
    grids = page.split("<table class='grid'>")[1:]
    assert len(grids) == 2
    for grid in grids:
        assert len(re.findall(r"<img src='data:image/png;base64,", grid)) == 2 * 4
        assert grid.count(">img0 LR<") == 1 and grid.count(">img1 LR<") == 1


def test_a_partial_sweep_directory_shows_members_not_run_yet(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    params:\n      corruption: none,jpeg\n"
        "  overrides:\n    task: ['method=[rls]']\n"
    )
    job = sweep_dir / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- corruption=none\n- method=[rls]\n")
    (job / ".hydra" / "hydra.yaml").write_text("hydra:\n  job:\n    num: 0\n")
    run = _fake_run(tmp_path / "run0", "none", ["rls"])
    (job / "run_dir.txt").write_text(f"{run}\n")
    (job / "member.json").write_text('{"status": "done"}')
    sweep = load_sweep([sweep_dir])
    assert [(m.column, m.status) for m in sweep.members] == [("none", "done"), ("jpeg", "missing")]
    write_sweep(sweep, sweep_dir)
    page = (sweep_dir / "sweep_report.html").read_text()
    # rls's jpeg cell in the PSNR, SSIM, LR-PSNR and flow NLL tables (LPIPS was not measured)
    assert page.count("class='missing failed'>missing<") == 4


def test_an_unknown_method_or_corruption_lists_the_valid_ones_before_anything_runs(
    tmp_path, monkeypatch
):
    import runpy

    import evaluate

    monkeypatch.chdir(tmp_path)
    for args, said in [
        (["-m", "method=[rls,rsl]"], "unknown method 'rsl' in 'method=[rls,rsl]'"),
        (["-m", "corruption=none,jepg"], "unknown corruption 'jepg'"),
    ]:
        monkeypatch.setattr(sys, "argv", ["evaluate.py", *args])
        with pytest.raises(SystemExit) as stop:  # python evaluate.py ... as a script
            runpy.run_path(evaluate.__file__, run_name="__main__")
        assert said in str(stop.value)
        assert "rls_plus" in str(stop.value) or "gaussian_noise" in str(stop.value)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "outputs").exists()
