"""Regenerate the gradient and ``orig``-architecture reference vectors in tests/data/reference/.

Runs NVIDIA's own ``training/networks.py`` (NVlabs/stylegan2-ada-pytorch, a local clone
given by ``--nvidia``; nothing of it is stored here) on CPU, where its custom CUDA ops fall
back to their reference implementations, and writes, per case, one ``.safetensors`` file of
plain tensors and JSON metadata:

- ``G.<name>``: the generator's full state dict in official naming;
- ``z``, ``c``; ``ws_psi1`` = ``G.mapping(z, c)``; ``ws_psi07_cutoff3`` with truncation;
  ``img_const_psi07_cutoff3`` and ``img_none_psi1`` (as the older cases hold);
- ``loss_weight`` ``R`` (a fixed Gaussian tensor the shape of the image) for the linear
  loss ``L = sum(G.synthesis(G.mapping(z, c, 0.7, 3), noise_mode='const') * R)``;
- ``grad_ws`` = dL/d(ws) at the W+ code the mapping produced, and ``grad.G.<name>`` = dL/dθ
  for every parameter of the generator (mapping and synthesis).

Usage (outside this repository's checkout of NVIDIA's code, e.g. a temporary clone)::

    git clone https://github.com/NVlabs/stylegan2-ada-pytorch /tmp/sg2ada
    git -C /tmp/sg2ada checkout d72cc7d041b42ec8e806021a205ed9349f87c6a4
    python scripts/make_reference_vectors.py --nvidia /tmp/sg2ada --out tests/data/reference
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

TRUNCATION_PSI, TRUNCATION_CUTOFF = 0.7, 3

# Tiny configurations (files well under 1 MB) covering what the older cases do not: the
# `orig` architecture, gradients through every architecture, a clamp active in the backward
# pass (skip16_cond: conv_clamp 0.5), no clamp at all (orig16).
CASES = {
    "orig16": dict(
        z_dim=16,
        c_dim=0,
        w_dim=16,
        img_resolution=16,
        img_channels=3,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(
            channel_base=256, channel_max=16, architecture="orig", conv_clamp=None
        ),
    ),
    "skip16_cond": dict(
        z_dim=16,
        c_dim=3,
        w_dim=16,
        img_resolution=16,
        img_channels=3,
        mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(
            channel_base=256, channel_max=16, architecture="skip", conv_clamp=0.5, num_fp16_res=1
        ),
    ),
    "resnet16": dict(
        z_dim=16,
        c_dim=0,
        w_dim=16,
        img_resolution=16,
        img_channels=3,
        mapping_kwargs=dict(num_layers=3),
        synthesis_kwargs=dict(
            channel_base=256, channel_max=16, architecture="resnet", conv_clamp=256
        ),
    ),
}


def perturb(G: torch.nn.Module, gen: torch.Generator) -> None:
    """Make no term trivially zero: small Gaussian offsets on every bias, a positive
    ``noise_strength`` everywhere and a random ``mapping.w_avg``."""
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith(".bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("noise_strength"):
                p.fill_(0.05 + 0.1 * torch.rand((), generator=gen).item())
        G.mapping.w_avg.copy_(torch.randn(G.mapping.w_avg.shape, generator=gen))


def make_case(Generator, init_kwargs: dict, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    G = Generator(**init_kwargs).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    perturb(G, gen)
    z = torch.randn(3, G.z_dim, generator=gen)
    c = torch.zeros(3, max(G.c_dim, 1))
    if G.c_dim:
        c = torch.nn.functional.one_hot(torch.arange(3) % G.c_dim, G.c_dim).float()
    c_in = c if G.c_dim else None
    out = {f"G.{k}": v.detach().clone() for k, v in G.state_dict().items()}
    out["z"], out["c"] = z, c
    with torch.no_grad():
        out["ws_psi1"] = G.mapping(z, c_in)
        out["img_none_psi1"] = G.synthesis(out["ws_psi1"], noise_mode="none", force_fp32=True)
    ws = G.mapping(z, c_in, truncation_psi=TRUNCATION_PSI, truncation_cutoff=TRUNCATION_CUTOFF)
    ws.retain_grad()
    img = G.synthesis(ws, noise_mode="const", force_fp32=True)
    weight = torch.randn(img.shape, generator=gen)
    (img * weight).sum().backward()
    out["ws_psi07_cutoff3"] = ws.detach()
    out["img_const_psi07_cutoff3"] = img.detach()
    out["loss_weight"] = weight
    out["grad_ws"] = ws.grad.detach()
    for name, p in G.named_parameters():
        out[f"grad.G.{name}"] = p.grad.detach().clone()
    return {k: v.contiguous() for k, v in out.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nvidia", required=True, type=Path, help="clone of stylegan2-ada-pytorch")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--cases", nargs="*", default=sorted(CASES), choices=sorted(CASES))
    args = parser.parse_args(argv)

    sys.path.insert(0, str(args.nvidia.resolve()))
    from training.networks import Generator  # NVIDIA's code, imported from --nvidia

    commit = subprocess.run(
        ["git", "-C", str(args.nvidia), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(args.cases):
        tensors = make_case(Generator, CASES[name], seed=100 + seed)
        meta = {
            "init_kwargs": json.dumps(CASES[name]),
            "truncation_psi": str(TRUNCATION_PSI),
            "truncation_cutoff": str(TRUNCATION_CUTOFF),
            "upstream": "NVlabs/stylegan2-ada-pytorch training/networks.py",
            "upstream_commit": commit,
            "torch": torch.__version__,
            "loss": "sum(G.synthesis(ws_psi07_cutoff3, noise_mode='const') * loss_weight)",
        }
        path = args.out / f"{name}.safetensors"
        save_file(tensors, str(path), metadata=meta)
        print(f"{path}: {len(tensors)} tensors, {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
