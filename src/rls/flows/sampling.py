"""Samples of W streamed from a frozen mapping network (method.md §2: no dataset on disk)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


def _device_of(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def iter_w(
    G: nn.Module, n: int, seed: int, batch_size: int = 4096, device=None
) -> Iterator[torch.Tensor]:
    """Yield batches of w = G.mapping(z), z ~ N(0, I), ``[b, w_dim]``, n in total.

    z is drawn on the CPU from ``seed``, so the same (seed, n, batch_size) gives the same
    samples on every device.
    """
    if n < 0 or batch_size < 1:
        raise ValueError(f"need n >= 0 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    device = torch.device(device) if device is not None else _device_of(G.mapping)
    gen = torch.Generator().manual_seed(int(seed))
    done = 0
    while done < n:
        b = min(batch_size, n - done)
        z = torch.randn(b, G.z_dim, generator=gen).to(device)
        ws = G.mapping(z, None)
        # without truncation or style mixing every W+ row is the same w
        yield ws[:, 0] if ws.ndim == 3 else ws
        done += b


def sample_w(G: nn.Module, n: int, seed: int, batch_size: int = 4096, device=None) -> torch.Tensor:
    """``[n, w_dim]`` mapping samples (see ``iter_w``)."""
    chunks = list(iter_w(G, n, seed, batch_size, device))
    if not chunks:
        return torch.empty(0, G.w_dim, device=device)
    return torch.cat(chunks)
