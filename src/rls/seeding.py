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


def derive_seeds(seeds, salt: str) -> torch.Tensor:
    """Per-image seeds for one purpose (``salt``), derived from image seeds ``[B]``."""
    return seeds_for([int(s) for s in torch.as_tensor(seeds).reshape(-1).tolist()], salt)


def _draw_per_seed(draw, seeds, shape, device, dtype) -> torch.Tensor:
    # One CPU generator per row, then moved: the same seed gives the same numbers on every
    # device and in every batch.
    rows = []
    for s in torch.as_tensor(seeds).tolist():
        g = torch.Generator().manual_seed(int(s))
        rows.append(draw(tuple(shape), generator=g, dtype=dtype))
    return torch.stack(rows).to(device)


def randn_per_seed(seeds, shape, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[B, *shape]`` standard normal draws, row b drawn from its own seed."""
    return _draw_per_seed(torch.randn, seeds, shape, device, dtype)


def rand_per_seed(seeds, shape, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[B, *shape]`` uniform [0, 1) draws, row b drawn from its own seed."""
    return _draw_per_seed(torch.rand, seeds, shape, device, dtype)
