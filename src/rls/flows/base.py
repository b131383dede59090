"""The shared interface of every prior on W (method.md §2): density, Gaussianising map,
sampling, and safetensors checkpoints that carry their config in the metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

PRIOR_KEY = "rls_prior"
CONFIG_KEY = "config"

_REGISTRY: dict[str, type[Prior]] = {}


class Prior(nn.Module):
    """A density on raw W vectors ``[..., w_dim]``.

    Subclasses implement ``log_prob`` (raw W, every Jacobian included, so NLLs of all
    priors are comparable), ``to_gaussian`` (the map f to N(0, I)), ``sample`` and
    ``config`` (the constructor arguments, JSON-serialisable).
    """

    kind: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.kind:
            _REGISTRY[cls.kind] = cls

    def __init__(self, w_dim: int):
        super().__init__()
        if int(w_dim) < 1:
            raise ValueError(f"w_dim must be a positive integer, got {w_dim}")
        self.w_dim = int(w_dim)

    def config(self) -> dict:
        return {"w_dim": self.w_dim}

    def log_prob(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_gaussian(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def log_prob_and_gaussian(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_prob(w), to_gaussian(w))``; flows compute both in one pass (RLS needs both
        terms every step)."""
        return self.log_prob(w), self.to_gaussian(w)

    def nll(self, w: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood in nats per w vector."""
        return -self.log_prob(w).mean()

    def check_w(self, w: torch.Tensor) -> torch.Tensor:
        """Raise a clear error when the last dimension is not ``w_dim``."""
        if w.ndim == 0 or w.shape[-1] != self.w_dim:
            raise ValueError(
                f"{type(self).__name__} expects w of shape [..., {self.w_dim}], "
                f"got {tuple(w.shape)}"
            )
        return w

    def save(self, path: str | Path, **metadata: str) -> Path:
        """Write the state and config (JSON in the safetensors metadata) to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {PRIOR_KEY: self.kind, CONFIG_KEY: json.dumps(self.config())}
        meta.update({k: str(v) for k, v in metadata.items()})
        save_file(tensors, str(path), metadata=meta)
        return path

    @classmethod
    def load(
        cls, path: str | Path, generator: nn.Module | None = None, map_location="cpu"
    ) -> Prior:
        """Rebuild a saved prior. ``Prior.load`` dispatches on the stored kind; a subclass
        refuses another kind. With ``generator``, its ``w_dim`` must match (else a
        ``ValueError`` naming the file and both dims)."""
        kind, config, tensors = read_prior_file(path)
        if kind not in _REGISTRY:
            raise ValueError(f"{path}: unknown prior kind {kind!r}; known: {sorted(_REGISTRY)}")
        target = _REGISTRY[kind]
        if cls is not Prior and not issubclass(target, cls):
            raise ValueError(f"{path}: holds a {target.__name__}, not a {cls.__name__}")
        prior = target(**config)
        try:
            prior.load_state_dict(tensors, strict=True)
        except RuntimeError as err:
            raise ValueError(f"{path}: tensors do not match the stored config: {err}") from err
        prior = prior.to(map_location)
        if generator is not None:
            check_compatible(prior, generator, path)
        return prior.eval()


def read_prior_file(path: str | Path) -> tuple[str, dict, dict[str, torch.Tensor]]:
    """(kind, config, tensors) of a prior checkpoint, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prior checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    if PRIOR_KEY not in meta or CONFIG_KEY not in meta:
        raise ValueError(
            f"{path}: safetensors file has no prior metadata ({PRIOR_KEY!r}, {CONFIG_KEY!r}); "
            "was it written by Prior.save?"
        )
    return meta[PRIOR_KEY], json.loads(meta[CONFIG_KEY]), tensors


def check_compatible(prior: Prior, G: nn.Module, path: str | Path | None = None) -> None:
    """Raise ``ValueError`` when a prior and a generator disagree on ``w_dim``."""
    g_dim = int(G.w_dim)
    if prior.w_dim != g_dim:
        where = f"{path}: " if path is not None else ""
        raise ValueError(
            f"{where}prior {type(prior).__name__} has w_dim={prior.w_dim} but the generator "
            f"has w_dim={g_dim}; train a flow for this generator (python train_flow.py)"
        )


def flatten_w(w: torch.Tensor, w_dim: int) -> torch.Tensor:
    """``[..., w_dim]`` -> ``[N, w_dim]`` (W+ rows become separate samples)."""
    return w.reshape(-1, w_dim)
