"""Official generator architectures with random weights: the real shapes, offline.

The known checkpoints (``rls.generators.download``) cannot be downloaded everywhere; tests,
benchmarks and a newcomer still need the exact network a real run uses (FFHQ config-f:
1024², 18 W+ rows of 512, 30,370,060 parameters). ``make_random("ffhq-1024")`` builds it
with the official initialisation, then makes it behave like a trained network in the ways
the search relies on: nonzero noise strengths (so noise maps matter), ``w_avg`` = the mean
of mapped z (so RLS starts at a real centre) and output scaled into [-1, 1] (a fresh
network's images have std ~2 and saturate two thirds of their pixels). Speed and memory
are those of the real network; image quality is not (random weights draw no faces).

    python -m rls.generators.make_random ffhq1024 ffhq1024-random.safetensors
    python evaluate.py generator=ffhq1024 generator.random_init=true
"""

from __future__ import annotations

import argparse
import logging

import torch

from rls.generators.config import build_generator, normalize_config
from rls.generators.networks import Generator

# Architectures of the known checkpoints (download.py names; the Hydra group names without
# the dash are accepted too). config-f: Karras et al. 2020 Table 1 / the TF pickle's kwargs
# (fmap_base 16384 counts channels halved: channel_base 32768); paper256: StyleGAN2-ADA's
# transfer-learning source net (fmaps 0.5, fp16 in the 4 highest resolutions, clamp 256).
_CONFIG_F = dict(
    z_dim=512,
    c_dim=0,
    w_dim=512,
    img_resolution=1024,
    img_channels=3,
    num_layers=8,
    channel_base=32768,
    channel_max=512,
)
OFFICIAL_CONFIGS: dict[str, dict] = {
    "ffhq-1024": _CONFIG_F,
    "ffhq-1024-ada": dict(_CONFIG_F, num_fp16_res=4, conv_clamp=256),
    "ffhq-1024-ngc": dict(_CONFIG_F, num_fp16_res=4, conv_clamp=256),
    "ffhq-256": dict(
        _CONFIG_F, img_resolution=256, channel_base=16384, num_fp16_res=4, conv_clamp=256
    ),  # fmt: skip
    "ffhq-256-ngc": dict(
        _CONFIG_F, img_resolution=256, channel_base=16384, num_fp16_res=4, conv_clamp=256
    ),  # fmt: skip
}
_ALIASES = {"ffhq1024": "ffhq-1024", "ffhq256": "ffhq-256"}

NOISE_STRENGTH = 0.1  # a trained config-f's strengths are of this order (0.01-0.3)
IMAGE_STD = 0.5


def official_config(name: str, **overrides) -> dict:
    """The nested ``Generator`` config of a known checkpoint name (``ffhq-1024``, ...)."""
    key = _ALIASES.get(str(name), str(name))
    if key not in OFFICIAL_CONFIGS:
        known = ", ".join(sorted(OFFICIAL_CONFIGS) + sorted(_ALIASES))
        raise KeyError(f"no known architecture for generator {name!r}; known: {known}")
    return normalize_config({**OFFICIAL_CONFIGS[key], **overrides})


@torch.no_grad()
def make_trained_like(
    G: Generator,
    seed: int = 0,
    noise_strength: float = NOISE_STRENGTH,
    w_avg_samples: int = 4096,
    calibration_samples: int = 1,
) -> Generator:
    """Noise strengths, ``w_avg`` and output scale of a trained network (see the module
    docstring), all drawn from ``seed``. ``calibration_samples`` images set the output scale
    (one 1024² image already holds a million pixels per channel); 0 skips it."""
    for name, param in G.named_parameters():
        if name.endswith("noise_strength"):
            param.fill_(noise_strength)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(max(w_avg_samples, calibration_samples), G.z_dim, generator=gen)
    if G.c_dim > 0:
        raise ValueError("make_trained_like: conditional generators are not supported")
    if hasattr(G.mapping, "w_avg"):
        G.mapping.w_avg.copy_(G.mapping(z[:w_avg_samples], None)[:, 0].mean(dim=0))
    if calibration_samples > 0:
        calibrate_output(G, z[:calibration_samples])
    return G


@torch.no_grad()
def calibrate_output(G: Generator, z: torch.Tensor, std: float = IMAGE_STD) -> None:
    """Scale every toRGB weight and shift the last toRGB bias so that images of ``z`` have
    zero mean per channel and standard deviation ``std`` (the skip architecture sums the
    toRGB outputs, so one common factor scales the image)."""
    torgbs = [block.torgb for block in G.synthesis.blocks if hasattr(block, "torgb")]
    img = G(z, None)
    scale = std / img.std()
    for layer in torgbs:
        layer.weight.mul_(scale)
    torgbs[-1].bias.sub_((img * scale).mean(dim=(0, 2, 3)))


def make_random(
    name: str = "ffhq-1024", seed: int = 0, calibration_samples: int = 1, **overrides
) -> Generator:
    """The architecture of the known checkpoint ``name`` with random weights from ``seed``,
    made to behave like a trained network (:func:`make_trained_like`); eval mode, fp32.
    ``overrides`` are flat config keys (e.g. ``img_resolution=64``: config-f widths at 64²)."""
    G = build_generator(seed=seed, **official_config(name, **overrides))
    return make_trained_like(G, seed=seed, calibration_samples=calibration_samples).eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write a known StyleGAN2 architecture with random weights as safetensors."
    )
    parser.add_argument("name", help="ffhq1024 (config-f), ffhq256, or a download.py name")
    parser.add_argument("dest", help="output .safetensors path")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from rls.generators.formats_safetensors import save_generator

    G = make_random(args.name, seed=args.seed)
    save_generator(G, args.dest, source=f"random:{args.name}:seed{args.seed}")
    params = sum(p.numel() for p in G.parameters())
    print(f"wrote {args.dest}: {args.name} architecture, random weights (seed {args.seed}),"
          f" {params:,} parameters, {G.num_ws} x {G.w_dim} W+")  # fmt: skip


if __name__ == "__main__":
    main()
