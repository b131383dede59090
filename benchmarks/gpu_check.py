"""Everything that needs a GPU, in one command (``scripts/gpu_check.sh``), under 8 minutes.

Phases, each a subprocess with its own time limit, each writing JSON into ``--out``
(default benchmarks/results/):

1. ``gpu_tests.json``: the CUDA tests (``pytest -m gpu``: generator CUDA vs CPU, one RLS and
   one RLS+ step at config-f 1024² on CUDA vs CPU).
2. ``gpu_search_{fp32,tf32}.json``: ``benchmarks/search.py`` at config-f 1024² on
   CUDA, batch 1, 4, 8: seconds per RLS / RLS+ step, peak ``max_memory_allocated``, seconds
   per image of the authors' recipe; TF32 on in the second.
2b. ``gpu_speed.json``: ``benchmarks/speed.py`` at config-f 1024², batch 1: RLS and RLS+
   steps eager, compiled (``torch.compile``, with its compile time), bf16-mixed, compiled +
   bf16 and channels-last, each with its largest image difference to eager.
3. ``gpu_evaluate.json``: ``evaluate.py`` on 20 generated 1024² photos at x16 with random
   config-f weights (RLS + RLS+): wall time, images/s and the summary.

``gpu_check.json`` lists every phase with its return code and seconds. ``--dry-run`` runs
the same phases on the CPU at tiny sizes (config-f widths at 16²/32², 2 images, 1 step):
the test suite runs it so that this script cannot rot while no GPU is at hand.

    bash scripts/gpu_check.sh              # on a machine with a CUDA device
    bash scripts/gpu_check.sh --dry-run --out /tmp/gpu_dry
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_phase(name: str, cmd: list[str], timeout: float | None, log: Path) -> dict:
    """Run ``cmd`` from the repository root; its output goes to ``log``. Never raises.
    ``timeout`` (seconds) keeps a GPU run under its budget; the dry run has none (a busy
    shared CPU can be many times slower than usual)."""
    t0 = time.perf_counter()
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    print(f"[gpu_check] {name}: {' '.join(cmd)}", flush=True)
    with open(log, "w") as out:
        try:
            rc = subprocess.run(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    seconds = time.perf_counter() - t0
    print(f"[gpu_check] {name}: rc {rc} in {seconds:.0f} s (log {log})", flush=True)
    return {"phase": name, "returncode": rc, "seconds": seconds, "log": str(log)}


def junit_summary(path: Path) -> dict:
    """Counts and failures of a pytest junit XML file."""
    if not path.exists():
        return {"error": f"{path} missing"}
    cases = ET.parse(path).getroot().iter("testcase")
    outcome = {}
    for case in cases:
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = [child.tag for child in case]
        outcome[name] = next((k for k in ("failure", "error", "skipped") if k in kinds), "passed")
    counts = {k: sum(v == k for v in outcome.values()) for k in set(outcome.values())}
    return {"counts": counts, "tests": outcome}


def make_photos(root: Path, n: int, size: int) -> None:
    """``n`` smooth ``size``² JPEGs (the test suite's recipe: gradients and a dark blob)."""
    import numpy as np
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        rng = np.random.default_rng(i)
        img = np.stack([np.sin(6 * xx * rng.uniform(0.5, 2) + c) * 0.3 + 0.5 for c in range(3)], -1)
        cx, cy = rng.uniform(0.3, 0.7, 2)
        img *= (1 - 0.5 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.05))[..., None]
        Image.fromarray((img * 255).astype(np.uint8)).save(root / f"face{i:03d}.jpg", quality=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (tests)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--images", type=int, default=20, help="photos of the evaluate run")
    parser.add_argument("--rls-steps", type=int, default=100, help="RLS steps of that run")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "gpu_logs"
    logs.mkdir(exist_ok=True)
    py = sys.executable
    dry = args.dry_run
    device = "cpu" if dry else "cuda"

    def limit(seconds: float) -> float | None:
        return None if dry else seconds

    phases = []

    # 1. CUDA tests (skipped, not failed, without a device: the dry run checks the wiring)
    xml = logs / "gpu_tests.xml"
    test_cmd = [py, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    test_cmd += ["tests/test_gpu.py", "tests/test_generator.py", f"--junitxml={xml}"]
    phases.append(run_phase("tests", test_cmd, limit(150), logs / "tests.log"))
    summary = {**junit_summary(xml), "returncode": phases[-1]["returncode"], "dry_run": dry}
    (out / "gpu_tests.json").write_text(json.dumps(summary, indent=2))

    # 2. the config-f search benchmark: fp32, TF32, compiled
    bench = [py, "benchmarks/search.py", "--generator", "ffhq1024", "--device", device]
    if dry:
        bench += ["--img-resolution", "16", "--batches", "1", "2", "--steps", "2"]
    else:
        bench += ["--batches", "1", "4", "8", "--steps", "5"]
    parts = [] if dry else ["--breakdown", "--reps", "3"]
    variants = {"fp32": parts, "tf32": ["--tf32", *parts]}
    for variant, extra in variants.items():
        if dry and variant != "fp32":
            continue  # the same script with a flag; inductor needs minutes of C++ on a CPU
        target = out / f"gpu_search_{variant}.json"
        cmd = [*bench, *extra, "--out", str(target)]
        log = logs / f"search_{variant}.log"
        phases.append(run_phase(f"search_{variant}", cmd, limit(150), log))

    # 2b. the speed settings (rls.speed) on the RLS and RLS+ steps; the dry run skips
    # compiling (minutes of C++ on a CPU) but runs the same script on bf16
    speed = [py, "benchmarks/speed.py", "--device", device, "--out", str(out / "gpu_speed.json")]
    if dry:
        speed += ["--img-resolution", "16", "--steps", "2", "--variants", "eager", "bf16"]
        speed += ["--methods", "rls"]
    else:
        speed += ["--img-resolution", "1024", "--steps", "5", "--variants", "eager", "compiled"]
        speed += ["bf16", "compiled_bf16", "channels_last"]
    phases.append(run_phase("speed", speed, limit(300), logs / "speed.log"))

    # 3. 20 photos at x16 through evaluate.py on random config-f weights
    photos = out / "gpu_photos"
    make_photos(photos, 2 if dry else args.images, 64 if dry else 1024)
    run_dir = out / "gpu_evaluate_run"
    steps = 1 if dry else args.rls_steps
    cmd = [py, "evaluate.py", "generator=ffhq1024", "generator.random_init=true"]
    cmd += ["method=[rls,rls_plus]", f"method.rls.steps={steps}"]
    cmd += [f"method.rls_plus.anchor.steps={steps}", "data=folder", f"data.dataset.root={photos}"]
    cmd += ["scale=16", "logger=none", "trainer.enable_progress_bar=false", f"run_dir={run_dir}"]
    cmd += ["metrics.fid=false", f"flow_training.cache_dir={out / 'gpu_flows'}"]
    cmd += [f"data.num_workers={0 if dry else 2}"]
    cmd += [f"hydra.run.dir={logs / 'hydra'}"]
    if dry:
        cmd += ["+generator.img_resolution=32", "method.rls_plus.steps=1", "data.batch_size=2"]
        # RLS's w̄ is the mean of 1e6 mapped z (the authors'): minutes of a 512-d mapping on a CPU
        cmd += ["method.rls.start_samples=4096", "method.rls_plus.anchor.start_samples=4096"]
        cmd += [
            "flow_training.max_steps=2",
            "flow_training.batch_size=64",
            "flow_training.epoch_size=256",
        ]
        cmd += ["flow_training.val_size=256", "trainer.accelerator=cpu", "metrics.lpips=[]"]
    else:
        cmd += ["data.batch_size=8", "flow_training.max_steps=500", "trainer.accelerator=gpu"]
    phase = run_phase("evaluate", cmd, limit(300), logs / "evaluate.log")
    phases.append(phase)
    result = {"phase": phase, "images": 2 if dry else args.images, "scale": 16, "dry_run": dry}
    result["rls_steps"] = steps
    result["images_per_s"] = result["images"] / phase["seconds"]
    if (run_dir / "summary.json").exists():
        result["summary"] = json.loads((run_dir / "summary.json").read_text())
    (out / "gpu_evaluate.json").write_text(json.dumps(result, indent=2))

    total = sum(p["seconds"] for p in phases)
    ok = all(p["returncode"] == 0 for p in phases)
    report = {"dry_run": dry, "ok": ok, "seconds": total, "phases": phases}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(f"[gpu_check] {'all phases ok' if ok else 'FAILED phases'} in {total:.0f} s -> {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
