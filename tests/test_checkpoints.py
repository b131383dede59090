"""Checkpoint formats, built synthetically (no NVIDIA code), and the unsafe / broken cases.

Each official format is re-created here from a tiny generator: the NVIDIA pickles with
stand-in classes registered under the official module names (``torch_utils.persistence``,
``dnnlib.util``, ``dnnlib.tflib.network``) for the duration of one test, the rosinality file
with its own key names. Loading must give the same images as the generator they came from.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from rls.generators import build_tiny, load_generator, save_generator
from rls.generators.checkpoints import (
    CheckpointError,
    convert_checkpoint,
    detect_format,
    load_checkpoint,
    read_checkpoint,
)
from rls.generators.formats_rosinality import rosinality_name
from rls.generators.formats_tf import read_nvidia_tf, tf_generator_config
from rls.generators.safe_unpickle import TFNetwork, safe_load_pickle

MARKER_NAME = "EXECUTED"
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def G():
    return build_tiny(img_resolution=16, w_dim=32, z_dim=32)


def _images(G, seed=0, psi=0.7):
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G(z, truncation_psi=psi, truncation_cutoff=2, noise_mode="const")


def assert_same_generator(A, B):
    assert A.init_kwargs == B.init_kwargs or A.num_ws == B.num_ws
    sa, sb = A.state_dict(), B.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=1e-6, msg=k)
    torch.testing.assert_close(_images(A), _images(B), rtol=0, atol=1e-5)


def _fake_module(monkeypatch, name: str, **attrs) -> types.ModuleType:
    """Register a stand-in module under an official name (this test only)."""
    parent, _, child = name.rpartition(".")
    if parent and parent not in sys.modules:
        _fake_module(monkeypatch, parent)
    module = types.ModuleType(name)
    for key, value in attrs.items():
        value.__module__ = name
        value.__qualname__ = key
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)
    if parent:
        monkeypatch.setattr(sys.modules[parent], child, module, raising=False)
    return module


# --------------------------------------------------------------------------- NVIDIA PyTorch


def nvidia_torch_pickle(G, path, monkeypatch, marker, protocol=3):
    """Pickle ``G`` the way stylegan2-ada-pytorch does: persistent objects holding __dict__s.

    The stand-in ``_reconstruct_persistent_obj`` writes ``marker``: if a loader ever calls it
    (i.e. runs pickle's own reconstruction), the test sees the file.
    """

    def _reconstruct_persistent_obj(meta):
        open(marker, "w").close()
        return None

    class EasyDict(dict):
        pass

    _fake_module(
        monkeypatch,
        "torch_utils.persistence",
        _reconstruct_persistent_obj=_reconstruct_persistent_obj,
    )
    _fake_module(monkeypatch, "dnnlib.util", EasyDict=EasyDict)

    class Persistent:
        def __init__(self, class_name, state):
            self.meta = dict(
                type="class",
                version=6,
                module_src=f"open({str(marker)!r}, 'w').close()\n",
                class_name=class_name,
                state=state,
            )

        def __reduce__(self):
            return (_reconstruct_persistent_obj, (self.meta,))

    def as_persistent(module, init_kwargs=None):
        params = collections.OrderedDict(
            (n, torch.nn.Parameter(p.detach().clone())) for n, p in module._parameters.items()
        )
        if "bias" in module._parameters and module._parameters["bias"] is None:
            params["bias"] = None
        state = {
            "training": False,
            "_parameters": params,
            "_buffers": collections.OrderedDict(
                (n, b.detach().clone()) for n, b in module._buffers.items()
            ),
            "_non_persistent_buffers_set": set(),
            "_backward_hooks": collections.OrderedDict(),
            "_forward_hooks": collections.OrderedDict(),
            "_modules": collections.OrderedDict(
                (n, as_persistent(m)) for n, m in module._modules.items()
            ),
            "_init_args": (),
            "_init_kwargs": EasyDict(init_kwargs or {}),
            "weight_gain": np.float64(0.125),  # numpy scalars appear in the real state
            "activation": "lrelu",
        }
        return Persistent(type(module).__name__, state)

    kwargs = EasyDict(G.init_kwargs)
    kwargs["mapping_kwargs"] = EasyDict(kwargs["mapping_kwargs"])
    if "synthesis_kwargs" in kwargs:
        kwargs["synthesis_kwargs"] = EasyDict(kwargs["synthesis_kwargs"], num_fp16_res=2)
    g = as_persistent(G, kwargs)
    data = {
        "G": g,
        "D": Persistent("Discriminator", {"_parameters": {}, "_modules": {}}),
        "G_ema": g,
        "augment_pipe": None,
        "training_set_kwargs": EasyDict(path="ffhq.zip", resolution=G.img_resolution),
    }
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    return path


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_nvidia_torch_pickle_loads_exactly_and_runs_no_code(G, tmp_path, monkeypatch, protocol):
    marker = tmp_path / MARKER_NAME
    path = nvidia_torch_pickle(G, tmp_path / "network-snapshot.pkl", monkeypatch, marker, protocol)
    assert detect_format(path) == "pickle"
    loaded = load_checkpoint(path)
    assert not marker.exists(), "the pickle's reconstruction code was executed"
    assert loaded.init_kwargs["synthesis_kwargs"]["num_fp16_res"] == 2  # read, compute stays fp32
    assert not loaded.training
    assert_same_generator(loaded, G)


def test_stylegan3_repo_flat_kwargs_are_nested(G, tmp_path, monkeypatch):
    """stylegan3's networks_stylegan2.Generator takes synthesis kwargs at top level."""
    marker = tmp_path / MARKER_NAME
    flat = dict(G.init_kwargs)
    synthesis = flat.pop("synthesis_kwargs")
    flat.update(synthesis, fused_modconv_default="inference_only")
    G_flat = build_tiny(img_resolution=16, w_dim=32, z_dim=32)  # same seed: same weights as G
    G_flat.init_kwargs = flat
    path = nvidia_torch_pickle(G_flat, tmp_path / "stylegan2-ffhq-16x16.pkl", monkeypatch, marker)
    config, _, kind = read_checkpoint(path)
    assert kind == "nvidia-torch" and "channel_base" not in config
    assert config["synthesis_kwargs"]["channel_base"] == synthesis["channel_base"]
    assert_same_generator(load_checkpoint(path), G)
    assert not marker.exists()


# --------------------------------------------------------------------------- NVIDIA TensorFlow


def to_tf_variables(G):
    """The test's own inverse of the TF->PyTorch table: official names -> TF (G, mapping,
    synthesis) variable lists. Dense [out,in] -> [in,out]; conv [o,i,k,k] -> [k,k,i,o], the
    up-sampling conv also spatially flipped; modulation bias stored minus 1."""
    sd = {k: v.numpy() for k, v in G.state_dict().items()}
    top = [("dlatent_avg", sd["mapping.w_avg"])]
    mapping, synthesis = [], [("lod", np.float32(0))]
    i = 0
    while f"mapping.fc{i}.weight" in sd:
        mapping += [(f"Dense{i}/weight", sd[f"mapping.fc{i}.weight"].T)]
        mapping += [(f"Dense{i}/bias", sd[f"mapping.fc{i}.bias"])]
        i += 1
    noise = 0
    for r in G.synthesis.block_resolutions:
        p = f"synthesis.b{r}."
        layers = (
            [("conv1", "Conv", False)]
            if r == 4
            else [("conv0", "Conv0_up", True), ("conv1", "Conv1", False)]
        )
        if r == 4:
            synthesis.append(("4x4/Const/const", sd[p + "const"][None]))
        for name, tf, flip in layers:
            q, t = p + name + ".", f"{r}x{r}/{tf}/"
            w = sd[q + "weight"].transpose(2, 3, 1, 0)
            synthesis += [
                (t + "weight", w[::-1, ::-1] if flip else w),
                (t + "bias", sd[q + "bias"]),
                (t + "noise_strength", sd[q + "noise_strength"]),
                (t + "mod_weight", sd[q + "affine.weight"].T),
                (t + "mod_bias", sd[q + "affine.bias"] - 1),
                (f"noise{noise}", sd[q + "noise_const"][None, None]),
            ]
            noise += 1
        q, t = p + "torgb.", f"{r}x{r}/ToRGB/"
        synthesis += [
            (t + "weight", sd[q + "weight"].transpose(2, 3, 1, 0)),
            (t + "bias", sd[q + "bias"]),
            (t + "mod_weight", sd[q + "affine.weight"].T),
            (t + "mod_bias", sd[q + "affine.bias"] - 1),
        ]
    return top, mapping, synthesis


def write_tf_pickle(path, monkeypatch, marker, top, mapping, synthesis, static):
    """A ``(G, D, Gs)`` pickle of stand-in ``dnnlib.tflib.network.Network`` objects whose
    state is what the real class pickles; unpickling them for real would touch ``marker``."""

    class Network:
        def __init__(self, name, variables, components=None, static_kwargs=None):
            self.state = dict(
                version=4,
                name=name,
                static_kwargs=static_kwargs or {},
                components=components or {},
                build_module_src=f"open({str(marker)!r}, 'w').close()\n",
                build_func_name="G_main",
                variables=variables,
            )

        def __getstate__(self):
            return self.state

        def __setstate__(self, state):  # what the real class does: rebuild the TF graph
            open(marker, "w").close()

    _fake_module(monkeypatch, "dnnlib.tflib.network", Network=Network)
    comps = {
        "mapping": Network("G_mapping", mapping),
        "synthesis": Network("G_synthesis", synthesis),
    }
    gs = Network("G", top, comps, static)
    with open(path, "wb") as f:
        pickle.dump((Network("G", []), Network("D", []), gs), f, protocol=3)
    return path


def tf_pickle(G, path, monkeypatch, marker):
    cfg = G.init_kwargs
    static = dict(
        latent_size=cfg["z_dim"],
        dlatent_size=cfg["w_dim"],
        resolution=cfg["img_resolution"],
        num_channels=cfg["img_channels"],
        label_size=0,
        mapping_layers=cfg["mapping_kwargs"]["num_layers"],
        fmap_base=cfg["synthesis_kwargs"]["channel_base"] // 2,
        fmap_max=cfg["synthesis_kwargs"]["channel_max"],
        truncation_psi=0.5,
    )
    return write_tf_pickle(path, monkeypatch, marker, *to_tf_variables(G), static)


def test_tf_pickle_loads_exactly_and_runs_no_code(G, tmp_path, monkeypatch):
    marker = tmp_path / MARKER_NAME
    path = tf_pickle(G, tmp_path / "stylegan2-tiny-config-f.pkl", monkeypatch, marker)
    config, _, kind = read_checkpoint(path)
    assert kind == "nvidia-tf"
    assert (
        config["synthesis_kwargs"]["channel_base"]
        == G.init_kwargs["synthesis_kwargs"]["channel_base"]
    )
    loaded = load_checkpoint(path)
    assert not marker.exists()
    assert_same_generator(loaded, G)


@pytest.fixture(scope="module")
def vectors():
    """Made by running NVIDIA's legacy.py TF converter and rosinality's model.py (channels
    shrunk) locally on random weights; only tensors were kept (see the file's keys)."""
    out: dict = {}
    path = DATA / "checkpoint_reference_vectors.safetensors"
    with safe_open(path, framework="pt") as f:
        out["tf_static_kwargs"] = json.loads(f.metadata()["tf_static_kwargs"])
        for key in f.keys():  # noqa: SIM118 (not a dict)
            group, _, name = key.partition("/")
            if name:
                out.setdefault(group, {})[name] = f.get_tensor(key)
            else:
                out[key] = f.get_tensor(key)
    return out


def test_tf_conversion_matches_nvidia_legacy_converter(vectors, tmp_path, monkeypatch):
    marker = tmp_path / MARKER_NAME
    parts = {"": [], "mapping": [], "synthesis": []}
    for name, value in vectors["tf_variables"].items():
        comp, _, local = name.partition("/")  # "mapping/Dense0/weight"; "dlatent_avg" is G's
        if not local:
            comp, local = "", name
        parts[comp].append((local, value.numpy()))
    path = write_tf_pickle(
        tmp_path / "tf.pkl", monkeypatch, marker, parts[""], parts["mapping"],
        parts["synthesis"], vectors["tf_static_kwargs"],
    )  # fmt: skip
    config, state_dict, _ = read_checkpoint(path)
    expected = vectors["tf_expected_state_dict"]
    assert set(state_dict) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(state_dict[key], value, rtol=0, atol=0, msg=key)
    G = load_checkpoint(path)
    with torch.no_grad():
        images = G(vectors["tf_z"], truncation_psi=0.7, truncation_cutoff=2, noise_mode="const")
    torch.testing.assert_close(images, vectors["tf_images"], rtol=0, atol=1e-4)
    assert not marker.exists()


def test_rosinality_matches_rosinality_model(vectors, tmp_path):
    path = tmp_path / "rosinality.pt"
    ckpt = {"g_ema": vectors["rosinality_g_ema"], "latent_avg": vectors["rosinality_latent_avg"]}
    torch.save(ckpt, path)
    G = load_checkpoint(path)
    with torch.no_grad():
        images = G(vectors["rosinality_z"], truncation_psi=0.7, noise_mode="const")
    torch.testing.assert_close(images, vectors["rosinality_images"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_arrays_and_scalars_unpickle_for_every_protocol(tmp_path, protocol):
    data = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "f": np.asfortranarray(np.ones((2, 3), dtype=np.float64)),
        "s": np.float64(0.5),
        "i": np.int64(3),
    }
    path = tmp_path / "arrays.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    out = safe_load_pickle(path)
    for key, value in data.items():
        assert np.array_equal(out[key], value) and out[key].dtype == value.dtype, key


def test_old_or_progressive_tf_networks_are_refused_by_name():
    def net(version, variables=()):
        n = TFNetwork()
        n.__setstate__(dict(version=version, static_kwargs={}, variables=list(variables)))
        return n

    with pytest.raises(CheckpointError, match=r"old\.pkl: TensorFlow pickle version 3 is too old"):
        read_nvidia_tf((net(3), net(3), net(3)), "old.pkl")
    lod = net(4, [("synthesis/ToRGB_lod0/weight", np.zeros(1))])
    with pytest.raises(CheckpointError, match=r"cfgb\.pkl: per-LOD ToRGB.*configs A-D"):
        read_nvidia_tf((lod, lod, lod), "cfgb.pkl")


def test_tf_unknown_kwarg_is_named():
    with pytest.raises(CheckpointError, match=r"g\.pkl.*unknown TensorFlow.*'style_weird'"):
        tf_generator_config({"resolution": 64, "style_weird": 1}, "g.pkl")


# --------------------------------------------------------------------------- rosinality


def to_rosinality(G):
    """The test's own official -> rosinality key table (the inverse of the loader's)."""
    sd = G.state_dict()
    out = {}
    n_layers = G.init_kwargs["mapping_kwargs"]["num_layers"]
    for i in range(n_layers):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    out["input.input"] = sd["synthesis.b4.const"][None]
    kernel = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1]))
    kernel = kernel / kernel.sum() * 4  # rosinality make_kernel, times up² for Blur/Upsample

    def layer(src, dst, up=False):
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        if up:
            out[f"{dst}.conv.blur.kernel"] = kernel
        if f"{src}.noise_strength" in sd:
            out[f"{dst}.noise.weight"] = sd[f"{src}.noise_strength"].reshape(1)
            out[f"{dst}.activate.bias"] = sd[f"{src}.bias"]
        else:
            out[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(1, -1, 1, 1)

    layer("synthesis.b4.conv1", "conv1")
    layer("synthesis.b4.torgb", "to_rgb1")
    noises = [sd["synthesis.b4.conv1.noise_const"]]
    for k, r in enumerate(G.synthesis.block_resolutions[1:]):
        layer(f"synthesis.b{r}.conv0", f"convs.{2 * k}", up=True)
        layer(f"synthesis.b{r}.conv1", f"convs.{2 * k + 1}")
        layer(f"synthesis.b{r}.torgb", f"to_rgbs.{k}")
        out[f"to_rgbs.{k}.upsample.kernel"] = kernel
        noises += [sd[f"synthesis.b{r}.conv0.noise_const"], sd[f"synthesis.b{r}.conv1.noise_const"]]
    for i, n in enumerate(noises):
        out[f"noises.noise_{i}"] = n[None, None]
    return out


def test_rosinality_name_table_examples():
    assert rosinality_name("style.1.weight")[0] == "mapping.fc0.weight"
    assert rosinality_name("convs.0.conv.weight")[0] == "synthesis.b8.conv0.weight"
    assert rosinality_name("convs.3.noise.weight")[0] == "synthesis.b16.conv1.noise_strength"
    assert rosinality_name("to_rgbs.2.bias")[0] == "synthesis.b32.torgb.bias"
    assert rosinality_name("noises.noise_0")[0] == "synthesis.b4.conv1.noise_const"
    assert rosinality_name("noises.noise_3")[0] == "synthesis.b16.conv0.noise_const"
    assert rosinality_name("convs.0.conv.blur.kernel") is None


def test_rosinality_pt_loads_exactly(G, tmp_path):
    path = tmp_path / "stylegan2-tiny.pt"
    ns = argparse.Namespace(size=16, latent=32, n_mlp=4)  # train.py stores its args
    torch.save({"g_ema": to_rosinality(G), "latent_avg": G.mapping.w_avg, "args": ns}, path)
    assert detect_format(path) == "torch"
    _, _, kind = read_checkpoint(path)
    assert kind == "rosinality"
    loaded = load_checkpoint(path, mapping_lr_multiplier=0.01)
    assert_same_generator(loaded, G)
    legacy = tmp_path / "old-torch.pt"  # torch < 1.6 files (non-zip serialization)
    torch.save({"g_ema": to_rosinality(G)}, legacy, _use_new_zipfile_serialization=False)
    assert detect_format(legacy) == "torch"
    assert read_checkpoint(legacy)[1].keys() == read_checkpoint(path)[1].keys() - {"mapping.w_avg"}


def test_rosinality_without_latent_avg_estimates_it(G, tmp_path, caplog):
    path = tmp_path / "no_avg.pt"
    torch.save({"g_ema": to_rosinality(G)}, path)
    with caplog.at_level(logging.WARNING):
        loaded = load_checkpoint(path, w_avg_samples=2000)
    assert "latent_avg" in caplog.text and "no_avg.pt" in caplog.text
    # build_tiny sets w_avg to the mean of 4096 mapped z: the estimate must be close to it
    assert (loaded.mapping.w_avg - G.mapping.w_avg).norm() < 0.1 * G.mapping.w_avg.norm()


def test_rosinality_missing_and_wrong_keys_are_named(G, tmp_path):
    sd = to_rosinality(G)
    del sd["convs.1.activate.bias"]
    torch.save({"g_ema": sd, "latent_avg": G.mapping.w_avg}, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing\.pt.*missing 1 key.*b8\.conv1\.bias"):
        load_checkpoint(tmp_path / "missing.pt")
    sd = to_rosinality(G)
    sd["convs.9.mystery"] = torch.zeros(1)
    torch.save({"g_ema": sd}, tmp_path / "unknown.pt")
    with pytest.raises(CheckpointError, match=r"unknown\.pt.*unknown rosinality key.*mystery"):
        load_checkpoint(tmp_path / "unknown.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt.*without a rosinality 'g_ema'"):
        load_checkpoint(tmp_path / "other.pt")


# --------------------------------------------------------------------------- own format


def test_safetensors_roundtrip_keeps_config_and_weights(G, tmp_path):
    path = tmp_path / "g.safetensors"
    save_generator(G, path)
    assert detect_format(path) == "safetensors"
    assert not (tmp_path / "g.safetensors.part").exists()
    loaded = load_generator(str(path))
    assert loaded.init_kwargs == G.init_kwargs
    assert_same_generator(loaded, G)


def test_convert_any_format_to_safetensors(G, tmp_path, monkeypatch):
    marker = tmp_path / MARKER_NAME
    src = tf_pickle(G, tmp_path / "net.pkl", monkeypatch, marker)
    convert_checkpoint(src, tmp_path / "net.safetensors")
    config, _, kind = read_checkpoint(tmp_path / "net.safetensors")
    assert kind == "rls-safetensors"
    assert_same_generator(load_checkpoint(tmp_path / "net.safetensors"), G)


def test_safetensors_wrong_shapes_are_named(G, tmp_path):
    other = build_tiny(img_resolution=16, w_dim=32, z_dim=32, channel_max=32)
    other.init_kwargs = G.init_kwargs  # config says channel_max 64, tensors are 32 wide
    save_generator(other, tmp_path / "lies.safetensors")
    with pytest.raises(
        CheckpointError, match=r"lies\.safetensors: \d+ tensor\(s\) have the wrong shape"
    ):
        load_checkpoint(tmp_path / "lies.safetensors")


def test_foreign_safetensors_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors.*without rls generator metadata"
    ):
        load_checkpoint(tmp_path / "model.safetensors")


# --------------------------------------------------------------------------- unsafe and broken


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize(
    "func,global_name",
    [(os.system, "system"), (eval, "builtins.eval"), (exec, "builtins.exec")],
)
def test_malicious_pickle_is_refused_and_never_executed(tmp_path, func, global_name):
    marker = tmp_path / MARKER_NAME
    code = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w').close()"
    path = tmp_path / "ffhq.pkl"
    with open(path, "wb") as f:
        pickle.dump({"G_ema": _Evil(func, code)}, f)
    with pytest.raises(CheckpointError, match=rf"ffhq\.pkl: refused to unpickle.*{global_name}"):
        load_checkpoint(path)
    assert not marker.exists()


def test_subprocess_and_numpy_object_arrays_are_refused(tmp_path):
    import subprocess

    path = tmp_path / "popen.pkl"
    path.write_bytes(pickle.dumps(_Evil(subprocess.Popen, ["true"])))
    with pytest.raises(CheckpointError, match=r"popen\.pkl.*subprocess\.Popen"):
        load_checkpoint(path)
    path = tmp_path / "objects.pkl"
    path.write_bytes(pickle.dumps({"G_ema": np.array([print], dtype=object)}))
    with pytest.raises(CheckpointError, match=r"objects\.pkl.*object dtype"):
        load_checkpoint(path)


def test_truncated_files_give_clear_errors(G, tmp_path, monkeypatch):
    marker = tmp_path / MARKER_NAME
    full = nvidia_torch_pickle(G, tmp_path / "full.pkl", monkeypatch, marker).read_bytes()
    (tmp_path / "cut.pkl").write_bytes(full[: len(full) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pkl: the file ends early"):
        load_checkpoint(tmp_path / "cut.pkl")
    save_generator(G, tmp_path / "g.safetensors")
    data = (tmp_path / "g.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors: corrupt or truncated"):
        load_checkpoint(tmp_path / "cut.safetensors")
    torch.save({"g_ema": to_rosinality(G)}, tmp_path / "g.pt")
    data = (tmp_path / "g.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt: not a readable torch checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    assert not marker.exists()


def test_wrong_format_and_empty_files(tmp_path):
    (tmp_path / "notes.pkl").write_text("this is not a checkpoint at all\n")
    with pytest.raises(CheckpointError, match=r"notes\.pkl: unrecognised file format"):
        load_checkpoint(tmp_path / "notes.pkl")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt: 0 bytes"):
        load_checkpoint(tmp_path / "empty.pt")
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CheckpointError, match=r"list\.pkl: expected a network pickle with 'G_ema'"):
        load_checkpoint(tmp_path / "list.pkl")


def test_stylegan3_generator_is_refused_by_name(tmp_path, monkeypatch, G):
    marker = tmp_path / MARKER_NAME
    # A StyleGAN3 synthesis network holds an 'input' module instead of 'b4'.
    G3 = build_tiny(img_resolution=16, w_dim=32, z_dim=32)
    G3.synthesis.add_module("input", torch.nn.Identity())
    G3.synthesis._modules.pop("b4")
    path3 = nvidia_torch_pickle(G3, tmp_path / "sg3.pkl", monkeypatch, marker)
    with pytest.raises(CheckpointError, match=r"sg3\.pkl: G_ema is a StyleGAN3"):
        load_checkpoint(path3)
