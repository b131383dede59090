"""NVIDIA stylegan2-ada-pytorch / stylegan3-repo StyleGAN2 pickles -> (config, state dict).

The pickle holds ``{'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'}``; the restricted
unpickler (:mod:`rls.generators.safe_unpickle`) turns each network into a
:class:`PersistentObject` whose ``state`` is the module's ``__dict__``. The state dict is the
walk over ``_parameters`` / ``_buffers`` / ``_modules`` (dotted names, as
``torch.nn.Module.state_dict`` does), and the config is the network's ``_init_kwargs``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from rls.generators.formats_common import CheckpointError, describe
from rls.generators.safe_unpickle import PersistentObject

# Official Generator init kwargs (stylegan2-ada-pytorch training/networks.py).
TOP_LEVEL_KEYS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")


def plain(value: Any) -> Any:
    """Dicts, lists and numpy scalars of a pickled config -> JSON-friendly Python values."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def module_state_dict(obj: PersistentObject, prefix: str = "") -> dict[str, torch.Tensor]:
    """The ``state_dict()`` of a pickled module, rebuilt from its plain ``__dict__``."""
    state = obj.state
    skip = set(state.get("_non_persistent_buffers_set") or ())
    out: dict[str, torch.Tensor] = {}
    for name, tensor in (state.get("_parameters") or {}).items():
        if tensor is not None:
            out[prefix + name] = tensor
    for name, tensor in (state.get("_buffers") or {}).items():
        if tensor is not None and name not in skip:
            out[prefix + name] = tensor
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentObject):
            raise CheckpointError(f"submodule '{prefix}{name}' is not a pickled network object")
        out.update(module_state_dict(child, f"{prefix}{name}."))
    return out


def generator_config(obj: PersistentObject, source: str | os.PathLike | None = None) -> dict:
    """The official Generator kwargs, nested as stylegan2-ada-pytorch spells them.

    The stylegan3 repository's ``networks_stylegan2.Generator`` takes the synthesis kwargs
    flattened (``**synthesis_kwargs``): those are gathered back under ``synthesis_kwargs``.
    """
    name = describe(source)
    state = obj.state
    if state.get("_init_args"):
        raise CheckpointError(f"{name}: G_ema was built with positional arguments; expected kwargs")
    kwargs = plain(state.get("_init_kwargs") or {})
    missing = [k for k in TOP_LEVEL_KEYS if k not in kwargs]
    if missing:
        raise CheckpointError(
            f"{name}: G_ema init kwargs lack {missing}; not a StyleGAN2 generator"
        )
    config = {k: kwargs.pop(k) for k in TOP_LEVEL_KEYS}
    config["mapping_kwargs"] = dict(kwargs.pop("mapping_kwargs", None) or {})
    synthesis = dict(kwargs.pop("synthesis_kwargs", None) or {})
    synthesis.update(kwargs)  # stylegan3-repo layout: the rest are synthesis kwargs
    config["synthesis_kwargs"] = synthesis
    return config


def _check_stylegan2(obj: PersistentObject, name: str) -> None:
    modules = obj.state.get("_modules") or {}
    synthesis = modules.get("synthesis")
    if obj.class_name != "Generator" or not isinstance(synthesis, PersistentObject):
        raise CheckpointError(f"{name}: G_ema is a '{obj.class_name}', not a StyleGAN2 Generator")
    blocks = synthesis.state.get("_modules") or {}
    if "input" in blocks or "b4" not in blocks:
        raise CheckpointError(
            f"{name}: G_ema is a StyleGAN3 (alias-free) generator; only StyleGAN2 is supported"
        )


def read_nvidia_torch(data: Any, source: str | os.PathLike | None = None) -> tuple[dict, dict]:
    """``(config, state_dict)`` of ``G_ema`` from an unpickled stylegan2-ada-pytorch pickle."""
    name = describe(source)
    if not isinstance(data, Mapping) or "G_ema" not in data:
        keys = sorted(map(str, data)) if isinstance(data, Mapping) else type(data).__name__
        raise CheckpointError(f"{name}: expected a network pickle with 'G_ema', found {keys}")
    g_ema = data["G_ema"]
    if not isinstance(g_ema, PersistentObject):
        raise CheckpointError(f"{name}: 'G_ema' is a {type(g_ema).__name__}, not a network")
    _check_stylegan2(g_ema, name)
    try:
        state_dict = module_state_dict(g_ema)
    except CheckpointError as err:
        raise CheckpointError(f"{name}: {err}") from None
    return generator_config(g_ema, source), state_dict
