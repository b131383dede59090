"""What every checkpoint format shares: its error type and the strict, shape-checked load.

Each format module turns a file into ``(config, state_dict)`` in the official
stylegan2-ada-pytorch naming; :func:`load_state_strict` then puts that state dict into a
freshly built generator, naming the file and the first offending keys when the key set or a
shape does not match (nanoGPT ``from_pretrained`` habit: assert key sets and shapes).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping

import torch

# Buffers that the official code derives from the config (the FIR filter of up/downsampling):
# foreign formats do not store them, so they come from the freshly built network.
DERIVED_SUFFIXES = (".resample_filter",)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely or does not fit the generator it describes."""


def refused_global(err: BaseException) -> str | None:
    """The global (e.g. ``posix.system``) that a weights-only ``torch.load`` refused to
    import, when that is why it failed: the file asks for code, not weights."""
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    return found.group(1) if isinstance(err, pickle.UnpicklingError) and found else None


def describe(source: str | os.PathLike | None) -> str:
    """The name used for a checkpoint in error messages."""
    return str(source) if source is not None else "<checkpoint>"


def _preview(names, limit: int = 8) -> str:
    names = sorted(names)
    more = f" ... (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_state_dict(
    expected: Mapping[str, torch.Tensor],
    given: Mapping[str, torch.Tensor],
    source: str | os.PathLike | None,
    *,
    derived: tuple[str, ...] = DERIVED_SUFFIXES,
) -> dict[str, torch.Tensor]:
    """Return ``given`` completed with derived buffers, as float32 where floating.

    Raises CheckpointError naming ``source`` when a key is missing or unexpected, or when a
    shape differs from ``expected`` (the state dict of a network built from the same config).
    """
    name = describe(source)
    out: dict[str, torch.Tensor] = {}
    for key, value in given.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{name}: entry '{key}' is a {type(value).__name__}, not a tensor"
            )
        out[key] = value
    missing = [k for k in expected if k not in out]
    for key in [k for k in missing if k.endswith(derived)]:
        out[key] = expected[key].detach().clone()
    missing = [k for k in expected if k not in out]
    unexpected = [k for k in out if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_preview(unexpected)}")
        raise CheckpointError(
            f"{name}: the weights do not match the generator its config describes; "
            + "; ".join(parts)
        )
    wrong = [
        f"{k}: file {tuple(out[k].shape)} vs network {tuple(expected[k].shape)}"
        for k in expected
        if tuple(out[k].shape) != tuple(expected[k].shape)
    ]
    if wrong:
        raise CheckpointError(
            f"{name}: {len(wrong)} tensor(s) have the wrong shape: " + "; ".join(wrong[:6])
        )
    return {
        k: (v.detach().to(torch.float32) if v.is_floating_point() else v.detach())
        for k, v in out.items()
    }


def load_state_strict(
    module: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str | os.PathLike | None,
) -> torch.nn.Module:
    """Load ``state_dict`` into ``module`` with ``strict=True`` after the checks above."""
    checked = check_state_dict(module.state_dict(), state_dict, source)
    module.load_state_dict(checked, strict=True)
    return module
