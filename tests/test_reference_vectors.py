"""Numerical equivalence with NVIDIA's stylegan2-ada-pytorch.

The vectors in tests/data/reference/ were made by running the official ``training/networks.py``
on CPU (see the README there; scripts/make_reference_vectors.py for the gradient and ``orig``
cases): weights in official naming, inputs, the expected W+ codes and images, and for the
newer cases the gradients of a fixed linear loss. Our network must load the weights with
``strict=True`` and match to 1e-4 (gradients: 1e-4 relative to their largest magnitude).
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from rls.generators import Generator, normalize_config

REFERENCE = Path(__file__).parent / "data" / "reference"
CASES = sorted(p.stem for p in REFERENCE.glob("*.safetensors"))
GRAD_CASES = ["orig16", "resnet16", "skip16_cond"]
TOL = 1e-4


def _load(name):
    with safe_open(REFERENCE / f"{name}.safetensors", framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    weights = {k[2:]: v for k, v in tensors.items() if k.startswith("G.")}
    G = Generator(**normalize_config(json.loads(meta["init_kwargs"]))).eval()
    G.load_state_dict(weights, strict=True)
    c = tensors["c"] if G.c_dim else None
    return G, tensors, c, float(meta["truncation_psi"]), int(meta["truncation_cutoff"])


def test_reference_cases_present():
    assert set(CASES) >= {"skip32", "resnet16_cond", *GRAD_CASES}
    archs = {b.architecture for n in CASES for b in _load(n)[0].synthesis.children()}
    assert archs == {"orig", "skip", "resnet"}


@pytest.mark.parametrize("name", CASES)
def test_mapping_matches_reference(name):
    G, t, c, psi, cutoff = _load(name)
    with torch.no_grad():
        ws1 = G.mapping(t["z"], c)
        ws7 = G.mapping(t["z"], c, truncation_psi=psi, truncation_cutoff=cutoff)
    assert (ws1 - t["ws_psi1"]).abs().max() <= TOL
    assert (ws7 - t["ws_psi07_cutoff3"]).abs().max() <= TOL


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("name", CASES)
def test_synthesis_matches_reference(name, fused):
    G, t, c, psi, cutoff = _load(name)
    kw = dict(fused_modconv=fused)
    with torch.no_grad():
        img_const = G.synthesis(t["ws_psi07_cutoff3"], noise_mode="const", **kw)
        img_none = G.synthesis(t["ws_psi1"], noise_mode="none", **kw)
        img_full = G(t["z"], c, truncation_psi=psi, truncation_cutoff=cutoff, **kw)
    assert (img_const - t["img_const_psi07_cutoff3"]).abs().max() <= TOL
    assert (img_none - t["img_none_psi1"]).abs().max() <= TOL
    assert (img_full - t["img_const_psi07_cutoff3"]).abs().max() <= TOL
    assert t["img_none_psi1"].std() > 0.05  # the vectors are not trivial


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("name", GRAD_CASES)
def test_gradients_match_reference(name, fused):
    """dL/d(ws) and dL/dθ for every parameter, L = sum(G.synthesis(ws) * R): the backward
    pass (modulation, demodulation, up-sampling filters, clamps, noise, mapping with
    truncation) is what every search differentiates through."""
    G, t, c, psi, cutoff = _load(name)
    ws = G.mapping(t["z"], c, truncation_psi=psi, truncation_cutoff=cutoff)
    ws.retain_grad()
    img = G.synthesis(ws, noise_mode="const", fused_modconv=fused)
    assert (img - t["img_const_psi07_cutoff3"]).abs().max() <= TOL
    (img * t["loss_weight"]).sum().backward()
    expected = {k[len("grad.G.") :]: v for k, v in t.items() if k.startswith("grad.G.")}
    grads = {k: p.grad for k, p in G.named_parameters()}
    assert set(grads) == set(expected)
    for key, ref in [("ws", t["grad_ws"]), *expected.items()]:
        ours = ws.grad if key == "ws" else grads[key]
        assert ref.abs().max() > 0, key  # the vectors are not trivial
        err = (ours - ref).abs().max() / ref.abs().max().clamp_min(1.0)
        assert err <= TOL, f"{name}: d loss / d {key} differs by {err:.2e} (relative)"
