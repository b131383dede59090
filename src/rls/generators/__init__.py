"""StyleGAN2 generators: the network, its configurations, and one loading entry point.

``load_generator("tiny")`` builds the small seeded generator of tests and the demo; any other
source (a checkpoint path or a known official name) goes to
``rls.generators.checkpoints.load_checkpoint``.
"""

from __future__ import annotations

from rls.generators.config import build_generator, build_tiny, normalize_config, tiny_config
from rls.generators.networks import (
    Generator,
    MappingNetwork,
    SynthesisBlock,
    SynthesisLayer,
    SynthesisNetwork,
)

__all__ = [
    "Generator",
    "MappingNetwork",
    "SynthesisBlock",
    "SynthesisLayer",
    "SynthesisNetwork",
    "build_generator",
    "build_tiny",
    "load_generator",
    "normalize_config",
    "save_generator",
    "tiny_config",
]


def load_generator(source: str = "tiny", **kwargs) -> Generator:
    """A generator in eval mode from ``"tiny"`` (flat config overrides allowed, e.g.
    ``img_resolution=64``), a checkpoint path, or a known official checkpoint name."""
    if str(source) == "tiny":
        return build_tiny(**kwargs)
    # Imported lazily: checkpoint formats and downloads are only needed for real checkpoints.
    from rls.generators.checkpoints import load_checkpoint

    return load_checkpoint(source, **kwargs)


def save_generator(G: Generator, path, **kwargs) -> None:
    """Save ``G`` as safetensors with its config in the metadata (see ``checkpoints``)."""
    from rls.generators.checkpoints import save_generator as _save

    return _save(G, path, **kwargs)
