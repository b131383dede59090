"""Cost of the W-space flow prior (method.md §2-3), at the FFHQ size w_dim = 512.

- training throughput: samples/s of a maximum-likelihood step (forward, backward, AdamW)
  at the training batch size;
- the per-step cost inside RLS: log p(w) and f(w) of one W+ code (18 rows of 512) plus the
  gradient with respect to w, for the flow (one fused pass and two separate passes) and the
  older priors.

    python benchmarks/flow.py [--batch 512] [--steps 10] [--device cuda] [--threads 1]

Prints a table and writes benchmarks/results/flow.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from rls.flows import GaussianPrior, LeakyDiagonalPrior, LeakyFullCovPrior, WFlow

W_DIM, NUM_WS = 512, 18


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def fake_w(n: int, device) -> torch.Tensor:
    """W-like samples: LeakyReLU(0.2) of a correlated Gaussian (no generator needed)."""
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(W_DIM, W_DIM, generator=g) / W_DIM**0.5 + torch.eye(W_DIM)
    v = torch.randn(n, W_DIM, generator=g) @ mix.T
    return torch.nn.functional.leaky_relu(v, 0.2).to(device)


def bench_training(flow: WFlow, batch: int, steps: int, device) -> float:
    opt = torch.optim.AdamW(flow.parameters(), lr=1e-4, weight_decay=1e-6)
    w = fake_w(batch, device)

    def step():
        loss = -flow.log_prob(w).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return batch / timed(step, steps, device)


def bench_search_step(prior, repeats: int, device, fused: bool) -> float:
    w = fake_w(NUM_WS, device).requires_grad_(True)

    def step():
        if fused:
            log_p, z = prior.log_prob_and_gaussian(w)
        else:
            log_p, z = prior.log_prob(w), prior.to_gaussian(w)
        loss = -log_p.mean() + (z.norm(dim=-1) - W_DIM**0.5).square().mean()
        (grad,) = torch.autograd.grad(loss, w)
        return grad

    return timed(step, repeats, device)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "flow.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    train_w = fake_w(8192, device)

    flows = {
        "maf_paper (the authors')": WFlow(W_DIM, family="maf_paper"),
        "maf_zuko": WFlow(W_DIM, leaky_input=False, whiten=False),
        "maf (leaky_input + whiten)": WFlow(W_DIM, leaky_input=True, whiten=True),
    }
    results = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "w_dim": W_DIM,
        "num_ws": NUM_WS,
        "train_batch": args.batch,
        "flow_parameters": sum(p.numel() for p in flows["maf_paper (the authors')"].parameters()),
        "train_samples_per_s": {},
        "search_step_ms": {},
    }
    for name, flow in flows.items():
        flow = flow.to(device).fit_standardisation(train_w)
        results["train_samples_per_s"][name] = bench_training(flow, args.batch, args.steps, device)
        flow.eval().requires_grad_(False)
        for fused in (True, False):
            key = f"{name} {'fused log_prob_and_gaussian' if fused else 'log_prob + to_gaussian'}"
            results["search_step_ms"][key] = 1e3 * bench_search_step(
                flow, args.repeats, device, fused
            )
    for prior in (GaussianPrior, LeakyDiagonalPrior, LeakyFullCovPrior):
        p = prior(W_DIM).to(device).fit(train_w)
        results["search_step_ms"][prior.__name__] = 1e3 * bench_search_step(
            p, args.repeats, device, fused=False
        )

    print(f"device: {results['device']} ({results['threads']} threads), torch {torch.__version__}")
    print(f"flow parameters: {results['flow_parameters']:,}")
    print(f"training, batch {args.batch} (forward + backward + AdamW):")
    for k, v in results["train_samples_per_s"].items():
        print(f"  {k:62s} {v:10.0f} samples/s")
    print(f"per RLS step, one W+ code ({NUM_WS} x {W_DIM}): log p + f + grad wrt w")
    for k, v in results["search_step_ms"].items():
        print(f"  {k:62s} {v:10.2f} ms")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
