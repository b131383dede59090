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


def load_generator(
    source: str = "tiny", random_init: bool = False, seed: int | None = None, **kwargs
) -> Generator:
    """A generator in eval mode from ``"tiny"`` (flat config overrides allowed, e.g.
    ``img_resolution=64``), a checkpoint path, or a known official checkpoint name.

    ``random_init=True`` with a known name (``ffhq-1024``, ...) builds that official
    architecture with random weights from ``seed`` (default 0) instead of loading the
    checkpoint: the real shapes and speed, offline (``rls.generators.make_random``)."""
    if str(source) == "tiny":
        if random_init:
            raise ValueError("random_init applies to known checkpoint names; tiny is random")
        return build_tiny(**kwargs) if seed is None else build_tiny(seed=seed, **kwargs)
    if random_init:
        from rls.generators.make_random import make_random

        return make_random(str(source), seed=seed or 0, **kwargs)
    # Imported lazily: checkpoint formats and downloads are only needed for real checkpoints.
    from rls.generators.checkpoints import load_checkpoint

    return load_checkpoint(source, **kwargs)


def save_generator(G: Generator, path, **kwargs) -> None:
    """Save ``G`` as safetensors with its config in the metadata (see ``checkpoints``)."""
    from rls.generators.checkpoints import save_generator as _save

    return _save(G, path, **kwargs)
