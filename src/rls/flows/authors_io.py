"""Read a W flow trained with the RLS authors' code: the state dict their search scripts load
(``--save``/best_model.pth, ``{"model": state_dict}``) and the statistics pickle of their
``--nf_stat`` option (``{"mu": array, "std": array}``, the per-dimension standardisation).

The only writer of ``best_model.pth`` in the authors' history, their training script
(CPFLOW_lib/train_tab_w.py at 73103a4, deleted before f8df15d), saves ``{"args":
argparse.Namespace, "model": state dict, "optim": optimiser state dict, "iters": int,
"ndecs": int}``: the command-line arguments travel as a pickled ``argparse.Namespace``.
That one class is allowed, nothing else.

Nothing in either file is executed: the state dict is read with
``torch.load(weights_only=True)`` (plus ``argparse.Namespace``, whose reconstruction is an
empty object whose ``__dict__`` is filled with plain data: no call into code of the file's
choosing) and the pickle with the project's restricted unpickler (tensors, numpy arrays and
plain data only).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rls.generators.formats_common import CheckpointError, describe, refused_global
from rls.generators.safe_unpickle import safe_load_pickle

from .base import check_compatible
from .wflow import WFlow

# Their FlowSequential numbers its modules: 3b = MADE, 3b+1 = BatchNormFlow, 3b+2 = Reverse.
_LINEAR = re.compile(r"^(\d+)\.(joiner|trunk\.[13])\.linear\.(weight|bias)$")
_MASK = re.compile(r"^(\d+)\.(joiner|trunk\.[13])\.mask$")
_NORM = re.compile(r"^(\d+)\.(log_gamma|beta|running_mean|running_var)$")
_OURS = "flow.transform.transforms."
# what a weights-only load may build besides tensors and plain data: the training script's
# arguments (``{"args": argparse.Namespace, ...}``)
AUTHORS_GLOBALS = (argparse.Namespace,)


def read_authors_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The flow state dict of an authors' checkpoint (under ``"model"``, or the file itself)."""
    try:
        with torch.serialization.safe_globals(list(AUTHORS_GLOBALS)):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"authors' flow checkpoint not found: {path}") from None
    except pickle.UnpicklingError as err:
        name = refused_global(err)
        what = f"it asks for the global '{name}'" if name else str(err).splitlines()[0]
        raise CheckpointError(
            f"{describe(path)}: refused: it holds more than tensors, plain data and the "
            f"training script's argparse.Namespace ({what}); nothing in it was executed"
        ) from None
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise CheckpointError(
            f"{describe(path)}: not a readable torch checkpoint ({type(err).__name__}: {first}); "
            "only tensors and plain data are read"
        ) from None
    state = data.get("model", data) if isinstance(data, Mapping) else None
    if not isinstance(state, Mapping) or "0.joiner.linear.weight" not in state:
        raise CheckpointError(
            f"{describe(path)}: no authors' MAF state dict in it (expected the keys of their "
            "FlowSequential, e.g. '0.joiner.linear.weight', under 'model' or at the top level)"
        )
    return dict(state)


def read_authors_stats(path: str | os.PathLike, w_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ, σ) of the authors' statistics pickle, each ``[w_dim]`` float32."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"authors' flow statistics file not found: {path}")
    data = safe_load_pickle(path)
    if not isinstance(data, Mapping) or not {"mu", "std"} <= set(data):
        raise CheckpointError(f"{describe(path)}: expected a dict with 'mu' and 'std' arrays")
    mu, std = (
        torch.as_tensor(np.asarray(data[k], dtype=np.float32)).reshape(-1) for k in ("mu", "std")
    )
    for name, value in (("mu", mu), ("std", std)):
        if value.numel() != w_dim:
            raise CheckpointError(
                f"{describe(path)}: '{name}' has {value.numel()} entries, the flow's w_dim is "
                f"{w_dim}"
            )
    if not (torch.isfinite(mu).all() and torch.isfinite(std).all() and (std > 0).all()):
        raise CheckpointError(f"{describe(path)}: 'mu'/'std' must be finite with std > 0")
    return mu, std


def _architecture(state: Mapping[str, torch.Tensor], path) -> tuple[int, int, int]:
    """(w_dim, hidden, blocks) of an authors' MAF state dict; refuses other layouts."""
    hidden, w_dim = state["0.joiner.linear.weight"].shape
    made = sorted(int(k.split(".")[0]) for k in state if k.endswith(".joiner.linear.weight"))
    blocks = len(made)
    if made != [3 * b for b in range(blocks)] or any(
        f"{3 * b + 1}.log_gamma" not in state for b in range(blocks)
    ):
        raise CheckpointError(
            f"{describe(path)}: not the authors' MADE / BatchNormFlow / Reverse layout "
            f"(MADE modules at {made})"
        )
    return int(w_dim), int(hidden), blocks


def load_authors_flow(
    state_path: str | os.PathLike,
    stats_path: str | os.PathLike,
    generator: nn.Module | None = None,
    map_location="cpu",
) -> WFlow:
    """A ``WFlow`` (family ``maf_paper``, eval mode) equal to the authors' flow in
    ``state_path`` with the standardisation of ``stats_path``: its ``log_prob`` is their
    ``flow.log_probs((w − mu)/std)`` plus the constant −Σ log std."""
    state = read_authors_state(state_path)
    w_dim, hidden, blocks = _architecture(state, state_path)
    mu, std = read_authors_stats(stats_path, w_dim)
    flow = WFlow(w_dim, family="maf_paper", transforms=blocks, hidden=(hidden, hidden))
    ours = flow.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if m := _LINEAR.match(key):
            index, module, param = m.groups()
            mapped[f"{_OURS}{index}.{module}.{param}"] = value
        elif m := _MASK.match(key):
            index, module = m.groups()
            expected = ours[f"{_OURS}{index}.{module}.mask"]
            if value.shape != expected.shape or not torch.equal(value != 0, expected):
                raise CheckpointError(
                    f"{describe(state_path)}: mask '{key}' is not the authors' MADE connectivity "
                    f"for w_dim={w_dim}, hidden={hidden}"
                )
        elif m := _NORM.match(key):
            mapped[f"{_OURS}{key}"] = value
        else:
            raise CheckpointError(f"{describe(state_path)}: unexpected entry '{key}'")
    for key in ours:  # what their file has no entry for: masks, the base, μ/σ, whitening
        mapped.setdefault(key, ours[key])
    mapped["mu"], mapped["sigma"] = mu, std
    try:
        flow.load_state_dict(mapped, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{describe(state_path)}: tensors do not fit the layout: {err}"
        ) from None
    flow = flow.to(map_location).eval()
    if generator is not None:
        check_compatible(flow, generator, state_path)
    return flow
