"""rosinality/stylegan2-pytorch ``.pt`` checkpoints -> (config, state dict), by a name table.

The file is ``torch.save({'g_ema': state_dict, 'latent_avg'?: [w_dim], 'g', 'd', 'args', ...})``
and is read with ``torch.load(weights_only=True)``. Its generator computes the same function as
the official one for the same raw weights:

- ``EqualLinear`` multiplies weight by ``lr_mul / sqrt(in)`` and bias by ``lr_mul``, exactly the
  official ``FullyConnectedLayer`` gains; the mapping's ``lr_mul`` (0.01) is not stored in the
  state dict (passed as ``mapping_lr_multiplier``);
- ``ModulatedConv2d`` keeps a leading batch dim on the weight (squeezed here) and scales it by
  ``1/sqrt(fan_in)`` before demodulation, which the official code omits: demodulation removes
  the scale except inside ``rsqrt(sum w^2 + 1e-8)``, so the two differ by a relative ~1e-8
  (eps / sum); for ToRGB (no demodulation) both apply ``1/sqrt(fan_in)``;
- the up-sampling conv is a stride-2 transposed conv on the same (already flipped) kernel
  followed by the same ``[1, 3, 3, 1]`` blur with gain 4 and pads (1, 1); the ToRGB skip
  up-sampler is ``upfirdn2d(up=2, pad=(2, 1))`` like ``upsample2d``;
- ``NoiseInjection.weight`` is shape ``[1]`` (official ``noise_strength`` is a scalar), added
  before ``FusedLeakyReLU``'s bias, as officially; ``noises.noise_{i}`` are ``[1, 1, r, r]``;
- channels follow ``min(16384 * channel_multiplier // res, 512)``, i.e. ``channel_base`` and
  ``channel_max`` of the official config (inferred from the weight shapes here);
- there is no ``w_avg`` buffer: ``latent_avg`` is used when the file has it (checkpoints
  converted from NVIDIA's pickles do); otherwise the caller estimates it (see
  :func:`estimate_w_avg`).
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from rls.generators.formats_common import CheckpointError, describe, refused_global

_BLUR_1D = torch.tensor([1.0, 3.0, 3.0, 1.0])
_LAYER_KEYS = {  # rosinality StyledConv / ToRGB entry -> official layer entry, value transform
    "conv.weight": ("weight", lambda t: t.squeeze(0)),
    "conv.modulation.weight": ("affine.weight", lambda t: t),
    "conv.modulation.bias": ("affine.bias", lambda t: t),
    "noise.weight": ("noise_strength", lambda t: t.reshape(())),
    "activate.bias": ("bias", lambda t: t),
    "bias": ("bias", lambda t: t.reshape(-1)),  # ToRGB bias [1, C, 1, 1]
}
# Blur/upsample kernels are derived from the config (official resample_filter buffers).
_KERNEL = re.compile(r"(convs\.\d+\.conv\.blur|to_rgbs\.\d+\.upsample)\.kernel")


def read_rosinality_file(path: str | os.PathLike) -> Mapping[str, Any]:
    """``torch.load`` with ``weights_only=True`` (``args`` is an ``argparse.Namespace``)."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            if name := refused_global(err):
                raise CheckpointError(
                    f"{describe(path)}: refused to load: it asks for the global '{name}' (code,"
                    " not weights); nothing in the file was executed"
                ) from None
            raise CheckpointError(
                f"{describe(path)}: not a readable torch checkpoint"
                f" ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
            ) from None


def is_rosinality(data: Any) -> bool:
    """True for a dict holding a rosinality generator state dict under ``g_ema``."""
    return (
        isinstance(data, Mapping)
        and isinstance(data.get("g_ema"), Mapping)
        and "input.input" in data["g_ema"]
    )


def _layer_target(index: int) -> str:
    """rosinality layer ``convs.{i}`` -> official ``synthesis.b{res}.conv{0|1}``."""
    res = 2 ** (index // 2 + 3)
    return f"synthesis.b{res}.conv{index % 2}"


def _noise_target(index: int) -> str:
    if index == 0:
        return "synthesis.b4.conv1.noise_const"
    return f"synthesis.b{2 ** ((index + 5) // 2)}.conv{0 if index % 2 else 1}.noise_const"


def rosinality_name(key: str) -> tuple[str, Any] | None:
    """The official name and value transform of one rosinality key (None: derived kernel)."""
    if _KERNEL.fullmatch(key):
        return None
    if m := re.fullmatch(r"style\.(\d+)\.(weight|bias)", key):
        return f"mapping.fc{int(m[1]) - 1}.{m[2]}", lambda t: t
    if key == "input.input":
        return "synthesis.b4.const", lambda t: t.squeeze(0)
    if m := re.fullmatch(r"noises\.noise_(\d+)", key):
        return _noise_target(int(m[1])), lambda t: t[0, 0]
    for prefix, target in (
        (r"conv1", "synthesis.b4.conv1"),
        (r"to_rgb1", "synthesis.b4.torgb"),
        (r"convs\.(\d+)", None),
        (r"to_rgbs\.(\d+)", None),
    ):
        if m := re.fullmatch(prefix + r"\.(.+)", key):
            sub = m[m.lastindex]
            if sub not in _LAYER_KEYS:
                break
            if target is None:
                i = int(m[1])
                target = (
                    _layer_target(i)
                    if key.startswith("convs")
                    else f"synthesis.b{2 ** (i + 3)}.torgb"
                )
            official, fn = _LAYER_KEYS[sub]
            return f"{target}.{official}", fn
    raise KeyError(key)


def _infer_config(g: Mapping[str, torch.Tensor], name: str, lr_multiplier: float) -> dict:
    try:
        n_mlp = sum(1 for k in g if re.fullmatch(r"style\.\d+\.weight", k))
        w_dim, z_dim = g["style.1.weight"].shape
        n_rgbs = sum(1 for k in g if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k))
        img_channels = g["to_rgb1.conv.weight"].shape[1]
        channels = {4: g["conv1.conv.weight"].shape[1]}
        for i in range(n_rgbs):
            channels[2 ** (i + 3)] = g[f"convs.{2 * i + 1}.conv.weight"].shape[1]
    except (KeyError, IndexError, ValueError) as err:
        raise CheckpointError(f"{name}: incomplete rosinality generator (missing {err})") from None
    resolution = 4 * 2**n_rgbs
    channel_max = max(channels.values())
    below = [c * r for r, c in channels.items() if c < channel_max]
    channel_base = min(below) if below else channel_max * resolution
    if any(min(channel_base // r, channel_max) != c for r, c in channels.items()):
        raise CheckpointError(
            f"{name}: channel counts {channels} follow no official min(base // res, max) rule"
        )
    return {
        "z_dim": int(z_dim),
        "c_dim": 0,
        "w_dim": int(w_dim),
        "img_resolution": resolution,
        "img_channels": int(img_channels),
        "mapping_kwargs": {"num_layers": n_mlp, "lr_multiplier": lr_multiplier},
        "synthesis_kwargs": {
            "channel_base": int(channel_base),
            "channel_max": int(channel_max),
            "architecture": "skip",
        },
    }


def read_rosinality(
    data: Mapping[str, Any],
    source: str | os.PathLike | None = None,
    *,
    mapping_lr_multiplier: float = 0.01,
) -> tuple[dict, dict]:
    """``(config, state_dict)`` from a rosinality checkpoint dict.

    ``mapping.w_avg`` is included only when the file has ``latent_avg``. Unknown keys or
    a non-default blur kernel raise CheckpointError naming the file.
    """
    name = describe(source)
    if not is_rosinality(data):
        raise CheckpointError(f"{name}: no rosinality generator ('g_ema' with 'input.input')")
    g = data["g_ema"]
    config = _infer_config(g, name, mapping_lr_multiplier)
    expected_kernel = torch.outer(_BLUR_1D, _BLUR_1D)
    expected_kernel = expected_kernel / expected_kernel.sum() * 4  # normalised, gain up²
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in g.items():
        try:
            rule = rosinality_name(key)
        except KeyError:
            unknown.append(key)
            continue
        if rule is None:
            if value.shape != expected_kernel.shape or not torch.allclose(value, expected_kernel):
                raise CheckpointError(f"{name}: '{key}' is not the [1,3,3,1] blur; unsupported")
            continue
        target, fn = rule
        out[target] = fn(value)
    if unknown:
        raise CheckpointError(f"{name}: unknown rosinality key(s): {sorted(unknown)[:8]}")
    latent_avg = data.get("latent_avg")
    if isinstance(latent_avg, torch.Tensor):
        out["mapping.w_avg"] = latent_avg.reshape(-1)
    if math.log2(config["img_resolution"]) % 1:
        raise CheckpointError(f"{name}: resolution {config['img_resolution']} is not a power of 2")
    return config, out


@torch.no_grad()
def estimate_w_avg(mapping: torch.nn.Module, z_dim: int, n: int = 10_000, seed: int = 0):
    """Mean of ``mapping(z)`` over ``n`` seeded z (what the official ``w_avg`` tracks)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, z_dim, generator=gen)
    ws = mapping(z, None, truncation_psi=1.0)
    return ws[:, 0].mean(0)
