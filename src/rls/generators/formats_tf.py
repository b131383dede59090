"""NVIDIA TensorFlow StyleGAN2 / StyleGAN2-ADA-TF pickles -> (config, state dict).

The pickle is a tuple ``(G, D, Gs)`` of ``dnnlib.tflib.network.Network`` objects (read as
:class:`TFNetwork`, plain data); ``Gs`` is the moving-average generator. Its ``static_kwargs``
give the config and its ``variables`` (plus those of its ``components``, prefixed by the
component name) give the weights, renamed below to the stylegan2-ada-pytorch names.

TF -> PyTorch conventions (the same as NVIDIA's ``legacy.py`` converter, tables written here):
dense weights are ``[in, out]`` (transposed); conv weights are ``[kh, kw, in, out]`` (-> ``[out,
in, kh, kw]``); the up-sampling conv and the resnet skip are stored for TF's transposed conv and
are spatially flipped; modulation biases are stored minus 1 (``bias_init=1`` in PyTorch); noise
inputs ``synthesis/noise{i}`` are ``[1, 1, r, r]`` in forward order.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from rls.generators.formats_common import CheckpointError, describe
from rls.generators.formats_nvidia import plain
from rls.generators.safe_unpickle import TFNetwork

log = logging.getLogger(__name__)

# TF static kwarg -> (where in the official config, default); None = accepted and ignored.
_KWARGS: dict[str, tuple[str, Any] | None] = {
    "latent_size": ("z_dim", 512),
    "label_size": ("c_dim", 0),
    "dlatent_size": ("w_dim", 512),
    "resolution": ("img_resolution", 1024),
    "num_channels": ("img_channels", 3),
    "mapping_layers": ("mapping_kwargs.num_layers", 8),
    "label_fmaps": ("mapping_kwargs.embed_features", None),
    "mapping_fmaps": ("mapping_kwargs.layer_features", None),
    "mapping_nonlinearity": ("mapping_kwargs.activation", "lrelu"),
    "mapping_lrmul": ("mapping_kwargs.lr_multiplier", 0.01),
    "w_avg_beta": ("mapping_kwargs.w_avg_beta", 0.995),
    "fmap_base": ("synthesis_kwargs.channel_base", 16384),  # x2: TF counts channels halved
    "fmap_max": ("synthesis_kwargs.channel_max", 512),
    "num_fp16_res": ("synthesis_kwargs.num_fp16_res", 0),
    "conv_clamp": ("synthesis_kwargs.conv_clamp", None),
    "architecture": ("synthesis_kwargs.architecture", "skip"),
    "resample_kernel": ("synthesis_kwargs.resample_filter", [1, 3, 3, 1]),
    "use_noise": ("synthesis_kwargs.use_noise", True),
    "nonlinearity": ("synthesis_kwargs.activation", "lrelu"),
    "truncation_psi": None,
    "truncation_cutoff": None,
    "style_mixing_prob": None,
    "structure": None,
}


def tf_generator_config(static_kwargs: dict, source: str | os.PathLike | None = None) -> dict:
    """The official Generator kwargs from a TF generator's ``static_kwargs``."""
    name = describe(source)
    static_kwargs = plain(static_kwargs)
    unknown = sorted(set(static_kwargs) - set(_KWARGS))
    if unknown:
        raise CheckpointError(f"{name}: unknown TensorFlow generator kwarg(s) {unknown}")
    config: dict[str, Any] = {"mapping_kwargs": {}, "synthesis_kwargs": {}}
    for tf_name, target in _KWARGS.items():
        if target is None:
            continue
        path, default = target
        value = static_kwargs.get(tf_name, default)
        if tf_name == "fmap_base":
            value = value * 2
        if tf_name == "w_avg_beta" and value is None:
            value = 1
        group, _, key = path.rpartition(".")
        (config[group] if group else config)[key] = value
    return config


def collect_variables(net: TFNetwork, prefix: str = "") -> dict[str, np.ndarray]:
    """All variables of a TF network and its components, named ``component/.../var``."""
    out: dict[str, np.ndarray] = {}
    for name, value in net.state.get("variables") or []:
        out[prefix + name] = np.asarray(value)
    for name, comp in (net.state.get("components") or {}).items():
        if not isinstance(comp, TFNetwork):
            raise CheckpointError(f"component '{prefix}{name}' is not a TF network")
        out.update(collect_variables(comp, f"{prefix}{name}/"))
    return out


def _dense(v):
    return v.T


def _conv(v):
    return v.transpose(3, 2, 0, 1)


def _flipped_conv(v):
    return v[::-1, ::-1].transpose(3, 2, 0, 1)


def _mod_bias(v):
    return v + 1


def _same(v):
    return v


def _noise_target(index: str) -> str:
    """TF noise input ``noise{i}`` (forward order) -> the official layer holding it."""
    i = int(index)
    if i == 0:
        return "synthesis.b4.conv1.noise_const"
    res = 2 ** ((i + 5) // 2)
    return f"synthesis.b{res}.conv{0 if i % 2 else 1}.noise_const"


_LAYER_PARTS = {
    "weight": ("weight", None),
    "bias": ("bias", _same),
    "noise_strength": ("noise_strength", _same),
    "mod_weight": ("affine.weight", _dense),
    "mod_bias": ("affine.bias", _mod_bias),
}
_LAYERS = {"Conv": ("conv1", _conv), "Conv0_up": ("conv0", _flipped_conv),
           "Conv1": ("conv1", _conv), "ToRGB": ("torgb", _conv)}  # fmt: skip

# (TF name pattern, official name template from the match, value transform)
_RULES: list[tuple[re.Pattern, Callable[[re.Match], str], Callable]] = [
    (re.compile(r"dlatent_avg"), lambda m: "mapping.w_avg", _same),
    (re.compile(r"mapping/Dense(\d+)/weight"), lambda m: f"mapping.fc{m[1]}.weight", _dense),
    (re.compile(r"mapping/Dense(\d+)/bias"), lambda m: f"mapping.fc{m[1]}.bias", _same),
    (re.compile(r"mapping/LabelEmbed/weight"), lambda m: "mapping.embed.weight", _dense),
    (re.compile(r"mapping/LabelEmbed/bias"), lambda m: "mapping.embed.bias", _same),
    (re.compile(r"synthesis/4x4/Const/const"), lambda m: "synthesis.b4.const", lambda v: v[0]),
    (re.compile(r"synthesis/noise(\d+)"), lambda m: _noise_target(m[1]), lambda v: v[0, 0]),
    (re.compile(r"synthesis/(\d+)x\1/Skip/weight"), lambda m: f"synthesis.b{m[1]}.skip.weight",
     _flipped_conv),
]  # fmt: skip


def _layer_rule(tf_name: str) -> tuple[str, Callable] | None:
    m = re.fullmatch(r"synthesis/(\d+)x\1/(Conv|Conv0_up|Conv1|ToRGB)/(\w+)", tf_name)
    if m is None or m[3] not in _LAYER_PARTS:
        return None
    res, layer, part = m[1], m[2], m[3]
    if layer == "Conv" and res != "4":
        return None
    target, weight_fn = _LAYERS[layer]
    key, fn = _LAYER_PARTS[part]
    return f"synthesis.b{res}.{target}.{key}", fn or weight_fn


def tf_state_dict(
    variables: dict[str, np.ndarray], source: str | os.PathLike | None = None
) -> dict[str, torch.Tensor]:
    """Rename and re-lay-out TF generator variables to stylegan2-ada-pytorch's state dict.

    Variables with no PyTorch counterpart (e.g. ``lod``) are skipped with a log line, as
    NVIDIA's converter does; a missing one is caught later by the strict key-set check.
    """
    out: dict[str, torch.Tensor] = {}
    skipped = []
    for tf_name, value in variables.items():
        rule = _layer_rule(tf_name)
        if rule is None:
            for pattern, target, fn in _RULES:
                m = pattern.fullmatch(tf_name)
                if m:
                    rule = (target(m), fn)
                    break
        if rule is None:
            skipped.append(tf_name)
            continue
        name, fn = rule
        array = np.array(fn(np.asarray(value, dtype=np.float32)), order="C")  # keeps 0-d
        out[name] = torch.from_numpy(array)
    if skipped:
        log.info("%s: TF variables without a PyTorch counterpart: %s", describe(source), skipped)
    return out


def read_nvidia_tf(data: Any, source: str | os.PathLike | None = None) -> tuple[dict, dict]:
    """``(config, state_dict)`` of ``Gs`` from an unpickled ``(G, D, Gs)`` TF pickle."""
    name = describe(source)
    if not (isinstance(data, tuple) and len(data) == 3 and isinstance(data[2], TFNetwork)):
        raise CheckpointError(f"{name}: expected a TF pickle (G, D, Gs) of dnnlib Networks")
    gs = data[2]
    version = gs.state.get("version", 0)
    if not isinstance(version, int) or version < 4:
        raise CheckpointError(f"{name}: TensorFlow pickle version {version} is too old (need >= 4)")
    config = tf_generator_config(gs.state.get("static_kwargs") or {}, source)
    try:
        variables = collect_variables(gs)
    except CheckpointError as err:
        raise CheckpointError(f"{name}: {err}") from None
    lod_layers = [n for n in variables if re.fullmatch(r"synthesis/ToRGB_lod\d+/.*", n)]
    if lod_layers:  # NVIDIA's legacy.py does not convert these either
        raise CheckpointError(
            f"{name}: per-LOD ToRGB layers ({lod_layers[0]}, ...): StyleGAN2 configs A-D are"
            " not supported (configs E/F, as published for FFHQ, are)"
        )
    res_log2 = math.log2(config["img_resolution"])
    if res_log2 != int(res_log2) or res_log2 < 2:
        raise CheckpointError(f"{name}: resolution {config['img_resolution']} is not a power of 2")
    return config, tf_state_dict(variables, source)
