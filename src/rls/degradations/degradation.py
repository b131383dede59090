"""The forward model y = D(x) + n (method.md §1): HR corruptions, downsampler, LR corruptions.

One :class:`Degradation` is used twice: ``observe`` makes the LR input from an HR image
(the physical process, randomness seeded per image) and ``D(x)`` sits inside every search
loss (deterministic and differentiable; noise corruptions are the identity there).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from rls.degradations.corruptions import CORRUPTIONS, Corruption, build_corruption
from rls.degradations.downsample import DEFAULT_KERNEL, Downsample
from rls.seeding import derive_seeds


class Degradation(nn.Module):
    """Downsampler + corruption chain; corruptions act on their own side ("hr" or "lr").

    Order: the HR-side corruptions in list order, then the downsampler, then the LR-side
    corruptions in list order.
    """

    def __init__(
        self,
        scale: int,
        corruptions: Sequence[Corruption] = (),
        downsampler: str = DEFAULT_KERNEL,
        name: str | None = None,
    ):
        super().__init__()
        for c in corruptions:
            if not isinstance(c, Corruption):
                raise TypeError(
                    f"Degradation expects Corruption objects, got {type(c).__name__}; "
                    "use build_degradation to build from names"
                )
        self.downsample = Downsample(scale, downsampler)
        self.corruptions = nn.ModuleList(corruptions)
        self.name = name or ("+".join(c.name for c in corruptions) or "none")
        self._seed_salts = _seed_salts(corruptions)

    @property
    def scale(self) -> int:
        return self.downsample.scale

    @property
    def downsampler(self) -> str:
        return self.downsample.kernel

    def _side(self, side: str) -> list[tuple[Corruption, str]]:
        return [(c, s) for c, s in zip(self.corruptions, self._seed_salts) if c.side == side]

    def lr_size(self, hr_size):
        """LR size for an HR size (an int or an (H, W) pair); a clear error if not divisible."""
        sizes = (hr_size,) if isinstance(hr_size, int) else tuple(hr_size)
        for n in sizes:
            if n % self.scale:
                raise ValueError(
                    f"image size {n} is not divisible by the downsampling scale {self.scale}"
                )
        lr = tuple(n // self.scale for n in sizes)
        return lr[0] if isinstance(hr_size, int) else lr

    def apply_hr(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic parts applied to the HR image before downsampling (motion blur)."""
        for c, _ in self._side("hr"):
            x = c(x)
        return x

    def apply_lr(self, y: torch.Tensor) -> torch.Tensor:
        """The deterministic parts applied to the LR image after downsampling."""
        for c, _ in self._side("lr"):
            y = c(y)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """D(x) for the search loss: x in [0, 1], [B, C, H, W] -> [B, C, H/s, W/s]."""
        return self.apply_lr(self.downsample(self.apply_hr(x)))

    def observe(self, x: torch.Tensor, seeds) -> torch.Tensor:
        """The observed LR image of each HR image; image b's randomness comes from seeds[b] only.

        seeds: int64 tensor (or list) [B]. Each stochastic corruption draws from a seed derived
        from (seeds[b], its name, its occurrence), so the same image gets the same noise
        whatever else the chain holds.
        """
        seeds = torch.as_tensor(seeds, dtype=torch.int64).reshape(-1).cpu()
        if seeds.numel() != x.shape[0]:
            raise ValueError(f"observe: got {seeds.numel()} seeds for a batch of {x.shape[0]}")
        for c, salt in self._side("hr"):
            x = c.observe(x, derive_seeds(seeds, salt) if c.stochastic else seeds)
        y = self.downsample(x)
        for c, salt in self._side("lr"):
            y = c.observe(y, derive_seeds(seeds, salt) if c.stochastic else seeds)
        return y

    def describe(self) -> str:
        """One readable line for reports, e.g. ``x32 bicubic_pulse | lr: gaussian_noise(...)``."""
        parts = [f"x{self.scale} {self.downsampler}"]
        for side in ("hr", "lr"):
            chain = " -> ".join(c.describe() for c, _ in self._side(side))
            if chain:
                parts.append(f"{side}: {chain}")
        return f"{self.name}: " + " | ".join(parts)

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def _seed_salts(corruptions) -> list[str]:
    counts: dict[str, int] = {}
    salts = []
    for c in corruptions:
        k = counts.get(c.name, 0)
        counts[c.name] = k + 1
        salts.append(f"degradation:{c.name}:{k}")
    return salts


def _entries(corruption) -> list[tuple[str, dict]]:
    """Normalise ``"none"`` / a name / a mapping / a list of names or mappings to (name, params)."""
    if corruption is None or isinstance(corruption, str):
        names = [] if corruption in (None, "none", "") else [corruption]
        return [(n, {}) for n in names]
    if isinstance(corruption, Mapping):
        spec = dict(corruption)
        if "name" not in spec:
            raise ValueError(f"a corruption given as a mapping needs a 'name' key: {spec}")
        return [(spec.pop("name"), spec)]
    if isinstance(corruption, Sequence):
        out = []
        for item in corruption:
            out.extend(_entries(item))
        return out
    raise ValueError(f"corruption must be 'none', a name, a mapping or a list; got {corruption!r}")


def _accepts(name: str, key: str) -> bool:
    return key in inspect.signature(CORRUPTIONS[name].__init__).parameters


def build_degradation(
    scale: int,
    corruption=None,
    severity: int | None = None,
    downsampler: str = DEFAULT_KERNEL,
    *,
    corruptions=None,
    name: str | None = None,
    **params,
) -> Degradation:
    """Build a :class:`Degradation` from config values.

    corruption / corruptions (aliases; a config file uses ``corruptions:``): ``"none"``, a
    name from ``CORRUPTIONS``, a mapping ``{name: ..., **params}``, or a list of those
    (applied in order on their side). severity: None (the paper's settings) or 1..5, for
    every corruption without its own ``severity``. ``params`` (e.g. ``sigma=0.05``,
    ``side="hr"``) go to every corruption that takes them; a parameter that none takes is
    an error. ``name`` labels the degradation in reports.
    """
    if corruption is not None and corruptions is not None:
        raise ValueError("give either 'corruption' or 'corruptions', not both")
    entries = _entries(corruptions if corruptions is not None else corruption)
    for key in params:
        if not any(_accepts(n, key) for n, _ in entries):
            names = ", ".join(n for n, _ in entries) or "none"
            raise ValueError(f"parameter {key!r} is not taken by any corruption in [{names}]")
    built = []
    for entry_name, entry_params in entries:
        if entry_name not in CORRUPTIONS:
            raise ValueError(
                f"unknown corruption {entry_name!r}; choose one of "
                f"{', '.join(CORRUPTIONS)} (or 'none')"
            )
        shared = {k: v for k, v in params.items() if _accepts(entry_name, k)}
        merged = {"severity": severity, **shared, **entry_params}
        built.append(build_corruption(entry_name, **merged))
    return Degradation(scale, built, downsampler=downsampler, name=name)
