"""Generator configurations: official ``init_kwargs`` normalised, and the seeded ``tiny`` net.

``build_generator`` accepts the constructor keywords of NVIDIA's StyleGAN2 ``Generator`` as
stored in checkpoints: the stylegan2-ada-pytorch form (``mapping_kwargs`` and
``synthesis_kwargs`` dicts) and the stylegan3-repo form (synthesis keywords at top level).
"""

from __future__ import annotations

import copy

import torch

from rls.generators.networks import Generator

MAPPING_KEYS = {
    "num_layers",
    "embed_features",
    "layer_features",
    "activation",
    "lr_multiplier",
    "w_avg_beta",
}
SYNTHESIS_KEYS = {
    "channel_base",
    "channel_max",
    "num_fp16_res",
    "architecture",
    "resample_filter",
    "conv_clamp",
    "fp16_channels_last",
    "use_noise",
    "kernel_size",
    "activation",
}
# Keys some official checkpoints carry that only steer CUDA/fp16 execution: read and dropped.
IGNORED_KEYS = {"fused_modconv_default", "channels_last"}
TOP_KEYS = {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"}


def normalize_config(config: dict) -> dict:
    """Official or flat keyword form -> the nested form ``Generator(**cfg)`` takes.

    Raises ``ValueError`` naming any key that is neither a Generator, mapping nor
    synthesis argument.
    """
    config = copy.deepcopy(dict(config))
    mapping = dict(config.pop("mapping_kwargs", None) or {})
    synthesis = dict(config.pop("synthesis_kwargs", None) or {})
    top = {}
    for key, value in config.items():
        if key in TOP_KEYS:
            top[key] = value
        elif key in SYNTHESIS_KEYS:
            synthesis[key] = value
        elif key in MAPPING_KEYS or key == "mapping_layers":
            mapping["num_layers" if key == "mapping_layers" else key] = value
        elif key not in IGNORED_KEYS:
            raise ValueError(f"unknown generator config key {key!r}")
    for name, part, allowed in (
        ("mapping_kwargs", mapping, MAPPING_KEYS),
        ("synthesis_kwargs", synthesis, SYNTHESIS_KEYS | IGNORED_KEYS),
    ):
        unknown = sorted(set(part) - allowed)
        if unknown:
            raise ValueError(f"unknown {name} key(s) {unknown}")
    for key in IGNORED_KEYS:
        synthesis.pop(key, None)
    missing = sorted(TOP_KEYS - set(top) - {"c_dim"})
    if missing:
        raise ValueError(f"generator config lacks {missing}")
    top.setdefault("c_dim", 0)
    if "resample_filter" in synthesis:
        synthesis["resample_filter"] = [float(v) for v in synthesis["resample_filter"]]
    return dict(**top, mapping_kwargs=mapping, synthesis_kwargs=synthesis)


def build_generator(seed: int = 0, **config) -> Generator:
    """Build any official StyleGAN2 configuration with official init drawn from ``seed``.

    Returns the network in eval mode (``w_avg`` is only tracked in training mode).
    """
    return Generator(**normalize_config(config)).reset_parameters(seed).eval()


def tiny_config(**overrides) -> dict:
    """The small generator of tests and the demo: 32², z = w = 64, 4 mapping layers.

    Channels ``min(1024 // r, 64)``: 64 up to 16², 32 at 32². Overrides are flat keys
    (``img_resolution=64``, ``channel_max=128``, ``w_dim=32``, ...).
    """
    config = dict(
        z_dim=64,
        c_dim=0,
        w_dim=64,
        img_resolution=32,
        img_channels=3,
        num_layers=4,
        channel_base=1024,
        channel_max=64,
    )
    config.update(overrides)
    return normalize_config(config)


TINY_SEED = 20231128
TINY_NOISE_STRENGTH = 0.1


@torch.no_grad()
def build_tiny(seed: int = TINY_SEED, **overrides) -> Generator:
    """A seeded tiny generator that behaves like a trained one in the ways tests rely on:
    nonzero noise strengths (noise matters) and ``w_avg`` = mean of 4096 mapped z (so
    truncation pulls towards a real centre)."""
    G = build_generator(seed=seed, **tiny_config(**overrides))
    for name, param in G.named_parameters():
        if name.endswith("noise_strength"):
            param.fill_(TINY_NOISE_STRENGTH)
    if hasattr(G.mapping, "w_avg") and G.z_dim > 0:
        z = torch.randn(4096, G.z_dim, generator=torch.Generator().manual_seed(seed))
        c = None
        if G.c_dim > 0:
            labels = torch.arange(4096) % G.c_dim
            c = torch.nn.functional.one_hot(labels, G.c_dim).float()
        G.mapping.w_avg.copy_(G.mapping(z, c)[:, 0].mean(dim=0))
        _calibrate_output(G, z[:64], None if c is None else c[:64])
    return G


TINY_IMAGE_STD = 0.5


def _calibrate_output(G: Generator, z: torch.Tensor, c: torch.Tensor | None) -> None:
    """Scale the toRGB weights and shift the last toRGB bias so that images have zero mean
    per channel and std ``TINY_IMAGE_STD``: like a trained generator's output, mostly inside
    [-1, 1] (a freshly initialised one has std ~1.3 and saturates a third of its pixels)."""
    torgbs = [block.torgb for block in G.synthesis.blocks if hasattr(block, "torgb")]
    img = G(z, c)
    scale = TINY_IMAGE_STD / img.std()
    for layer in torgbs:
        layer.weight.mul_(scale)
    torgbs[-1].bias.sub_((img * scale).mean(dim=(0, 2, 3)))
