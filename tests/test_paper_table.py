"""The paper's table of a sweep (methods × (scale × metric)) as Markdown, LaTeX and CSV,
every value read from the members' summary.json."""

import csv
import io
import json
import shutil
import sys
from pathlib import Path

import pytest

from rls.reports.paper_table import (
    paper_table,
    to_csv,
    to_latex,
    to_markdown,
    write_paper_table,
)
from rls.reports.run_files import ShardWriter, merge, write_summary
from rls.reports.sweep import load_sweep

METHODS = ["rls", "bicubic", "rls_plus", "ground_truth"]  # deliberately not in paper order


def _member(run_dir: Path, scale: int) -> Path:
    """A finished run at ``scale``: rows, summary.json (with FID for two methods)."""
    rows = []
    for i, image_id in enumerate(["img0", "img1"]):
        for k, method in enumerate(METHODS):
            values = {"niqe": 1.0 if method == "ground_truth" else 4.0 + k + i / 10}
            if method != "ground_truth":
                values.update(psnr=30.0 - scale / 8 - k + i, ssim=0.9 - 0.01 * k, lpips=0.1 * k)
            rows.append({"image_id": image_id, "method": method, "scale": scale,
                         "corruption": "none", "status": "ok", **values})  # fmt: skip
    ShardWriter(run_dir).write(rows)
    merged = merge(run_dir)
    write_summary(run_dir, merged, {"rls": {"fid": 10.0 + scale}, "rls_plus": {"fid": 5.0}})
    (run_dir / "config.yaml").write_text(f"scale: {scale}\ncorruption:\n  name: none\n")
    return run_dir


@pytest.fixture
def sweep(tmp_path):
    return load_sweep([_member(tmp_path / f"x{s}", s) for s in (8, 16)])


def test_rows_are_methods_in_the_papers_order_and_values_are_the_summaries(sweep, tmp_path):
    table = paper_table(sweep)
    assert table["columns"] == ["×8", "×16"]
    assert table["methods"] == ["bicubic", "rls", "rls_plus", "ground_truth"]
    assert table["metrics"] == ["psnr", "ssim", "lpips", "niqe", "fid"]  # no KID recorded
    for scale, column in ((8, "×8"), (16, "×16")):
        summary = json.loads((tmp_path / f"x{scale}" / "summary.json").read_text())["methods"]
        for method in table["methods"]:
            for metric in table["metrics"]:
                entry = summary[method].get(metric)
                want = entry["mean"] if isinstance(entry, dict) else entry
                assert table["cells"][method][column][metric] == want, (method, column, metric)
    assert table["best"][("×8", "psnr")] == "rls"  # k = 0: the highest PSNR
    assert table["best"][("×8", "niqe")] == "rls"  # the lowest NIQE of the restorations
    assert table["best"][("×8", "fid")] == "rls_plus"


def test_markdown_latex_and_csv_have_the_papers_shape(sweep, tmp_path):
    table = paper_table(sweep)
    n_cols = len(table["columns"]) * len(table["metrics"])
    md = to_markdown(table).splitlines()
    assert len(md) == 2 + 4 and all(line.count("|") == n_cols + 2 for line in md)
    assert md[0].startswith("| method | ×8 PSNR ↑ | ×8 SSIM ↑ | ×8 LPIPS ↓ | ×8 NIQE ↓")
    assert md[2].startswith("| Bicubic |") and md[5].startswith("| Ground truth | – |")
    assert "**" not in md[5]  # the ground truth is a reference, never the best
    tex = to_latex(table)
    assert r"\multicolumn{5}{c}{$\times$8}" in tex and r"\multicolumn{5}{c}{$\times$16}" in tex
    assert tex.count(r"\\") == 2 + 4 and r"Ground truth & -- &" in tex
    rows = list(csv.reader(io.StringIO(to_csv(table))))
    assert rows[0][:3] == ["method", "×8 psnr", "×8 ssim"] and len(rows[0]) == 1 + n_cols
    assert [r[0] for r in rows[1:]] == table["methods"]
    assert float(rows[2][rows[0].index("×16 fid")]) == 26.0
    paths = write_paper_table(sweep, tmp_path / "out")
    assert sorted(p.name for p in paths.values()) == sorted(
        ["paper_table.md", "paper_table.tex", "paper_table.csv"]
    )


@pytest.mark.slow
def test_experiment_paper_writes_the_table_of_its_members(tmp_path, monkeypatch):
    """``python evaluate.py -m experiment=paper`` on the tiny 256² generator with 2-step
    searches (shortened: the authors' counts take hours): one table, 4 scales × the
    metrics available offline (PSNR, SSIM, NIQE), every method of the paper."""
    import evaluate

    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(Path(__file__).parent / "data" / "reference" / "niqe_pris_params.npz", weights)
    monkeypatch.setenv("RLS_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("RLS_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.chdir(tmp_path)
    short = [
        "method.rls.steps=2", "method.rls.start_samples=1000", "method.rls_plus.steps=2",
        "method.rls_plus.anchor.steps=2", "method.rls_plus.anchor.start_samples=1000",
        "method.pulse_rls_paper.steps=2", "method.pulse_rls_paper.fit_samples=1000",
        "method.brgm.steps=2", "method.brgm.w_avg_samples=1000", "method.ilo.steps=[1,1,1,1]",
        "method.ilo.fit_samples=1000",
    ]  # fmt: skip
    configs = Path(evaluate.__file__).resolve().parent / "configs"
    argv = ["evaluate.py", "-m", f"--config-path={configs}", "experiment=paper",
            "generator=tiny256", "data=generated", "data.dataset.n=2", "data.batch_size=2",
            "data.num_workers=0", *short, "flow_training.max_steps=5",
            "flow_training.epoch_size=1024", "flow_training.val_size=256",
            f"flow_training.cache_dir={tmp_path / 'flows'}", "logger=none",
            "trainer.enable_progress_bar=false", "threads=1",
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    evaluate.main()
    rows = list(csv.reader(open(tmp_path / "sweep" / "paper_table.csv")))
    methods = ["bicubic", "pulse_rls_paper", "brgm", "ilo", "rls", "rls_plus", "ground_truth"]
    assert [r[0] for r in rows[1:]] == methods
    scales = ["×8", "×16", "×32", "×64"]
    assert rows[0][1:] == [f"{s} {m}" for s in scales for m in ("psnr", "ssim", "niqe")]
    sweep = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    for member in sweep["members"]:
        summary = json.loads((Path(member["run_dir"]) / "summary.json").read_text())["methods"]
        for row in rows[1:]:
            for metric in ("psnr", "ssim", "niqe"):
                cell = row[rows[0].index(f"{member['column']} {metric}")]
                entry = summary[row[0]].get(metric)
                assert (float(cell) if cell else None) == (entry["mean"] if entry else None)
    assert (tmp_path / "sweep" / "paper_table.tex").is_file()
    assert (tmp_path / "sweep" / "paper_table.md").read_text().count("\n") == 2 + len(methods)
