"""A run directory under concurrent use, crashes and damage: a second process is refused in
one line, a killed process's lock is taken over, leftovers of a crash are recovered with a
warning, a damaged results.csv costs only its bad lines (recomputed), files are readable by
others as the umask says, and a run killed at random points then rerun loses nothing."""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_bad_inputs import _evaluate, _rows

from rls.reports.run_files import (
    COLUMNS,
    ShardWriter,
    finished_pairs,
    merge,
    read_rows,
    summarize,
)
from rls.reports.run_lock import RunDirBusy, RunDirLock

ROOT = Path(__file__).resolve().parents[1]


def _row(image_id, method="wplus", psnr="20.5", status="ok"):
    values = {k: "" for k in COLUMNS}
    values.update(image_id=image_id, method=method, scale="8", corruption="none", psnr=psnr)
    values.update(status=status)
    return values


def _line(row) -> str:
    return ",".join(row[k] for k in COLUMNS) + "\n"


def test_a_second_holder_is_refused_in_one_line_until_the_first_lets_go(tmp_path):
    first = RunDirLock(tmp_path).acquire()
    with pytest.raises(RunDirBusy) as err:
        RunDirLock(tmp_path).acquire()
    message = str(err.value)
    assert message.startswith(f"run_dir={tmp_path} is in use by pid {os.getpid()} on ")
    assert socket.gethostname() in message and " since 20" in message and "\n" not in message
    first.release()
    RunDirLock(tmp_path).acquire().release()  # free again


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    code = (
        "import sys, time; from rls.reports.run_lock import RunDirLock; "
        f"lock = RunDirLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(RunDirBusy, match=f"in use by pid {child.pid} on "):
            RunDirLock(tmp_path).acquire()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        RunDirLock(tmp_path).acquire().release()  # the kernel released the dead one's lock
    finally:
        child.kill()


def test_leftovers_of_a_crash_are_recovered_with_a_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    shards = tmp_path / ".shards"
    shards.mkdir()
    # the older name, no header line (lost in a crash), a torn last line
    (shards / "results.rank0.csv").write_text(_line(_row("a")) + _line(_row("b"))[:9])
    tmp = tmp_path / "images" / "wplus" / ".a.png.123.tmp"
    tmp.parent.mkdir(parents=True)
    tmp.write_bytes(b"half a png")
    os.utime(tmp, (time.time() - 3600, time.time() - 3600))
    assert finished_pairs(tmp_path) == {("a", "wplus")}
    assert "no header line" in caplog.text and "dropped a torn last line" in caplog.text
    with RunDirLock(tmp_path):
        assert not tmp.exists()
        writer = ShardWriter(tmp_path, rank=0)  # continues the crashed run's shard (repaired)
        writer.write([_row("b")])
        assert finished_pairs(tmp_path) == {("a", "wplus"), ("b", "wplus")}
        rows = merge(tmp_path)
    assert sorted(r["image_id"] for r in rows) == ["a", "b"]
    assert not list(shards.glob("*.csv"))
    assert "removed 1 temporary file(s) left by an interrupted run" in caplog.text


def test_a_damaged_results_csv_costs_only_its_bad_lines(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    path = tmp_path / "results.csv"
    good = [_row("a"), _row("b"), _row("c", status="failed", psnr="")]
    text = ",".join(COLUMNS) + "\n" + "".join(_line(r) for r in good)
    path.write_bytes(
        text.encode()
        + b"this,is,garbage\n"
        + b"\x00\x01\xff\xfe binary\n"
        + _line(_row("d", psnr="fast")).encode()
        + _line(_row("e", status="done")).encode()
        + b"f,wplus,8,none,21"  # unterminated
    )
    rows = read_rows(path)
    assert [r["image_id"] for r in rows] == ["a", "b", "c"]
    for expected in (
        "line 5: not a result (fewer fields than the header), ignored",
        "line 6: not a result (binary (non-UTF-8 or NUL) bytes)",
        "line 7: not a result (psnr='fast' is not a number)",
        "line 8: not a result (status 'done' is neither ok nor failed)",
        "dropped a torn last line (an interrupted write): 'f,wplus,8,none,21'",
    ):
        assert expected in caplog.text, expected
    assert set(summarize(rows)) == {"wplus"}  # no phantom method "is"
    assert finished_pairs(tmp_path) == {("a", "wplus"), ("b", "wplus")}


def test_a_rerun_recomputes_the_rows_a_damaged_results_csv_lost(tmp_path):
    run = tmp_path / "run"
    args = ["data.dataset.n=2", f"run_dir={run}"]
    _evaluate(args)
    before = _rows(run)
    path = run / "results.csv"
    lines = path.read_text().splitlines(keepends=True)
    damaged = [line for line in lines if not line.startswith("gen00001,wplus")]
    path.write_text("".join(damaged) + "this,is,garbage\n")
    _evaluate(args)
    after = _rows(run)
    assert after.keys() == before.keys()  # gen00001 restored again, nothing phantom
    assert after[("gen00001", "wplus")]["psnr"] == before[("gen00001", "wplus")]["psnr"]
    assert "this" not in path.read_text()
    summary = (run / "summary.json").read_text()
    assert '"is"' not in summary and "garbage" not in (run / "report.html").read_text()


@pytest.fixture
def shared_dir():
    """A folder others may enter (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="rls_umask_"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_run_under_umask_022_is_readable_by_another_user(shared_dir):
    previous = os.umask(0o022)
    try:
        run = shared_dir / "run"
        _evaluate(["data.dataset.n=1", f"run_dir={run}"])
    finally:
        os.umask(previous)
    files = [p for p in run.rglob("*") if p.is_file() and not p.name.startswith(".lock")]
    names = {p.name for p in files}
    assert {"results.csv", "summary.json", "report.html", "config.yaml"} <= names
    assert any(p.suffix == ".png" for p in files)
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o644, path
    for path in [p for p in run.rglob("*") if p.is_dir()]:
        assert path.stat().st_mode & 0o777 == 0o755, path
    if os.geteuid() == 0 and shutil.which("setpriv"):  # read them as nobody
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat"]
        done = subprocess.run([*as_nobody, *map(str, files)], capture_output=True)
        assert done.returncode == 0, done.stderr.decode()


def _cli(run_dir, tmp_path, n=4, steps=5):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(WANDB_MODE="disabled", RLS_OFFLINE="1", PYTHONPATH=f"{ROOT / 'src'}:{ROOT}")
    args = [
        *("logger=none", "metrics.fid=false", "metrics.lpips=[]", "prior.train_if_missing=false"),
        *("trainer.enable_progress_bar=false", "method=[wplus]", f"method.wplus.steps={steps}"),
        *(f"data.dataset.n={n}", "data.batch_size=1", "threads=1", f"run_dir={run_dir}"),
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    cmd = [sys.executable, str(ROOT / "evaluate.py"), *args]
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _wait_for(path: Path, process, timeout=300.0):
    end = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.05)


def _psnr(run_dir):
    return {k: (r["status"], r["psnr"]) for k, r in _rows(run_dir).items()}


@pytest.mark.slow
def test_two_processes_on_one_run_dir_then_kills_at_random_points_lose_nothing(tmp_path):
    reference = tmp_path / "reference"
    done = _cli(reference, tmp_path)
    assert done.wait(timeout=600) == 0, done.communicate()[1][-2000:]
    expected = _psnr(reference)
    assert len(expected) == 4 * 2 and all(s == "ok" for s, _ in expected.values())

    run = tmp_path / "run"
    first = _cli(run, tmp_path, steps=5000)  # busy long enough for a second one to start
    _wait_for(run / ".lock.json", first)
    second = _cli(run, tmp_path)
    _, err = second.communicate(timeout=600)
    assert second.returncode == 1, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"[evaluate] run_dir={run} is in use by pid "), err
    assert f"pid {first.pid} on {socket.gethostname()} since " in lines[0]
    assert first.poll() is None  # the first one was not disturbed
    first.send_signal(signal.SIGKILL)  # its lock goes with it: the next run takes over
    first.wait(timeout=60)
    third = _cli(run, tmp_path)
    assert third.wait(timeout=600) == 0, third.communicate()[1][-2000:]
    assert {k: s for k, (s, _) in _psnr(run).items()} == {k: "ok" for k in expected}

    rng = random.Random(0)
    for attempt in range(3):  # killed anywhere from start-up to the last image, then rerun
        run = tmp_path / f"killed{attempt}"
        victim = _cli(run, tmp_path)
        _wait_for(run / ".lock.json", victim)
        time.sleep(rng.uniform(0.0, 20.0))
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=60)
        rerun = _cli(run, tmp_path)
        assert rerun.wait(timeout=600) == 0, rerun.communicate()[1][-2000:]
        assert _psnr(run) == expected, attempt
        assert not list((run / ".shards").glob("*.csv"))
