"""One entry to load a StyleGAN2 generator from any supported checkpoint, safely.

``load_checkpoint(source)``: ``source`` is a known name (``rls.generators.download``), an
http(s) URL, or a local path. The format is detected from the file's first bytes:

===================  ======================================================================
safetensors          the project's own format (config in the metadata)
pickle (``\\x80``)    NVIDIA stylegan2-ada-pytorch / stylegan3 ``.pkl`` or TensorFlow ``.pkl``,
                     read by the restricted unpickler (no embedded code is ever executed)
zip / legacy torch   ``torch.save`` file: rosinality ``.pt`` (``g_ema``), read weights-only
===================  ======================================================================

Every path ends the same way: build the generator from the config, check key set and shapes,
``load_state_dict(strict=True)``, eval mode.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from rls.generators.config import normalize_config
from rls.generators.download import resolve
from rls.generators.formats_common import CheckpointError, describe, load_state_strict
from rls.generators.formats_nvidia import read_nvidia_torch
from rls.generators.formats_rosinality import (
    estimate_w_avg,
    is_rosinality,
    read_rosinality,
    read_rosinality_file,
)
from rls.generators.formats_safetensors import read_safetensors, save_generator
from rls.generators.formats_tf import read_nvidia_tf
from rls.generators.networks import Generator
from rls.generators.safe_unpickle import TFNetwork, safe_load_pickle

__all__ = [
    "CheckpointError",
    "detect_format",
    "load_checkpoint",
    "read_checkpoint",
    "save_generator",
]

log = logging.getLogger(__name__)

# torch.save's legacy (non-zip) format starts with a pickled magic number (protocol 2, LONG1).
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def detect_format(path: str | os.PathLike) -> str:
    """``"safetensors"``, ``"torch"`` (zip or legacy torch.save) or ``"pickle"``, from content."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) < 8:
        raise CheckpointError(f"{describe(path)}: {len(head)} bytes: empty or truncated file")
    if head.startswith(b"PK\x03\x04") or head.startswith(_TORCH_LEGACY_MAGIC):
        return "torch"
    header_len = int.from_bytes(head[:8], "little")
    if len(head) > 8 and head[8:9] == b"{" and 2 <= header_len < 100_000_000:
        return "safetensors"
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:
        return "pickle"
    raise CheckpointError(
        f"{describe(path)}: unrecognised file format (first bytes {head[:8]!r}); expected an NVIDIA"
        " .pkl, a rosinality .pt, or a .safetensors written by rls.generators.save_generator"
    )


def read_checkpoint(
    path: str | os.PathLike, *, mapping_lr_multiplier: float = 0.01
) -> tuple[dict, dict[str, torch.Tensor], str]:
    """``(config, state_dict, format)`` of a local checkpoint, with no network built."""
    kind = detect_format(path)
    if kind == "safetensors":
        config, state_dict, _ = read_safetensors(path)
        return config, state_dict, "rls-safetensors"
    if kind == "torch":
        data = read_rosinality_file(path)
        if not is_rosinality(data):
            keys = sorted(map(str, data))[:8] if isinstance(data, dict) else type(data).__name__
            raise CheckpointError(
                f"{describe(path)}: torch checkpoint without a rosinality 'g_ema' generator"
                f" (found {keys})"
            )
        config, state_dict = read_rosinality(
            data, path, mapping_lr_multiplier=mapping_lr_multiplier
        )
        return config, state_dict, "rosinality"
    data = safe_load_pickle(path)
    if isinstance(data, tuple) and any(isinstance(x, TFNetwork) for x in data):
        config, state_dict = read_nvidia_tf(data, path)
        return config, state_dict, "nvidia-tf"
    config, state_dict = read_nvidia_torch(data, path)
    return config, state_dict, "nvidia-torch"


def _build(config: dict, path: Any) -> torch.nn.Module:
    # Built without the random init of build_generator (every tensor is overwritten by the
    # checkpoint anyway).
    try:
        return Generator(**normalize_config(config)).eval()
    except (TypeError, ValueError, KeyError, AssertionError) as err:
        raise CheckpointError(
            f"{describe(path)}: cannot build a generator from {config}: {err}"
        ) from None


def load_checkpoint(
    source: str | os.PathLike,
    *,
    allow_download: bool = True,
    mapping_lr_multiplier: float = 0.01,
    w_avg_samples: int = 10_000,
) -> torch.nn.Module:
    """A StyleGAN2 generator (eval mode, fp32, CPU) from a checkpoint name, URL or path.

    ``mapping_lr_multiplier`` only matters for rosinality files (not stored there);
    ``w_avg_samples`` mapped z estimate ``w_avg`` when a rosinality file lacks ``latent_avg``.
    Raises CheckpointError naming the file for anything unreadable, unsafe or mismatched.
    """
    path = resolve(source, allow_download=allow_download)
    config, state_dict, kind = read_checkpoint(path, mapping_lr_multiplier=mapping_lr_multiplier)
    G = _build(config, path)
    estimate = kind == "rosinality" and "mapping.w_avg" not in state_dict
    if estimate and "mapping.w_avg" in G.state_dict():
        state_dict["mapping.w_avg"] = G.mapping.w_avg  # placeholder, replaced below
    load_state_strict(G, state_dict, path)
    if estimate and hasattr(G.mapping, "w_avg"):
        log.warning(
            "%s: no 'latent_avg' in the file; w_avg estimated from %d mapped z (seed 0)",
            path,
            w_avg_samples,
        )
        G.mapping.w_avg.copy_(estimate_w_avg(G.mapping, G.z_dim, w_avg_samples))
    return G.eval()


def convert_checkpoint(source: str | os.PathLike, dest: str | os.PathLike, **kwargs) -> None:
    """Load any supported checkpoint and save it in the project's safetensors format, e.g.
    ``python -m rls.generators.checkpoints ffhq-1024 ffhq1024.safetensors``."""
    save_generator(load_checkpoint(source, **kwargs), dest, source=str(source))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=convert_checkpoint.__doc__)
    parser.add_argument("source", help="known name, URL or path of a StyleGAN2 checkpoint")
    parser.add_argument("dest", help="output .safetensors path")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    convert_checkpoint(args.source, args.dest)
