"""The cluster on a real SLURM: a one-node slurmctld + slurmd on this machine
(scripts/slurm_local.sh), driving evaluate.py as SLURM runs it. Slow; skipped, with the
reason, where SLURM's packages are not installed (sudo bash scripts/slurm_local.sh install).

Jobs are watched with squeue (no accounting database here: sacct has nothing to say)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rls.reports.run_files import read_rows, shard_paths

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm_local.sh"
FAST = [
    "experiment=demo_tiny", "method=[wplus]", "bicubic_baseline=true", "data.dataset.n=6",
    "data.batch_size=1", "logger=none", "metrics.fid=false", "metrics.lpips=[]",
    "trainer.enable_progress_bar=false", "prior.train_if_missing=false",
]  # fmt: skip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if shutil.which("slurmctld") is None or shutil.which("sbatch") is None:
        pytest.skip("SLURM is not installed here (sudo bash scripts/slurm_local.sh install)")
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "RLS_SLURM_DIR": str(state)}
    started = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    if started.returncode != 0:
        pytest.skip(f"SLURM did not start here: {started.stderr.strip()[-300:]}")
    env["SLURM_CONF"] = str(state / "slurm.conf")
    yield env
    subprocess.run(["bash", str(SCRIPT), "stop"], env=env, timeout=60)


def _command(run_dir: Path, *extra: str) -> str:
    args = " ".join([*FAST, f"run_dir={run_dir}", *extra])
    return f"{sys.executable} {ROOT / 'evaluate.py'} {args} hydra.run.dir={run_dir}/.hydra_out"


def _sbatch(env, out_dir: Path, command: str, *options: str) -> str:
    done = subprocess.run(
        ["sbatch", "--parsable", f"--chdir={ROOT}", f"--output={out_dir}/slurm-%A_%a.out",
         *options, f"--wrap={command}"],
        env={**env, "WANDB_MODE": "disabled", "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"},
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return done.stdout.strip().split(";")[0]


def _wait(env, job: str, timeout: float = 600) -> None:
    end = time.time() + timeout
    while time.time() < end:
        queued = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i"], env=env,
                                capture_output=True, text=True)  # fmt: skip
        if queued.returncode == 0 and not queued.stdout.strip():
            return
        time.sleep(1)
    raise TimeoutError(f"SLURM job {job} still queued after {timeout} s")


def _rows(run_dir: Path) -> list[dict]:
    rows = read_rows(run_dir / "results.csv")
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_a_sharded_evaluation_as_a_slurm_array_equals_one_run(slurm, tmp_path):
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    _wait(slurm, _sbatch(slurm, tmp_path, _command(one)))
    array = _sbatch(
        slurm, tmp_path, _command(sharded, "data.shard=$SLURM_ARRAY_TASK_ID/2"), "--array=0-1"
    )
    _wait(slurm, array)
    logs = "\n".join(p.read_text() for p in tmp_path.glob("slurm-*.out"))
    assert _rows(one), logs[-3000:]
    assert _rows(sharded) == _rows(one), logs[-3000:]
    assert (sharded / "report.html").is_file() and not shard_paths(sharded)


def test_a_member_cancelled_mid_run_resumes_when_submitted_again(slurm, tmp_path):
    run = tmp_path / "run"
    slow = _command(run, "method.wplus.steps=400")
    job = _sbatch(slurm, tmp_path, slow)
    end = time.time() + 300
    while time.time() < end and not any(read_rows(p) for p in shard_paths(run)):
        time.sleep(0.5)  # until the first results are on disk
    subprocess.run(["scancel", job], env=slurm, check=True)
    _wait(slurm, job)
    before = {(r["image_id"], r["method"]) for p in shard_paths(run) for r in read_rows(p)}
    assert 0 < len(before) < 12  # cut mid-run: some results, not all
    _wait(slurm, _sbatch(slurm, tmp_path, slow))
    rows = read_rows(run / "results.csv")
    pairs = [(r["image_id"], r["method"]) for r in rows]
    assert len(pairs) == len(set(pairs)) == 12  # 6 images x (wplus, bicubic), none twice
    assert before <= set(pairs)


def _sweep(slurm, cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    flags = [o for o in overrides if o.startswith("-")]
    cmd = [sys.executable, str(ROOT / "evaluate.py"), *flags, *FAST]
    cmd += [o for o in overrides if not o.startswith("-")]
    env = {**slurm, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "WANDB_MODE": "disabled",
           "HYDRA_FULL_ERROR": "0"}  # fmt: skip
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _sweep_csv(sweep_dir: Path, root: Path) -> list[dict]:
    import csv
    import io

    text = (sweep_dir / "sweep.csv").read_text().replace(str(root), "ROOT")
    rows = csv.DictReader(io.StringIO(text))
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_a_slurm_launcher_sweep_equals_the_basic_launchers_and_ends_with_a_failed_member(
    slurm, tmp_path
):
    """hydra/launcher=slurm through slurmctld (submitit watches the array with sacct, from
    slurmdbd): the same sweep.csv as the basic launcher, row for row; a member that fails
    still ends the sweep, with its error in the report and exit status 1."""
    basic, cluster = tmp_path / "basic", tmp_path / "cluster"
    sweep = ["method.wplus.steps=3", "data.dataset.n=2", "method.wplus.lr=0.05,0.1"]
    done = _sweep(slurm, basic, "-m", *sweep, f"hydra.sweep.dir={basic / 'sweep'}")
    assert done.returncode == 0, done.stderr[-3000:]
    slurm_keys = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0",
                  "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
                  "hydra.launcher.timeout_min=20"]  # fmt: skip
    done = _sweep(slurm, cluster, "-m", *slurm_keys, *sweep, f"hydra.sweep.dir={cluster / 'sweep'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert _sweep_csv(cluster / "sweep", cluster) == _sweep_csv(basic / "sweep", basic)
    assert len(_sweep_csv(cluster / "sweep", cluster)) == 2 * 2 * 2
    failing = ["method.wplus.steps=3", "data.dataset.n=2", "method.wplus.lr=0.05,-1"]
    done = _sweep(slurm, cluster, "-m", *slurm_keys, *failing,
                  f"hydra.sweep.dir={cluster / 'failing'}")  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    import json

    members = json.loads((cluster / "failing" / "sweep.json").read_text())["members"]
    assert sorted(m["status"] for m in members) == ["done", "failed"]
    assert "learning rate" in (cluster / "failing" / "sweep_report.html").read_text()


def test_srun_with_two_tasks_equals_one_process(slurm, tmp_path):
    """One run over 2 SLURM tasks (srun, Lightning's DDP reading SLURM's variables, gloo on
    the CPU): results.csv equals one process's, row for row."""
    one, two = tmp_path / "one", tmp_path / "two"
    _wait(slurm, _sbatch(slurm, tmp_path, _command(one, "data.dataset.n=4")))
    command = "srun " + _command(
        two, "data.dataset.n=4", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
        "trainer.num_nodes=1",
    )  # fmt: skip
    job = _sbatch(slurm, tmp_path, command, "--ntasks=2", "--ntasks-per-node=2")
    _wait(slurm, job, timeout=300)
    logs = "\n".join(p.read_text() for p in tmp_path.glob("slurm-*.out"))
    assert "Starting with 2 processes" in logs, logs[-3000:]
    assert _rows(one) and len(_rows(one)) == 8, logs[-3000:]
    assert _rows(two) == _rows(one), logs[-3000:]
