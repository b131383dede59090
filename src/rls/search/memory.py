"""A batch that does not fit in memory: a clear error, or smaller chunks that do fit.

At 1024² a search holds the generator's activations for every image of the batch (RLS+
also a copy of the 30.4M generator weights per image, with Adam state), so a batch size
that works on one device runs out of memory on another. Images never interact in a
search (per-image losses and seeds), so running a batch in smaller chunks gives the same
per-image results: :func:`search_fitting` does that when allowed (``data.batch_size=auto``
in ``evaluate.py``) and otherwise raises :class:`BatchTooLargeError`, which names the
batch size and what to set instead, before any result of the batch is written.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rls.search.base import SearchResult
from rls.search.loop import search

_OOM_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory")


class BatchTooLargeError(RuntimeError):
    """The search of a batch ran out of memory; the message says what batch size to use."""


def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA and CPU allocation failures (``torch.OutOfMemoryError`` or the CPU
    allocator's RuntimeError), false for every other error."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err) for m in _OOM_MESSAGES)


def _release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def concat_results(parts: list[SearchResult]) -> SearchResult:
    """One result from the results of consecutive chunks of a batch (in order)."""
    if len(parts) == 1:
        return parts[0]

    def rows(values, dim: int):  # batch rows: dim 0 of extras, dim 1 of [steps, B] histories
        if isinstance(values[0], Tensor):
            return torch.cat(values, dim=dim)
        return [v for part in values for v in part]  # per-image lists (sample_status)

    extras = {k: rows([p.extras[k] for p in parts], 0) for k in parts[0].extras}
    history = {k: rows([p.history[k] for p in parts], 1) for k in parts[0].history}
    return SearchResult(
        images=torch.cat([p.images for p in parts]),
        latents=torch.cat([p.latents for p in parts]),
        history=history,
        status=[s for p in parts for s in p.status],
        steps=parts[0].steps,
        seconds=sum(p.seconds for p in parts),
        extras=extras,
        notes=parts[0].notes,
    )


def search_fitting(
    method,
    G,
    y: Tensor,
    D,
    seeds: Tensor,
    prior=None,
    perceptual=None,
    split: bool = False,
    chunk: int | None = None,
    callback=None,
) -> tuple[SearchResult, int]:
    """``search`` over the batch in chunks of at most ``chunk`` images (default: all).

    On an out-of-memory error the chunk is halved and the failed chunk rerun when
    ``split`` is true; otherwise :class:`BatchTooLargeError` says which batch size did not
    fit and what to set. Returns the result of the whole batch and the chunk size that ran.
    ``callback`` is :func:`search`'s, called for every chunk in turn.
    """
    B = y.shape[0]
    chunk = min(chunk or B, B)
    seeds = torch.as_tensor(seeds)
    parts: list[SearchResult] = []
    start = 0
    while start < B:
        stop = min(start + chunk, B)
        try:
            parts.append(
                search(method, G, y[start:stop], D, seeds[start:stop], prior, perceptual, callback)
            )
        except (RuntimeError, torch.OutOfMemoryError) as err:
            if not is_out_of_memory(err):
                raise
            _release(y.device)
            n = stop - start
            if not split or n == 1:
                what = "one image" if n == 1 else f"a batch of {n} images"
                hint = (
                    "a smaller generator or a device with more memory"
                    if n == 1
                    else f"data.batch_size={n // 2} or smaller, or data.batch_size=auto"
                    " (halves the batch until it fits and reports the size)"
                )
                first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
                raise BatchTooLargeError(
                    f"method {method.name}: {what} does not fit in {y.device.type} memory"
                    f" ({type(err).__name__}: {first}); use {hint}"
                ) from None
            chunk = max(1, n // 2)
            continue
        start = stop
    return concat_results(parts), chunk
