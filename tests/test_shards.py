"""data.shard=I/N: a fixed part of the images per job, into one run directory, merged into
what one unsharded run writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import evaluate
from rls.data.shard import ShardError, parse_shard, shard_indices, shard_of
from rls.preflight import PreflightError
from rls.reports.run_files import read_rows

CONFIGS = str(Path(evaluate.__file__).parent / "configs")
FAST = [
    "experiment=demo_tiny", "method=[wplus]", "method.wplus.steps=3", "bicubic_baseline=true",
    "data.dataset.n=6", "data.batch_size=1", "logger=none", "metrics.fid=false",
    "metrics.lpips=[]", "trainer.enable_progress_bar=false", "prior.train_if_missing=false",
]  # fmt: skip


def _run(run_dir, *extra):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[*FAST, f"run_dir={run_dir}", *extra])
    return evaluate.evaluate(cfg)


def _rows(run_dir):
    return [
        {k: v for k, v in r.items() if k != "seconds"} for r in read_rows(run_dir / "results.csv")
    ]


def test_shard_setting_and_assignment():
    assert parse_shard(None) is None and parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "-1/4", "1", "a/b", "0/0"):
        with pytest.raises(ShardError, match="data.shard"):
            parse_shard(bad)
    ids = [f"img{i:03d}" for i in range(200)]
    parts = [shard_indices(ids, i, 4) for i in range(4)]
    assert sorted(k for p in parts for k in p) == list(range(200))  # disjoint, complete
    assert all(30 < len(p) < 70 for p in parts)
    # fixed by the id alone: adding images or reordering moves none of the others
    assert [shard_of(i, 4) for i in ids] == [shard_of(i, 4) for i in ids[::-1]][::-1]


def test_two_shards_and_the_merge_equal_one_unsharded_run(tmp_path):
    _run(tmp_path / "one")
    sharded = tmp_path / "sharded"
    _run(sharded, "data.shard=0/2")
    first = {r["image_id"] for r in read_rows(sharded / "results.csv")}
    assert first and len(first) < 6  # only shard 0's images so far
    _run(sharded, "data.shard=1/2")  # the last shard to finish merges every part
    assert _rows(sharded) == _rows(tmp_path / "one")
    one = json.loads((tmp_path / "one" / "summary.json").read_text())["methods"]
    both = json.loads((sharded / "summary.json").read_text())["methods"]
    for method in one:
        assert one[method]["psnr"] == both[method]["psnr"]
        assert one[method]["count"] == both[method]["count"] == 6
    assert not list((sharded / ".shards").glob("*.csv"))  # folded, none left behind
    page = (sharded / "report.html").read_text()
    assert page.count("<tr>") == (tmp_path / "one" / "report.html").read_text().count("<tr>")
    # a third job with another N would move images between shards: one line, nothing run
    with pytest.raises(ShardError, match=r"data.shard=0/3: .* is sharded into 2"):
        _run(sharded, "data.shard=0/3")
    with pytest.raises(PreflightError, match="expected I/N"):
        _run(sharded, "data.shard=3")


def test_a_rerun_of_a_finished_shard_computes_nothing(tmp_path):
    _run(tmp_path, "data.shard=1/2")
    before = _rows(tmp_path)
    _run(tmp_path, "data.shard=1/2")
    assert _rows(tmp_path) == before


def test_merge_command_folds_a_crashed_shards_rows(tmp_path, capsys):
    from rls.reports.cli import main
    from rls.reports.run_files import ShardWriter

    _run(tmp_path, "data.shard=0/2")
    rows = read_rows(tmp_path / "results.csv")
    ShardWriter(tmp_path, owner="shard1of2").write(
        [{**rows[0], "image_id": "crashed_part_image"}]
    )  # what a killed shard leaves: rows in its own shard file, never merged
    main(["merge", str(tmp_path)])
    merged = {r["image_id"] for r in read_rows(tmp_path / "results.csv")}
    assert "crashed_part_image" in merged
    assert "[merge]" in capsys.readouterr().out
    assert json.loads((tmp_path / "summary.json").read_text())["methods"]


def test_the_shards_of_a_run_share_its_default_directory():
    def name(*extra):
        with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
            return evaluate.run_name(compose(config_name="evaluate", overrides=[*FAST, *extra]))

    assert name("data.shard=0/2") == name("data.shard=1/2") == name()
    assert name("data.dataset.n=5") != name()  # other data: another run


@pytest.mark.slow
def test_a_shard_killed_with_sigkill_and_rerun_loses_and_repeats_nothing(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from rls.data.shard import shard_indices
    from rls.reports.run_files import shard_paths

    root = Path(evaluate.__file__).parent
    run = tmp_path / "run"
    cmd = [sys.executable, str(root / "evaluate.py"), *FAST, "method.wplus.steps=300",
           "data.shard=0/2", f"run_dir={run}", f"hydra.run.dir={tmp_path / 'h'}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{root / 'src'}:{root}", "WANDB_MODE": "disabled"}
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    end = time.time() + 300
    while time.time() < end and not any(read_rows(p) for p in shard_paths(run)):
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_before = {(r["image_id"], r["method"]) for p in shard_paths(run) for r in read_rows(p)}
    assert done_before  # killed after its first results
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    rows = read_rows(run / "results.csv")
    pairs = [(r["image_id"], r["method"]) for r in rows]
    ids = [f"gen{i:05d}" for i in range(6)]
    mine = {ids[k] for k in shard_indices(ids, 0, 2)}
    assert len(pairs) == len(set(pairs)) == 2 * len(mine)  # wplus + bicubic, none twice
    assert {i for i, _ in pairs} == mine and done_before <= set(pairs)
