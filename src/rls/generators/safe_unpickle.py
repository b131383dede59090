"""A restricted unpickler for NVIDIA network pickles: tensors and plain data, never code.

NVIDIA's stylegan2-ada-pytorch / stylegan3 pickles store each network as a
``torch_utils.persistence`` object whose reconstruction *executes the source code embedded in
the pickle*; the TensorFlow pickles store ``dnnlib.tflib.network.Network`` objects that would
rebuild a TF graph from embedded source. Here every global the pickle asks for is looked up in
an allow-list (modelled on ``torch/_weights_only_unpickler.py``) and mapped to a harmless
stand-in that returns plain data:

- ``torch_utils.persistence._reconstruct_persistent_obj`` -> :class:`PersistentObject`
  (class name + ``__dict__``; the embedded ``module_src`` is kept only as a SHA-256
  fingerprint, never executed);
- ``dnnlib.tflib.network.Network`` -> :class:`TFNetwork` (its ``__setstate__`` dict);
- ``dnnlib.util.EasyDict`` -> :class:`EasyDict` (a plain ``dict``);
- tensors: ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` with storages read by
  ``torch.load(weights_only=True)`` (what ``torch.storage._load_from_bytes`` holds);
- numpy arrays and scalars of non-object dtypes.

Anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen``, any other class) is
refused with a :class:`CheckpointError` naming the file and the global; nothing is executed.
"""

from __future__ import annotations

import _compat_pickle
import collections
import copyreg
import hashlib
import io
import os
import pickle
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import torch

from rls.generators.formats_common import CheckpointError, describe, refused_global

try:  # numpy >= 2 keeps the pickle helpers in numpy._core; older pickles name numpy.core.
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _np_multiarray


@dataclass
class PersistentObject:
    """A ``torch_utils.persistence`` network as plain data: what the pickle stored, unexecuted."""

    class_name: str
    state: dict
    module_src_sha256: str = ""
    version: int | None = None


class TFNetwork:
    """Stand-in for ``dnnlib.tflib.network.Network``: keeps the pickled state, builds nothing."""

    def __init__(self) -> None:
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("dnnlib.tflib.network.Network state is not a dict")
        self.state = dict(state)

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__.get("state", {})
        if name in state:
            return state[name]
        raise AttributeError(name)


class EasyDict(dict):
    """Stand-in for ``dnnlib.EasyDict``: a plain dict (attribute access is not needed here)."""

    def __setstate__(self, state: Any) -> None:  # a dict subclass may carry an empty __dict__
        return None


class _Refused(Exception):
    """Raised inside the unpickler for a global that is not allowed (becomes CheckpointError)."""

    def __init__(self, module: str, name: str, why: str = "not on the allow-list") -> None:
        super().__init__(module, name)
        self.module, self.name, self.why = module, name, why


def _persistent_object(meta: Any) -> PersistentObject:
    if not isinstance(meta, dict):
        raise pickle.UnpicklingError("persistent object metadata is not a dict")
    if meta.get("type") != "class":
        raise pickle.UnpicklingError(f"persistent object of type {meta.get('type')!r}")
    src = meta.get("module_src", "")
    src_bytes = src.encode("utf-8", "replace") if isinstance(src, str) else b""
    state = meta.get("state")
    return PersistentObject(
        class_name=str(meta.get("class_name")),
        state=dict(state) if isinstance(state, dict) else {},
        module_src_sha256=hashlib.sha256(src_bytes).hexdigest(),
        version=meta.get("version"),
    )


def _storage_from_bytes(data: Any):
    """``torch.storage._load_from_bytes``, but weights-only (the bytes are a nested torch.save)."""
    if not isinstance(data, bytes | bytearray):
        raise pickle.UnpicklingError("tensor storage payload is not bytes")
    try:
        return torch.load(io.BytesIO(bytes(data)), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        if name := refused_global(err):
            module, _, attr = name.rpartition(".")
            raise _Refused(module, attr, "inside a tensor storage record") from None
        raise


def _check_hooks(backward_hooks: Any) -> None:
    if backward_hooks:  # hooks would be callables; official pickles never hold any
        raise pickle.UnpicklingError("tensor with backward hooks")


def _tensor(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    if not isinstance(storage, torch.storage.TypedStorage | torch.UntypedStorage):
        raise pickle.UnpicklingError(f"tensor storage of type {type(storage).__name__}")
    _check_hooks(backward_hooks)
    if metadata:
        raise pickle.UnpicklingError("tensor with extra metadata")
    return torch._utils._rebuild_tensor_v2(
        storage, storage_offset, tuple(size), tuple(stride), False, collections.OrderedDict()
    )


def _parameter(data, requires_grad, backward_hooks, state=None):
    """A Parameter becomes its plain tensor: only the values matter here."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("parameter data is not a tensor")
    _check_hooks(backward_hooks)
    return data


def _np_dtype(spec, align=False, copy=True):
    dtype = np.dtype(spec, align, copy)
    if dtype.hasobject:
        raise pickle.UnpicklingError("numpy object dtype (could hold arbitrary objects)")
    return dtype


class _NDArrayToken:
    """What ``numpy.ndarray`` resolves to: only a marker for ``_reconstruct``'s subtype
    argument, so the pickle can never call the ndarray constructor itself."""


def _np_reconstruct(subtype, shape, dtype):
    if subtype is not _NDArrayToken:
        raise pickle.UnpicklingError(f"numpy array subtype {subtype!r}")
    return _np_multiarray._reconstruct(np.ndarray, shape, dtype)


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise pickle.UnpicklingError("numpy scalar of an object dtype")
    return _np_multiarray.scalar(dtype, data)


def _np_frombuffer(buffer, dtype, shape, order):
    """Protocol-5 numpy arrays: raw bytes + dtype + shape."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or order not in ("C", "F"):
        raise pickle.UnpicklingError("numpy buffer of an object dtype")
    return np.frombuffer(buffer, dtype).reshape(shape, order=order).copy(order=order)


def _codecs_encode(text, encoding="utf-8"):
    """Protocol-2 pickles spell ``bytes`` as ``_codecs.encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode with unexpected arguments")
    return text.encode("latin1")


_STANDINS = (TFNetwork, EasyDict)


def _reconstructor(cls, base, state):
    """``copyreg._reconstructor`` (protocol 0/1 objects), limited to the stand-in classes."""
    if cls not in _STANDINS or base not in (object, dict):
        raise pickle.UnpicklingError(f"copyreg._reconstructor for {cls!r}")
    return copyreg._reconstructor(cls, base, state)


_NP_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _codecs_encode,
    ("torch._utils", "_rebuild_tensor_v2"): _tensor,
    ("torch._utils", "_rebuild_parameter"): _parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_object,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("dnnlib.tflib.network", "Network"): TFNetwork,
    ("numpy", "ndarray"): _NDArrayToken,
    ("numpy", "dtype"): _np_dtype,
    **{(m, "_reconstruct"): _np_reconstruct for m in _NP_CORE},
    **{(m, "scalar"): _np_scalar for m in _NP_CORE},
    **{(m, "_frombuffer"): _np_frombuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only answers from :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names of protocol <= 2 pickles (pickle's own fix_imports lives in the
        # find_class we override; those module names never exist in Python 3).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(module, name) from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("<persistent id>", repr(pid)[:60], "persistent ids are not used here")


def safe_load_pickle(source: str | os.PathLike | BinaryIO, name: str | None = None) -> Any:
    """Unpickle ``source`` (a path or a binary file) with the restricted unpickler.

    Raises CheckpointError naming the file: for a refused global (nothing was executed), or a
    truncated / corrupt pickle.
    """
    label = describe(name if name is not None else source)
    try:
        if isinstance(source, str | os.PathLike):
            with open(source, "rb") as f:
                return RestrictedUnpickler(f).load()
        return RestrictedUnpickler(source).load()
    except _Refused as refused:
        raise CheckpointError(
            f"{label}: refused to unpickle: it asks for the global"
            f" '{refused.module}.{refused.name}' ({refused.why}). Only tensors, numpy arrays"
            " and plain data of StyleGAN2 network pickles are read; nothing in the file was"
            " executed."
        ) from None
    except (EOFError, pickle.UnpicklingError) as err:
        if not isinstance(err, EOFError) and "truncated" not in str(err):
            raise CheckpointError(f"{label}: corrupt network pickle ({err})") from None
        raise CheckpointError(
            f"{label}: the file ends early (truncated download?): delete it and fetch it again"
        ) from None
    except CheckpointError:
        raise
    except Exception as err:  # corrupt opcode stream, bad tensor payload, refused numpy dtype...
        raise CheckpointError(
            f"{label}: not a readable network pickle ({type(err).__name__}: {err})"
        ) from None
