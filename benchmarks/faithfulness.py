"""The measured effect of every authors'/ours switch (docs/faithfulness.md), on the tiny generator.

    .venv/bin/python benchmarks/faithfulness.py                 # every part, both target sets
    .venv/bin/python benchmarks/faithfulness.py --parts rls_plus --targets generated

8 targets at ×8, no corruption, the authors' step counts (RLS 500, RLS+ 80 at ×8, PULSE 100).
Two target sets: ``generated`` (as benchmarks/compare_peers.py: the tiny generator at 64² as
it is, noise maps included, targets from rls.data's GeneratorSampleDataset) and ``recovery``
(as tests/test_search_recovery.py: the tiny generator at 32² with its noise strengths set to
0, so the targets lie in the range of a latent search). Flow priors for the tiny W are
trained here and cached under .cache/flows: the authors' MAF (``maf_paper``) and ours
(``maf``: LeakyReLU(5) and whitening input maps).

Parts: ``rls`` (start, best-iterate rule), ``rls_plus`` (its switches, every variant from the
same RLS anchor), ``pulse`` (adamian98/pulse vs the RLS authors' pulse_sr.py), ``maf_start``
(RLS under flow=maf from w̄ and from f⁻¹(0), the flow's image of the Gaussian origin). Per variant:
HR-PSNR, LR-PSNR (PSNR of D(x̂) against y) and the flow NLL (authors' flow) of the code, mean
over the 8 images. Writes benchmarks/results/faithfulness.json.
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
from compare_peers import fit_tiny_flow  # noqa: E402  (benchmarks/ is the script's folder)

from rls.data import GeneratorSampleDataset  # noqa: E402
from rls.degradations import build_degradation  # noqa: E402
from rls.flows import WFlow  # noqa: E402
from rls.generators import load_generator  # noqa: E402
from rls.search import Method, build_method, search  # noqa: E402
from rls.search.losses import flow_nll  # noqa: E402
from rls.search.rls import _mapping_fingerprint, rls_stage  # noqa: E402
from rls.search.rls_plus import rls_plus_stage  # noqa: E402
from rls.seeding import seeds_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# RLS+ variants, each from the same RLS anchor; the first is the authors' (the default)
RLS_PLUS_VARIANTS = {
    "authors (default)": {},
    "noise_init=anchor": dict(noise_init="anchor"),
    "renormalize=tuned": dict(renormalize="tuned"),
    "output=after_last_update": dict(output="after_last_update"),
    "all three ours": dict(noise_init="anchor", renormalize="tuned", output="after_last_update"),
    "num_noise=3": dict(num_noise=3),
    "num_noise=3, renormalize=tuned": dict(num_noise=3, renormalize="tuned"),
}
RLS_VARIANTS = {
    "authors (default)": {},
    "start=w_avg": dict(start="w_avg"),
    "score_final=true": dict(score_final=True),
}
MAF_STARTS = ("sample_mean", "w_avg", "flow_origin")


def train_flow(G, maf_inputs: bool, steps: int, seed: int = 0) -> WFlow:
    """A MAF for the tiny W, 5 transforms of hidden 2·w_dim (the authors' ratio); with
    ``maf_inputs`` our LeakyReLU(5) + whitening input maps (flow=maf), else the authors'
    (flow=maf_paper). Maximum likelihood on streamed mapping samples; cached."""
    kind = "maf" if maf_inputs else "maf_paper"
    mapping = _mapping_fingerprint(G)[:12]  # the 32² and 64² tiny generators map differently
    cache = ROOT / ".cache" / "flows" / f"faithfulness_{kind}_{mapping}_{steps}.safetensors"
    return fit_tiny_flow(G, steps, cache, seed, leaky_input=maf_inputs, whiten=maf_inputs)


def targets(kind: str, n: int, scale: int):
    """(G, D, hr, y, seeds) of one target set (see the module docstring)."""
    # recovery: the test's tiny generator at its default 32²; generated: 64², as the demo
    G = load_generator("tiny", **({} if kind == "recovery" else {"img_resolution": 64}))
    G.requires_grad_(False)
    D = build_degradation(scale, corruption="none")
    if kind == "recovery":
        with torch.no_grad():
            for name, p in G.named_parameters():
                if name.endswith("noise_strength"):
                    p.zero_()
            z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(1))
            hr = ((G.synthesis(G.mapping(z, None)) + 1) / 2).clamp(0, 1)
        return G, D, hr, D(hr), torch.arange(n)
    data = GeneratorSampleDataset(G, n=n, seed=0)
    items = [data[i] for i in range(n)]
    ids = [it["image_id"] for it in items]
    hr = torch.stack([it["hr"] for it in items]).float()
    return G, D, hr, D.observe(hr, seeds_for(ids, "observe")), seeds_for(ids, "search")


def psnr(a, b):
    return -10 * torch.log10((a - b).pow(2).flatten(1).mean(1))


def measure(images, latents, hr, y, D, prior) -> dict:
    with torch.no_grad():
        values = {
            "hr_psnr": psnr(images, hr),
            "lr_psnr": psnr(D(images), y),
            "flow_nll": flow_nll(prior, latents),
        }
    return {k: round(v.double().mean().item(), 3) for k, v in values.items()} | {
        "hr_psnr_values": [round(v, 2) for v in values["hr_psnr"].tolist()]
    }


def part_rls(G, D, hr, y, seeds, prior):
    rows = {}
    for label, cfg in RLS_VARIANTS.items():
        out = search(build_method("rls", **cfg), G, y, D, seeds, prior=prior)
        rows[label] = measure(out.images, out.latents, hr, y, D, prior)
        print(f"    rls {label}: {rows[label]}", flush=True)
    return rows


def part_rls_plus(G, D, hr, y, seeds, prior):
    """Every variant from one RLS anchor (stage outputs land in the result's extras)."""
    labels = list(RLS_PLUS_VARIANTS)
    names = [f"plus{i}" for i in range(len(labels))]

    def stages(ctx):
        out = [rls_stage(name="rls")]
        for name, cfg in zip(names, RLS_PLUS_VARIANTS.values()):
            out.append(dataclasses.replace(rls_plus_stage(ctx, "rls", **cfg), name=name))
        return out

    out = search(Method("rls_plus variants", stages), G, y, D, seeds, prior=prior)
    rows = {
        "RLS anchor": measure(out.extras["rls_images"], out.extras["rls_latents"], hr, y, D, prior)
    }
    for i, (label, name) in enumerate(zip(labels, names)):
        last = i == len(names) - 1
        images = out.images if last else out.extras[f"{name}_images"]
        latents = out.latents if last else out.extras[f"{name}_latents"]
        rows[label] = measure(images, latents, hr, y, D, prior)
        print(f"    rls_plus {label}: {rows[label]}", flush=True)
    return rows


def part_pulse(G, D, hr, y, seeds, prior):
    rows = {}
    for name in ("pulse", "pulse_rls_paper"):
        out = search(build_method(name), G, y, D, seeds, prior=prior)
        rows[name] = measure(out.images, out.latents, hr, y, D, prior)
        print(f"    {name}: {rows[name]}", flush=True)
    return rows


def part_maf_start(G, D, hr, y, seeds, prior, maf):
    rows = {}
    with torch.no_grad():
        w_bar = G.mapping.w_avg[None]
        rows["‖f(w_avg)‖ under maf"] = round(maf.to_gaussian(w_bar).norm().item(), 1)
        rows["‖f(w_avg)‖ under maf_paper"] = round(prior.to_gaussian(w_bar).norm().item(), 1)
        rows["√w_dim"] = round(G.w_dim**0.5, 1)
    for start in MAF_STARTS:
        out = search(rls_from(start, maf), G, y, D, seeds, prior=maf)
        rows[f"maf, start={start}"] = measure(out.images, out.latents, hr, y, D, prior)
        print(f"    maf start={start}: {rows[f'maf, start={start}']}", flush=True)
    return rows


def rls_from(start: str, flow: WFlow) -> Method:
    """RLS from w̄ (``sample_mean``, ``w_avg``) or from ``flow_origin`` = f⁻¹(0), the flow's
    image of the Gaussian origin: a start inside the flow's support, measured here (it did
    not help, so it is no option of the library)."""
    if start != "flow_origin":
        return build_method("rls", start=start)
    stage = rls_stage(name="rls")

    def init(ctx):
        v = stage.init(ctx)
        with torch.no_grad():
            origin = flow.from_gaussian(torch.zeros(1, ctx.G.w_dim))[0]
        v["w"] = origin.expand_as(v["w"]).clone()
        return v

    return Method("rls", [dataclasses.replace(stage, init=init)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", default=["rls", "rls_plus", "pulse", "maf_start"])
    parser.add_argument("--targets", nargs="+", default=["generated", "recovery"])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--scale", type=int, default=8)
    parser.add_argument("--flow-steps", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "faithfulness.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    for kind in args.targets:
        G, D, hr, y, seeds = targets(kind, args.n, args.scale)
        prior = train_flow(G, maf_inputs=False, steps=args.flow_steps)
        bicubic = torch.nn.functional.interpolate(y, scale_factor=args.scale, mode="bicubic")
        section = results.setdefault(kind, {})
        section["bicubic"] = {"hr_psnr": round(psnr(bicubic.clamp(0, 1), hr).mean().item(), 3)}
        for part in args.parts:
            t0 = time.perf_counter()
            print(f"{kind}: {part}", flush=True)
            if part == "maf_start":
                maf = train_flow(G, maf_inputs=True, steps=args.flow_steps)
                section[part] = part_maf_start(G, D, hr, y, seeds, prior, maf)
            else:
                run = {"rls": part_rls, "rls_plus": part_rls_plus, "pulse": part_pulse}[part]
                section[part] = run(G, D, hr, y, seeds, prior)
            section[part]["seconds"] = round(time.perf_counter() - t0)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
