"""The generator's resolution (from its config or checkpoint header) and the scales it can
reach."""

from __future__ import annotations

import json
from pathlib import Path

from rls.degradations.downsample import DEFAULT_KERNEL, pulse_padding
from rls.preflight.errors import PreflightError


def generator_resolution(source, **overrides) -> int | None:
    """The generator's output side read from its configuration, without building it.

    An ``img_resolution`` override, ``tiny``, a known checkpoint name, or a ``.safetensors``
    file written by ``rls.generators.save_generator`` (its metadata); ``None`` for anything
    else (a pickle tells its resolution only when loaded).
    """
    from rls.generators.download import KNOWN_CHECKPOINTS, shipped_path

    text = str(source)
    if shipped_path(text) is not None:
        text = str(shipped_path(text))
    if overrides.get("img_resolution") is not None:  # tiny, or a random-init official net
        return int(overrides["img_resolution"])
    if text == "tiny":
        from rls.generators.config import tiny_config

        return int(tiny_config()["img_resolution"])
    if text in KNOWN_CHECKPOINTS:
        return KNOWN_CHECKPOINTS[text].resolution
    path = Path(text).expanduser()
    if path.is_file() and path.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                config = json.loads((f.metadata() or {}).get("config", "{}"))
            return int(config["img_resolution"])
        except Exception:  # unreadable here: the loader reports it properly
            return None
    return None


def check_scale(scale, resolution: int, downsampler: str = DEFAULT_KERNEL) -> int:
    """The LR side ``resolution / scale``, or :class:`PreflightError` naming ``scale``.

    The scale must divide the generator's resolution, and the paper's bicubic downsampler
    reflect-pads by about 1.5·scale pixels on each side, which the HR image must exceed.
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise PreflightError(f"scale={scale}: must be a positive integer (8, 16, 32, 64)")
    usable = [s for s in range(1, resolution + 1) if _reachable(s, resolution, downsampler)]
    hint = f"scales that work with it: {', '.join(map(str, usable[1:] or usable))}"
    if resolution % scale:
        raise PreflightError(
            f"scale={scale}: the generator's resolution {resolution} is not divisible by "
            f"{scale}, so there is no integer LR size; {hint} (or use another generator)"
        )
    if not _reachable(scale, resolution, downsampler):
        _, pad = pulse_padding(scale)
        raise PreflightError(
            f"scale={scale}: the {downsampler} downsampler reflect-pads the HR image by {pad} "
            f"pixels at scale {scale}, which needs an image larger than {pad}x{pad}, but the "
            f"generator makes {resolution}x{resolution}; {hint} (or corruption.downsampler="
            "area/box)"
        )
    return resolution // scale


def _reachable(scale: int, resolution: int, downsampler: str) -> bool:
    if resolution % scale:
        return False
    if downsampler == "bicubic_pulse" and scale > 1:
        return pulse_padding(scale)[1] < resolution
    return True
