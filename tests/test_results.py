"""The run directory's results files: crash-tolerant rows, resume, merge, summary."""

import json
import math

import pytest
import torch
from PIL import Image

from rls.reports.run_files import (
    COLUMNS,
    ShardWriter,
    all_rows,
    finished_pairs,
    image_path,
    merge,
    read_rows,
    save_png,
    summarize,
    write_summary,
)


def _row(image_id, method, psnr=20.0, status="ok", notes=""):
    return {
        "image_id": image_id,
        "method": method,
        "scale": 8,
        "corruption": "none",
        "psnr": psnr,
        "ssim": 0.5,
        "lpips": None,
        "lr_psnr": 30.0,
        "flow_nll": 100.0,
        "steps": 10,
        "seconds": 1.5,
        "status": status,
        "notes": notes,
    }


def test_rows_round_trip_with_header_and_blank_for_missing(tmp_path):
    ShardWriter(tmp_path, rank=0).write([_row("a", "rls"), _row("b", "rls", notes="x, y")])
    rows = all_rows(tmp_path)
    assert [r["image_id"] for r in rows] == ["a", "b"]
    assert list(rows[0]) == COLUMNS
    assert rows[0]["lpips"] == "" and float(rows[0]["psnr"]) == 20.0
    assert rows[1]["notes"] == "x, y"  # commas are quoted, not split


def test_torn_last_line_is_dropped_and_writer_continues(tmp_path):
    writer = ShardWriter(tmp_path, rank=0)
    writer.write([_row("a", "rls")])
    with open(writer.path, "a") as f:  # a crash in the middle of a row
        f.write("b,rls,8,none,19.")
    assert finished_pairs(tmp_path) == {("a", "rls")}
    ShardWriter(tmp_path, rank=0).write([_row("c", "rls")])  # a rerun appends cleanly
    assert finished_pairs(tmp_path) == {("a", "rls"), ("c", "rls")}


def test_merge_folds_rank_shards_into_one_sorted_file_once_per_pair(tmp_path):
    ShardWriter(tmp_path, rank=0).write([_row("b", "rls"), _row("a", "rls_plus")])
    ShardWriter(tmp_path, rank=1).write([_row("a", "rls"), _row("b", "rls")])  # padded dup
    rows = merge(tmp_path)
    assert [(r["method"], r["image_id"]) for r in rows] == [
        ("rls", "a"),
        ("rls", "b"),
        ("rls_plus", "a"),
    ]
    assert not list((tmp_path / ".shards").glob("*.csv"))
    assert len(read_rows(tmp_path / "results.csv")) == 3
    # a later run adds rows; the merged file and new shards are read together
    ShardWriter(tmp_path, rank=0).write([_row("c", "rls")])
    assert finished_pairs(tmp_path) == {("a", "rls"), ("b", "rls"), ("a", "rls_plus"), ("c", "rls")}


def test_reading_a_foreign_csv_names_the_file(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match="results.csv"):
        read_rows(path)


def test_summary_counts_failures_and_averages_only_ok_rows(tmp_path):
    rows = [
        _row("a", "rls", psnr=20.0),
        _row("b", "rls", psnr=22.0),
        _row("c", "rls", psnr=float("nan"), status="failed", notes="unreadable"),
    ]
    ShardWriter(tmp_path).write(rows)
    summary = write_summary(tmp_path, merge(tmp_path), {"rls": {"fid": 12.5}})
    entry = summary["rls"]
    assert (entry["count"], entry["ok"], entry["failed"]) == (3, 2, 1)
    assert entry["psnr"]["mean"] == pytest.approx(21.0)
    assert entry["psnr"]["std"] == pytest.approx(math.sqrt(2.0))
    assert "lpips" not in entry  # never measured: absent, not NaN
    assert entry["fid"] == 12.5
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["methods"]["rls"]["ok"] == 2


def test_summary_of_single_image_has_zero_std():
    entry = summarize([_row("a", "rls")])["rls"]
    assert entry["psnr"] == {"mean": 20.0, "std": 0.0, "n": 1}


def test_png_is_written_atomically_with_a_safe_name(tmp_path):
    image = torch.zeros(3, 4, 5)
    image[0] = 1.0
    path = image_path(tmp_path, "rls", "folder/face 01.png")
    save_png(path, image)
    assert path.parent.name == "rls" and "/" not in path.name
    loaded = Image.open(path)
    assert loaded.size == (5, 4) and loaded.getpixel((0, 0)) == (255, 0, 0)
    assert not [p for p in path.parent.iterdir() if p.suffix == ".tmp"]
    with pytest.raises(ValueError, match="C, H, W"):
        save_png(path, torch.zeros(1, 3, 4, 4))
