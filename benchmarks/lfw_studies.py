"""The studies on real faces: the shipped 32² LFW generator (``generator=lfw32``) restoring
the 10 held-out LFW faces (``data=lfw``), one command per study, one JSON per study.

    python benchmarks/lfw_studies.py demo                # the demo's table (experiment=demo)
    python benchmarks/lfw_studies.py compare             # every method, x4
    python benchmarks/lfw_studies.py robustness          # every corruption at x4 (8² LR)
    python benchmarks/lfw_studies.py scales              # x2, x4, x8, x16 (16² .. 2² LR)
    python benchmarks/lfw_studies.py radius lambda       # the trade-off curves
    python benchmarks/lfw_studies.py robustness --steps 100 --only none,jpeg   # a subset
    python benchmarks/lfw_studies.py compare method.pulse.steps=50             # any override

Each study runs ``evaluate.py`` with the experiment's own config plus ``generator=lfw32
data=lfw`` (what ``python evaluate.py experiment=<name> generator=lfw32 data=lfw`` runs;
the sweeps' members one by one, as ``-m`` would), in
``runs/lfw_studies/<study>-<8 hex of the generator's weights>/<member>``, so rerunning a
study resumes it and weights that changed start afresh. ``--steps N`` shortens the
W+-searching stages (RLS, every RLS+ anchor, plain W+) to N steps (RLS+ keeps its own
steps per scale; the peers keep theirs). It writes ``benchmarks/results/lfw32_<study>.json``
(the overrides of every member, the step counts, the generator's fingerprint, wall time,
machine load, and per member and method the mean ± std of every metric), prints the
tables as markdown (bold: the best per column), and writes the sweep report of the members
(``sweep_report.html``) beside their run directories.

32² faces reach x16 at most (the paper's bicubic needs a larger image at x32), so the
robustness study runs at x4: an 8² LR input, the paper's x32 of 1024² leaves 32².
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import evaluate  # noqa: E402

CORRUPTIONS = ("none", "gaussian_noise", "salt_pepper", "gaussian_blur", "motion_blur", "jpeg")
CORRUPTIONS += ("noise_blur",)  # the robustness experiment's list
SCALES = (2, 4, 8, 16)  # every scale a 32² generator reaches with the paper's bicubic

# study -> (experiment, [(member label, {key: value})]); the study's base settings follow
STUDIES = {
    "demo": ("demo", [("demo", {})]),
    "compare": ("compare", [("x4", {})]),
    "radius": ("radius_sweep", [("x4", {})]),
    "lambda": ("lambda_sweep", [("x4", {})]),
    "robustness": ("robustness", [(c, {"corruption": c}) for c in CORRUPTIONS]),
    "scales": ("scales", [(f"x{s}", {"scale": s}) for s in SCALES]),
}
# every study but the demo (which names its own): the 10 held-out real faces (the
# experiments' own n is for generated targets) at x4 (8² LR inputs), searched as one batch
BASE = {"generator": "lfw32", "data": "lfw", "scale": 4, "data.dataset.n": 10}
BASE["data.batch_size"] = 10
QUIET = {"logger": "none", "metrics.fid": "false", "trainer.enable_progress_bar": "false"}
METRICS = {"psnr": True, "ssim": True, "lpips": False, "lr_psnr": True, "flow_nll": False}


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="evaluate", overrides=overrides)


def _as_list(settings: dict) -> list[str]:
    return [f"{k}={v}" for k, v in settings.items()]


def step_overrides(cfg, steps: int | None) -> dict:
    """``method.<name>.steps`` (RLS, plain W+) and ``method.<name>.anchor.steps`` (every RLS+)
    set to ``steps`` for each method of the composed config; the peers keep their own."""
    if steps is None:
        return {}
    out = {}
    for key, mcfg in cfg.method.items():
        kind = mcfg.get("method")
        if kind in ("rls", "rls_w", "wplus"):
            out[f"method.{key}.steps"] = steps
        elif kind == "rls_plus":
            out[f"method.{key}.anchor.steps"] = steps
    return out


def fingerprint(generator) -> str:
    """8 hex of the SHA-256 of the generator's weights (names, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(generator.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:8]


def summary_table(summary: dict) -> dict:
    """``{method: {metric: {mean, std, n}}}`` from a run's summary.json, plus failures."""
    out = {}
    for method, entry in summary["methods"].items():
        cells = {k: entry[k] for k in METRICS if isinstance(entry.get(k), dict)}
        cells["failed"] = entry.get("failed", 0)
        if "steps" in entry:
            cells["steps"] = entry["steps"]["mean"]
        out[method] = cells
    return out


def markdown(members: dict, metric: str) -> str:
    """Methods as rows, members as columns, mean ± std; bold: the best per column."""
    labels = [m for m, e in members.items() if e.get("results")]
    methods = list(dict.fromkeys(k for m in labels for k in members[m]["results"]))
    higher = METRICS[metric]
    best = {}
    for label in labels:
        values = {
            k: c[metric]["mean"]
            for k, c in members[label]["results"].items()
            if metric in c and math.isfinite(c[metric]["mean"])
        }
        if values:
            best[label] = (max if higher else min)(values, key=values.get)
    head = f"| {metric} | " + " | ".join(labels) + " |"
    lines = [head, "|---" * (len(labels) + 1) + "|"]
    for method in methods:
        cells = []
        for label in labels:
            cell = members[label]["results"].get(method, {}).get(metric)
            if not cell or not math.isfinite(cell["mean"]):
                cells.append("–")
                continue
            big = metric == "flow_nll" and abs(cell["mean"]) >= 1e4
            text = f"{cell['mean']:.1e}" if big else f"{cell['mean']:.2f}"
            if metric != "flow_nll":
                text += f" ± {cell['std']:.2f}"
            cells.append(f"**{text}**" if best.get(label) == method else text)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def one_table(member: dict, measured: set) -> str:
    """One member's methods as rows, its metrics as columns (mean ± std; NLL: mean)."""
    metrics = [m for m in METRICS if m in measured]
    lines = ["| method | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for method, cells in (member.get("results") or {}).items():
        out = []
        for metric in metrics:
            cell = cells.get(metric)
            if not cell or not math.isfinite(cell["mean"]):
                out.append("–")
            elif metric == "flow_nll":
                out.append(f"{cell['mean']:.1f}")
            else:
                out.append(f"{cell['mean']:.2f} ± {cell['std']:.2f}")
        lines.append(f"| {method} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def run_study(study: str, args) -> dict:
    experiment, members = STUDIES[study]
    if args.only:
        wanted = set(args.only.split(","))
        members = [m for m in members if m[0] in wanted]
        if not members:
            raise SystemExit(f"--only {args.only}: none of {[m[0] for m in STUDIES[study][1]]}")
    base = {"experiment": experiment, **({} if study == "demo" else BASE)}
    extra = dict(o.split("=", 1) for o in args.overrides if not o.startswith("~"))
    deletions = [o for o in args.overrides if o.startswith("~")]  # e.g. ~data.dataset.n
    if args.n is not None:
        extra["data.dataset.n"] = args.n
        extra["data.batch_size"] = args.n
    first = _compose([*_as_list({**base, **members[0][1], **extra}), *deletions])
    G = instantiate(first.generator)
    weights = fingerprint(G)
    steps = step_overrides(first, args.steps)
    out_root = Path(args.runs) / f"{study}-{weights}"
    record = {
        "what": f"{study} on the held-out real faces: python evaluate.py experiment={experiment}"
        + ("" if study == "demo" else " generator=lfw32 data=lfw scale=4")
        + (f", W+ search stages shortened to {args.steps} steps" if args.steps else ""),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        "commit": subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip(),
        "generator": {
            "config": OmegaConf.to_container(first.generator, resolve=True),
            "weights_sha256_8": weights,
            "resolution": G.img_resolution,
            "w_dim": G.w_dim,
        },
        "steps": args.steps,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
        },
        "members": {},
    }
    del G
    for label, settings in members:
        overrides = [*_as_list({**base, **settings, **extra, **steps}), *deletions]
        run_dir = out_root / label
        entry = {"overrides": overrides, "run_dir": str(run_dir), "load_before": os.getloadavg()}
        print(f"[lfw_studies] {study}/{label}: python evaluate.py {' '.join(overrides)}")
        start = time.monotonic()
        try:
            evaluate.evaluate(_compose([*overrides, *_as_list(QUIET), f"run_dir={run_dir}"]))
            summary = json.loads((run_dir / "summary.json").read_text())
            entry.update(status="done", results=summary_table(summary))
        except Exception as err:  # one member failing does not lose the others
            traceback.print_exc()
            entry.update(status="failed", error=f"{type(err).__name__}: {err}")
        entry["seconds"] = round(time.monotonic() - start, 1)
        entry["load_after"] = os.getloadavg()
        record["members"][label] = entry
    _write_sweep_report(out_root, [Path(e["run_dir"]) for e in record["members"].values()])
    measured = {
        metric
        for e in record["members"].values()
        for cells in (e.get("results") or {}).values()
        for metric in cells
    }
    record["tables"] = {m: markdown(record["members"], m) for m in METRICS if m in measured}
    if len(record["members"]) == 1:  # one member: one table, metrics as columns
        record["tables"] = {"all": one_table(next(iter(record["members"].values())), measured)}
    return record


def _write_sweep_report(out_root: Path, run_dirs: list[Path]) -> None:
    from rls.reports.sweep import load_sweep
    from rls.reports.sweep_html import write_sweep

    done = [d for d in run_dirs if (d / "results.csv").exists()]
    if done:
        paths = write_sweep(load_sweep(done), out_root, title=f"Real faces: {out_root.name}")
        print(f"[lfw_studies] sweep report: {paths['html']}")


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "items",
        nargs="+",
        metavar="STUDY|OVERRIDE",
        help=f"studies ({', '.join(STUDIES)}), then Hydra overrides (key=value, ~key) for all",
    )
    parser.add_argument("--steps", type=int, help="W+ search stages shortened to this many")
    parser.add_argument("--n", type=int, help="the first n held-out faces only (default: all)")
    parser.add_argument("--only", help="comma-separated member labels (e.g. none,jpeg or x4)")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "lfw_studies"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--tag", default="", help="suffix of the JSON's name (e.g. _subset)")
    args = parser.parse_intermixed_args(argv)
    args.overrides = [i for i in args.items if "=" in i or i.startswith("~")]
    args.studies = [i for i in args.items if i not in args.overrides]
    unknown = [s for s in args.studies if s not in STUDIES]
    if unknown or not args.studies:
        parser.error(f"unknown studies {unknown}; choose from {', '.join(STUDIES)}")
    written = []
    for study in args.studies:
        record = run_study(study, args)
        path = Path(args.out) / f"lfw32_{study}{args.tag}.json"
        path.write_text(json.dumps(record, indent=2, default=str) + "\n")
        print(f"[lfw_studies] {record['what']}")
        for table in record["tables"].values():
            print(table, end="\n\n")
        print(f"[lfw_studies] written {path}")
        written.append(path)
    return written


if __name__ == "__main__":
    main()
