"""Faster generators on the same device: ``torch.compile``, channels-last and precision.

    G = accelerate(G, compile=True, precision="bf16-mixed", channels_last=False)

Every search renders through ``G.synthesis`` (RLS, W+, PULSE, ...; RLS+ through
``functional_call`` of it under ``vmap``, one set of weights per image), so the settings
apply to its ``forward`` and reach every method unchanged:

- ``compile``: ``torch.compile`` of the synthesis network (inductor). The first render of
  each batch shape compiles (forward at the first render, backward at the first gradient:
  minutes on a CPU, seconds to a minute on a GPU); later batches and images of the run
  reuse it. A batch of another size (the last one of a run) compiles once more.
  Results equal the eager ones to float32 rounding.
- ``precision``: ``"32-true"`` (default, the authors'); ``"tf32"``: float32 with TF32
  matrix units for matmuls and convolutions (CUDA, Ampere or newer); ``"bf16-mixed"``:
  the synthesis runs under bfloat16 autocast and returns float32, while the losses, the
  flow prior and the optimisers stay in float32. Half precision (``16-mixed``,
  ``16-true``, ``bf16-true``) is refused, see :data:`REFUSED`.
- ``channels_last``: the synthesis weights and activations in NHWC memory format (helps
  convolutions on GPUs with tensor cores; the numbers are the same).

Tolerances of the equivalence tests (tests/test_speed.py, tiny generator on a CPU):
compiled vs eager images within 1e-4 (max abs, in [0, 1]); channels-last within 1e-5;
bf16-mixed within 0.05 max abs per pixel of one render, and the restored PSNR within
0.5 dB after a short search (bfloat16 keeps 8 bits of mantissa).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

PRECISIONS = ("32-true", "tf32", "bf16-mixed")
REFUSED = {
    "16-mixed": "float16 overflows in StyleGAN2's modulated convolutions (NVIDIA's code clamps "
    "and runs only the last layers in fp16) and the search has no gradient scaler",
    "16-true": "the optimised latents, noise maps and RLS+ weight deltas would be float16: "
    "Adam's 1e-4 steps vanish below its resolution",
    "bf16-true": "the optimised latents, noise maps and RLS+ weight deltas would be bfloat16: "
    "Adam's 1e-4 steps vanish below its 8-bit mantissa",
    "16": "see 16-mixed",
    "bf16": "see bf16-true",
}


def check_precision(precision: str | int | None) -> str:
    """The precision setting, or a clear error for one that is unknown or unsafe here."""
    value = "32-true" if precision in (None, 32, "32") else str(precision)
    if value in REFUSED:
        raise ValueError(
            f"trainer.precision={value} is refused for the search: {REFUSED[value]}. "
            f"Use one of {', '.join(PRECISIONS)} (bf16-mixed: the generator under bfloat16 "
            "autocast, everything optimised in float32)"
        )
    if value not in PRECISIONS:
        raise ValueError(f"trainer.precision={value}: expected one of {', '.join(PRECISIONS)}")
    return value


def accelerate(
    G: nn.Module,
    compile: bool = False,
    precision: str | None = "32-true",
    channels_last: bool = False,
    compile_options: dict | None = None,
) -> nn.Module:
    """Apply the settings to ``G`` (in place; returns it), before or after moving it to its
    device. ``compile_options``: extra ``torch.compile`` keyword arguments (e.g.
    ``{"mode": "max-autotune"}``)."""
    precision = check_precision(precision)
    S = G.synthesis
    if precision == "tf32":  # process-wide switches of CUDA; no effect on other devices
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    forward = S.forward
    if channels_last:
        S.to(memory_format=torch.channels_last)  # the 4-d weights; convolutions follow them
    if precision == "bf16-mixed":
        forward = _autocast(forward)
    if compile:
        forward = torch.compile(forward, **(compile_options or {}))
    S.forward = forward
    S.speed_settings = {"compile": compile, "precision": precision, "channels_last": channels_last}
    S.compile_options = compile_options or {}
    return G


def compiled_like(S: nn.Module, fn):
    """``fn`` compiled (once per network, cached on it) when ``S`` was compiled by
    :func:`accelerate`, else ``fn``. For code that calls S in a way its compiled forward
    does not reach, e.g. under ``torch.func.vmap`` (RLS+'s per-image weights)."""
    if not getattr(S, "speed_settings", {}).get("compile"):
        return fn
    cache = S.__dict__.setdefault("_compiled_fns", {})
    if fn not in cache:
        cache[fn] = torch.compile(fn, **S.compile_options)
    return cache[fn]


def _autocast(forward):
    @functools.wraps(forward)
    def run(ws, *args, **kwargs):
        with torch.autocast(ws.device.type, dtype=torch.bfloat16):
            image = forward(ws, *args, **kwargs)
        return image.float()

    return run
