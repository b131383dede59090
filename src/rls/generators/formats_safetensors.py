"""The project's own generator format: safetensors weights + the config in the metadata.

No pickle, no code: the header holds ``{"format": "rls.stylegan2", "format_version": "1",
"config": <JSON of G.init_kwargs>}`` (k-diffusion habit: config travels with the weights).
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from rls.generators.formats_common import CheckpointError, describe

FORMAT_NAME = "rls.stylegan2"
FORMAT_VERSION = "1"


def save_generator(G: torch.nn.Module, path: str | os.PathLike, **extra_metadata: str) -> None:
    """Write ``G``'s state dict and ``G.init_kwargs`` (JSON) to ``path`` as safetensors.

    ``extra_metadata`` (string values) is stored beside the config, e.g. ``source="ffhq-1024"``.
    """
    config = getattr(G, "init_kwargs", None)
    if not isinstance(config, dict):
        raise TypeError(f"{type(G).__name__} has no init_kwargs dict: cannot record its config")
    # clone: safetensors refuses tensors that share storage.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in G.state_dict().items()}
    metadata = {str(k): str(v) for k, v in extra_metadata.items()}
    metadata.update(format=FORMAT_NAME, format_version=FORMAT_VERSION, config=json.dumps(config))
    path = os.fspath(path)
    tmp = path + ".part"
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, path)  # never leave a half-written checkpoint under the final name


def read_safetensors(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """``(config, state_dict, metadata)`` of a file written by :func:`save_generator`."""
    name = describe(path)
    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            metadata: dict[str, Any] = dict(f.metadata() or {})
            if metadata.get("format") != FORMAT_NAME:
                raise CheckpointError(
                    f"{name}: safetensors file without rls generator metadata (format="
                    f"{metadata.get('format')!r}); save it with rls.generators.save_generator"
                )
            if metadata.get("format_version") != FORMAT_VERSION:
                raise CheckpointError(
                    f"{name}: format_version {metadata.get('format_version')!r} is not supported"
                    f" (this code reads {FORMAT_VERSION})"
                )
            state_dict = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except SafetensorError as err:
        raise CheckpointError(f"{name}: corrupt or truncated safetensors file ({err})") from None
    try:
        config = json.loads(metadata["config"])
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{name}: unreadable generator config in metadata ({err})") from None
    return config, state_dict, metadata
