"""Per-image seeds, so results never depend on batch size, batch order or GPU count."""

from __future__ import annotations

import hashlib

import torch


def seed_from_id(image_id: str | int, salt: str = "") -> int:
    """A stable 63-bit seed for one image (and one purpose, via ``salt``)."""
    digest = hashlib.sha256(f"{salt}\x00{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def seeds_for(image_ids, salt: str = "") -> torch.Tensor:
    """Seeds for a batch of image ids as an int64 tensor ``[B]``."""
    return torch.tensor([seed_from_id(i, salt) for i in image_ids], dtype=torch.int64)


def randn_per_seed(seeds, shape, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[B, *shape]`` standard normal draws, row b drawn from its own seed.

    Drawn on the CPU and moved, so the same seed gives the same numbers on every device.
    """
    rows = []
    for s in torch.as_tensor(seeds).tolist():
        g = torch.Generator().manual_seed(int(s))
        rows.append(torch.randn(tuple(shape), generator=g, dtype=dtype))
    return torch.stack(rows).to(device)
