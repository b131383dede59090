"""Running on a cluster: sweeps through Hydra's submitit launcher (``hydra/launcher=slurm``,
tested with its local executor: real separate processes)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAST = [
    "method=[wplus]",
    "method.wplus.steps=2",
    "method.wplus.start_samples=1000",
    "data.dataset.n=2",
    "data.batch_size=1",
    "prior.train_if_missing=false",
    "metrics.fid=false",
    "metrics.lpips=[]",
    "logger=none",
    "trainer.enable_progress_bar=false",
]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "HYDRA_FULL_ERROR": "0"}


def _evaluate(cwd: Path, *overrides: str, base=FAST) -> subprocess.CompletedProcess:
    """``python evaluate.py <overrides>`` from ``cwd`` (its runs/ land there)."""
    cwd.mkdir(parents=True, exist_ok=True)
    flags = [o for o in overrides if o.startswith("-")]  # before the overrides (argparse)
    cmd = [sys.executable, str(ROOT / "evaluate.py"), *flags, *base]
    cmd += [o for o in overrides if not o.startswith("-")]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900)


def _sweep_rows(sweep_dir: Path, root: Path) -> list[dict]:
    """sweep.csv's rows without what differs between two equal sweeps: the wall time of a
    search (``seconds``) and the directory the runs were made in (replaced by ROOT)."""
    text = (sweep_dir / "sweep.csv").read_text().replace(str(root), "ROOT")
    return [
        {k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(io.StringIO(text))
    ]


@pytest.mark.slow
def test_local_executor_sweep_equals_basic_launcher_and_resumes_a_member(tmp_path):
    basic, local = tmp_path / "basic", tmp_path / "local"
    sweep = "method.wplus.lr=0.05,0.1"
    done = _evaluate(basic, "-m", sweep, f"hydra.sweep.dir={basic / 'sweep'}")
    assert done.returncode == 0, done.stderr[-3000:]

    # 1. submitit's local executor, each member a process of its own: the first member is
    # cut after its first image (as a job killed by its time limit), the second one fails
    first = _evaluate(
        local,
        "-m",
        "hydra/launcher=local",
        "method.wplus.lr=0.05,-1",
        "+trainer.limit_test_batches=1",  # not a result key: the same run directory
        f"hydra.sweep.dir={local / 'first'}",
    )
    assert first.returncode == 1, first.stderr[-3000:]  # the failed member, after the others
    report = json.loads((local / "first" / "sweep.json").read_text())
    cut, failed = report["members"]
    assert cut["status"] == "done" and cut["rows"] == 2  # 1 image x (wplus + bicubic)
    assert failed["status"] == "failed" and "learning rate" in failed["error"]
    assert "learning rate" in (local / "first" / "sweep_report.html").read_text()
    # two submitit jobs, each its own process (the local executor's job id is its pid)
    jobs = {j.parent.name for j in (local / "first" / ".submitit").glob("*/*_0_result.pkl")}
    assert len(jobs) == 2 and all(j.isdigit() for j in jobs)

    # 2. the sweep again, the slurm workflow without SLURM: the cut member resumes
    again = _evaluate(
        local, "-m", "hydra/launcher=local", sweep, f"hydra.sweep.dir={local / 'sweep'}"
    )
    assert again.returncode == 0, again.stderr[-3000:]
    logs = [p.read_text() for p in (local / "sweep" / ".submitit").glob("*/*_0_log.out")]
    assert len(logs) == 2  # the members' output: one resumed its run, the other started
    assert sorted("resuming: 2 (image, method) results already in" in t for t in logs) == [0, 1]
    assert sum("resuming" in t for t in logs) == 1

    # the same rows and the same page as the basic launcher's (members run one by one)
    assert _sweep_rows(local / "sweep", local) == _sweep_rows(basic / "sweep", basic)
    assert len(_sweep_rows(local / "sweep", local)) == 2 * 2 * 2
    pages = [
        (d / "sweep" / "sweep_report.html").read_text().replace(str(d), "ROOT")
        for d in (basic, local)
    ]
    assert pages[0] == pages[1]


def test_members_rebuild_the_sweep_report_one_at_a_time(tmp_path):
    """Members of a submitit sweep end in processes of their own, maybe at once: a member
    waits for the lock of the one rebuilding the report (else the last writer could miss
    a member that ended meanwhile)."""
    from filelock import FileLock

    from callbacks.hydra_sweep import LOCK_FILE, SweepReport

    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    params:\n      corruption: none,jpeg\n"
        "  overrides:\n    task: ['method=[rls]']\n"
    )
    writer = threading.Thread(target=SweepReport._write, args=(sweep_dir,))
    with FileLock(sweep_dir / LOCK_FILE):  # another member is rebuilding it
        writer.start()
        time.sleep(0.5)
        assert not (sweep_dir / "sweep_report.html").exists()
    writer.join(timeout=60)
    assert (sweep_dir / "sweep_report.html").exists()


def test_the_cluster_launcher_configs_compose(tmp_path):
    """``hydra/launcher=slurm`` and ``local``: submitit launchers with the documented keys."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        for name, target in [("slurm", "SlurmLauncher"), ("local", "LocalLauncher")]:
            cfg = compose("evaluate", [f"hydra/launcher={name}"], return_hydra_config=True)
            launcher = cfg.hydra.launcher
            assert launcher._target_.endswith(f"submitit_launcher.{target}")
            assert launcher.submitit_folder.endswith("/.submitit/%j")  # in the sweep dir
        cfg = compose("evaluate", ["hydra/launcher=slurm"], return_hydra_config=True)
        for key in ("partition", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min"):
            assert key in cfg.hydra.launcher
        assert cfg.hydra.launcher.array_parallelism == 32
        assert cfg.hydra.launcher.max_num_timeout == 3  # cut members are requeued and resume


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(script: str, cwd: Path, *overrides: str) -> None:
    """``script`` on 2 "nodes" x 1 process over localhost: two torchrun launches (node
    rank 0 and 1, static rendezvous on 127.0.0.1), as ``srun`` or a job script would start
    them on two machines; the same command on both, as there."""
    port = _free_port()
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1"]
        cmd += [f"--node-rank={node}", "--master-addr=127.0.0.1", f"--master-port={port}"]
        cmd += [str(ROOT / script), *overrides]
        cmd += ["trainer=ddp", "trainer.num_nodes=2", "trainer.devices=1"]
        cmd += ["trainer.accelerator=cpu"]
        log = open(cwd / f"node{node}.log", "w")
        procs.append((subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=log, stderr=log), log))
    for proc, log in procs:
        rc = proc.wait(timeout=900)
        log.close()
        assert rc == 0, Path(log.name).read_text()[-3000:]


@pytest.mark.slow
def test_evaluate_on_two_localhost_nodes_equals_one_process(tmp_path):
    from rls.reports.run_files import read_rows

    # 3 images over 2 ranks: one rank gets 2 (no image padded in twice)
    common = [o for o in FAST if not o.startswith("data.dataset.n=")] + ["data.dataset.n=3"]
    common += ["threads=1", f"hydra.run.dir={tmp_path / 'hydra'}"]
    _two_nodes("evaluate.py", tmp_path, *common, f"run_dir={tmp_path / 'nodes'}")
    one = _evaluate(
        tmp_path, *common, "trainer.accelerator=cpu", f"run_dir={tmp_path / 'one'}", base=[]
    )
    assert one.returncode == 0, one.stderr[-3000:]
    log = (tmp_path / "node0.log").read_text()
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log  # one world of 2 processes
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (tmp_path / "node1.log").read_text()

    def rows(run):  # all but the wall time of each search
        got = read_rows(tmp_path / run / "results.csv")
        return [{k: v for k, v in r.items() if k != "seconds"} for r in got]

    assert len(rows("nodes")) == 3 * 2  # every (image, method) once, from one rank or the other
    assert rows("nodes") == rows("one")
    summaries = [json.loads((tmp_path / r / "summary.json").read_text()) for r in ("nodes", "one")]
    for s in summaries:
        for entry in s["methods"].values():
            entry.pop("seconds", None)
    assert summaries[0] == summaries[1]


@pytest.mark.slow
def test_train_flow_on_two_localhost_nodes_equals_two_processes_on_one(tmp_path):
    """The flow trained by 2 nodes x 1 process is the one of 1 node x 2 processes (the same
    world of 2 ranks, each its share of every epoch); one process alone trains another
    flow (twice the steps' worth of rows per step), so that is the comparison."""
    from safetensors.torch import load_file

    common = ["logger=none", "threads=1", "flow.transforms=2", "flow.hidden=[32,32]"]
    common += ["flow_training.epoch_size=1024", "flow_training.val_size=512"]
    common += ["flow_training.batch_size=128", "flow_training.max_steps=8"]
    common += ["trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'hydra'}"]
    _two_nodes("train_flow.py", tmp_path, *common, f"output_dir={tmp_path / 'nodes'}")
    cmd = [sys.executable, str(ROOT / "train_flow.py"), *common, f"output_dir={tmp_path / 'one'}"]
    cmd += ["trainer=ddp", "trainer.accelerator=cpu"]  # Lightning starts the 2 processes
    done = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    nodes, one = (load_file(tmp_path / d / "flow.safetensors") for d in ("nodes", "one"))
    assert nodes.keys() == one.keys() and len(nodes) > 0
    for key in nodes:
        assert torch_equal(nodes[key], one[key]), key
    metrics = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("nodes", "one")]
    assert metrics[0]["steps"] == metrics[1]["steps"] == 8
    assert metrics[0]["val_nll"] == metrics[1]["val_nll"]


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))
