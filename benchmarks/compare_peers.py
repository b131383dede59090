"""Every method on the same inputs, through the library directly (issue 6, method.md §5).

    .venv/bin/python benchmarks/compare_peers.py                     # x8 and x16, 8 images
    .venv/bin/python benchmarks/compare_peers.py --scales 16 --step-scale 0.2

The tiny seeded generator at 64², 8 generator-sampled targets (``rls.data``'s
GeneratorSampleDataset, the ``data=generated`` set of evaluate.py), no corruption, the shared
degradation D (PULSE bicubic) inside every loss. Methods: RLS, RLS+ (its radius sweep
r = 0.05 .. 0.8 from one shared RLS anchor, as experiment=compare), plain W+ search, PULSE
(this project's and as the authors ran it), BRGM, ILO, robust, each with its config's
defaults (the authors'). The flow prior is evaluate.py's default: the authors' flow
(flow=maf_paper) trained by the default recipe (flow_training=default), from the same flow
cache (.cache/flows, trained there first when missing), so that RLS has its prior and every
solution gets a flow NLL on one realism scale.

Per method: LR-PSNR (PSNR of D(x̂) against y: fidelity to the input), HR-PSNR (against the
true image), LPIPS-Alex if its weights are on disk, the flow NLL of the solution's W+ code
(mean over rows of −log p_F, lower = more typical), seconds per image, and the method's notes
(e.g. a perceptual term switched off because its weights are missing offline). Writes JSON and
the markdown table of docs/comparison.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("RLS_OFFLINE", "1")

import torch  # noqa: E402

from rls.data import GeneratorSampleDataset  # noqa: E402
from rls.degradations import build_degradation  # noqa: E402
from rls.flows import WFlow, sample_w  # noqa: E402
from rls.generators import load_generator  # noqa: E402
from rls.metrics import build_lpips, per_image_metrics  # noqa: E402
from rls.search import Method, build_method, search  # noqa: E402
from rls.search.losses import flow_nll  # noqa: E402
from rls.search.peer_losses import diagonal_fit  # noqa: E402
from rls.search.rls import rls_stage  # noqa: E402
from rls.search.rls_plus import rls_plus_stage  # noqa: E402
from rls.seeding import seeds_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RADII = (0.05, 0.1, 0.2, 0.4, 0.8)  # experiment=compare's: where the l1 ball binds here


def default_flow(G) -> WFlow:
    """evaluate.py's default prior for G: flow=maf_paper trained by flow_training=default,
    from (or into) the shared flow cache."""
    from omegaconf import OmegaConf

    from rls.flows.recipe import FlowRecipe
    from rls.lit import cached_flow

    settings = OmegaConf.to_container(OmegaConf.load(ROOT / "configs/flow_training/default.yaml"))
    flow = OmegaConf.to_container(OmegaConf.load(ROOT / "configs/flow/maf_paper.yaml"))
    recipe = FlowRecipe.from_settings(flow, settings)
    found = cached_flow(G, recipe, ROOT / settings["cache_dir"], generator_name="tiny")
    print(f"flow prior: {found.path}", flush=True)
    return found.flow


def fit_tiny_flow(G, steps: int, cache: Path, seed: int = 0, **flow_kwargs) -> WFlow:
    """A 5-transform MAF (hidden 2·w_dim; ``flow_kwargs`` reach WFlow) fitted for ``steps``
    Adam steps on batches of 512 streamed mapping samples, or the one cached at ``cache``.
    A short benchmark recipe; the project's trainer is ``rls.lit.fit_flow``."""
    if cache.exists():
        return WFlow.load(cache)
    hidden = (2 * G.w_dim, 2 * G.w_dim)
    flow = WFlow(G.w_dim, family="maf", transforms=5, hidden=hidden, **flow_kwargs)
    flow.fit_standardisation(sample_w(G, 65536, seed=seed + 1))
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3, weight_decay=1e-6)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    stream = torch.Generator().manual_seed(seed)
    flow.train()
    for _ in range(steps):
        with torch.no_grad():
            w = G.mapping(torch.randn(512, G.z_dim, generator=stream), None)[:, 0]
        loss = -flow.log_prob(w).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    flow.eval()
    cache.parent.mkdir(parents=True, exist_ok=True)
    flow.save(cache)
    return flow


def sweep_name(r: float) -> str:
    """``rls_plus_r0_25`` ...: the names experiment=radius_sweep gives its methods."""
    return f"rls_plus_r{r:g}".replace(".", "_")


def scaled(n: int, s: float) -> int:
    return max(1, round(n * s))


def rls_sweep_method(s: float) -> Method:
    """RLS, then RLS+ from the same anchor at every radius (stage outputs land in extras)."""

    def stages(ctx):
        out = [rls_stage(name="rls", steps=scaled(500, s))]
        for r in RADII:
            stage = rls_plus_stage(ctx, "rls", radius=r)
            out.append(dataclasses.replace(stage, name=sweep_name(r)))
        return out

    return Method(name="rls+sweep", stages=stages)


def peer_methods(s: float) -> dict[str, Method]:
    return {
        "wplus": build_method("wplus", steps=scaled(500, s)),
        "pulse": build_method("pulse", steps=scaled(100, s)),
        "pulse_rls_paper": build_method("pulse_rls_paper", steps=scaled(100, s)),
        "brgm": build_method("brgm", steps=scaled(501, s)),
        "ilo": build_method("ilo", steps=[scaled(n, s) for n in (50, 50, 25, 25)]),
        "robust": build_method("robust", steps=[scaled(150, s)] * 3),
    }


class StageClock:
    """Wall time per stage, from the per-step callback (first call of a stage to the next)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._stage, self._t = None, None

    def __call__(self, step, stage, losses):
        now = time.perf_counter()
        if self._stage is not None:
            self.seconds[self._stage] = self.seconds.get(self._stage, 0.0) + now - self._t
        self._stage, self._t = stage, now

    def close(self):
        self("end", None, None)


def summarise(values: torch.Tensor) -> dict:
    values = values.double().cpu()
    if torch.isnan(values).all():
        return {"mean": None, "std": None, "median": None, "values": []}
    return {
        "mean": values.nanmean().item(),
        "std": values.std().item() if values.numel() > 1 else 0.0,
        "median": values.nanmedian().item(),
        "values": [round(v, 4) for v in values.tolist()],
    }


def run_scale(G, prior, scale: int, n: int, s: float, lpips_alex) -> dict:
    D = build_degradation(scale, corruption="none")
    data = GeneratorSampleDataset(G, n=n, seed=0)
    items = [data[i] for i in range(n)]
    ids = [it["image_id"] for it in items]
    hr = torch.stack([it["hr"] for it in items]).float()
    y = D.observe(hr, seeds_for(ids, "observe"))
    seeds = seeds_for(ids, "search")
    nets = {"alex": lpips_alex} if lpips_alex is not None else None

    def measure(name, images, latents, seconds, notes, status):
        m = per_image_metrics(images, hr, y, D, lpips_nets=nets)
        row = {
            "lr_psnr": summarise(m["lr_psnr"]),
            "hr_psnr": summarise(m["psnr"]),
            "lpips_alex": summarise(m["lpips_alex"]) if "lpips_alex" in m else None,
            "flow_nll": summarise(flow_nll(prior, latents)),
            "seconds_per_image": seconds / n,
            "notes": notes,
            "failed": sum(st == "failed" for st in status),
        }
        shown = {k: v for k, v in row.items() if k != "flow_nll"}
        shown["flow_nll_median"] = row["flow_nll"]["median"]
        line = ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items())
        print(f"  x{scale} {name:>15}: {line}", flush=True)
        return row

    # reference: the flow NLL of the targets' own (true) W+ codes
    true_w = torch.stack([it["w"] for it in items]).float()
    rows = {"target (true w)": {"flow_nll": summarise(flow_nll(prior, true_w))}}
    clock = StageClock()
    out = search(rls_sweep_method(s), G, y, D, seeds, prior=prior, callback=clock)
    clock.close()
    t_rls = clock.seconds["rls"]
    rows["rls"] = measure(
        "rls", out.extras["rls_images"], out.extras["rls_latents"], t_rls, "", out.status
    )
    for r in RADII:
        name = sweep_name(r)
        stage_out = (
            (out.images, out.latents)
            if r == RADII[-1]
            else (out.extras[f"{name}_images"], out.extras[f"{name}_latents"])
        )
        notes = "RLS+ (authors' code: latent l1 ball), radius r = " + f"{r:g}"
        rows[name] = measure(name, *stage_out, t_rls + clock.seconds[name], notes, out.status)
    for name, method in peer_methods(s).items():
        out = search(method, G, y, D, seeds, prior=prior)
        rows[name] = measure(name, out.images, out.latents, out.seconds, out.notes, out.status)
    return rows


def _fmt(v) -> str:
    if isinstance(v, dict):
        return "n/a" if v["mean"] is None else f"{v['mean']:.2f} ± {v['std']:.2f}"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def markdown(results: dict, meta: dict) -> str:
    lines = []
    for scale, rows in results.items():
        lines += [
            f"**x{scale}** (LR {meta['resolution'] // int(scale)}², {meta['n']} images, "
            f"step counts x{meta['step_scale']:g} of the authors')",
            "",
            "| method | LR-PSNR ↑ | HR-PSNR ↑ | LPIPS-Alex ↓ | flow NLL (median) ↓ | s / image "
            "| notes |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in rows.items():
            if "lr_psnr" not in r:  # the reference row: only the realism scale
                nll = r["flow_nll"]
                lines.append(f"| *{name}* | | | | *{nll['median']:.1f}* | | reference |")
                continue
            lp = "n/a (weights offline)" if r["lpips_alex"] is None else _fmt(r["lpips_alex"])
            lines.append(
                f"| {name} | {_fmt(r['lr_psnr'])} | {_fmt(r['hr_psnr'])} | {lp} | "
                f"{r['flow_nll']['median']:.1f} | {r['seconds_per_image']:.2f} "
                f"| {r['notes'] or ''} |"
            )
        lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--step-scale", type=float, default=1.0, help="x the authors' step counts")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "compare_peers.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    G = load_generator("tiny", img_resolution=args.resolution).requires_grad_(False)
    t0 = time.perf_counter()
    prior = default_flow(G)
    print(f"flow prior ready ({time.perf_counter() - t0:.0f} s)", flush=True)
    lpips_alex = build_lpips("alex", allow_download=False)
    diagonal_fit(G)  # PULSE/ILO's one-off fit of W (1e6 samples), kept out of their timings
    results = {}
    for scale in args.scales:
        results[str(scale)] = run_scale(G, prior, scale, args.n, args.step_scale, lpips_alex)
    meta = dict(
        resolution=args.resolution,
        n=args.n,
        step_scale=args.step_scale,
        threads=args.threads,
        torch=torch.__version__,
        device="cpu",
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    table = markdown(results, meta)
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
