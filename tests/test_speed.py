"""The speed settings (rls.speed): the same results faster, unsafe precisions refused.

Tolerances (documented in rls.speed): compiled vs eager 1e-4 max abs in [0, 1];
channels-last 1e-5; bf16-mixed 0.05 per pixel of one render, 0.5 dB of restored PSNR."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rls.degradations import build_degradation
from rls.flows import WFlow, sample_w
from rls.generators import load_generator
from rls.metrics import psnr
from rls.search import build_method, search
from rls.speed import accelerate, check_precision


def _render(G, seed=0):
    ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(seed)), None)
    with torch.no_grad():
        return G.synthesis(ws, noise_mode="const")


@pytest.mark.parametrize("value", ["16-mixed", "16-true", "bf16-true", "16", "bf16"])
def test_half_precisions_are_refused_with_the_reason(value):
    with pytest.raises(ValueError, match=f"trainer.precision={value} is refused") as error:
        check_precision(value)
    assert "bf16-mixed" in str(error.value)  # what to use instead


def test_known_precisions_pass_and_unknown_ones_are_named():
    assert check_precision(None) == check_precision(32) == "32-true"
    assert check_precision("bf16-mixed") == "bf16-mixed"
    with pytest.raises(ValueError, match="trainer.precision=fp8: expected one of 32-true"):
        check_precision("fp8")


def test_channels_last_renders_the_same_image():
    eager = _render(load_generator("tiny"))
    G = accelerate(load_generator("tiny"), channels_last=True)
    convs = [p for p in G.synthesis.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert convs and all(not p.is_contiguous() for p in convs)  # NHWC weights
    fast = _render(G)
    assert (fast - eager).abs().max() < 1e-5


def test_bf16_autocast_renders_close_in_float32_and_restores_as_well():
    G, G16 = load_generator("tiny"), accelerate(load_generator("tiny"), precision="bf16-mixed")
    eager, half = _render(G), _render(G16)
    assert half.dtype == torch.float32
    diff = (half - eager).abs().max().item()
    assert 1e-6 < diff < 0.05  # bfloat16 really ran, and stays close
    prior = WFlow(G.w_dim, family="maf_paper", hidden=(64, 64))
    prior = prior.fit_standardisation(sample_w(G, 1024, seed=1)).eval()
    hr = (_render(G, seed=5)[:1] + 1) / 2
    D = build_degradation(8)
    y = D(hr)
    method = build_method("rls", steps=20, start="w_avg")
    out = [search(method, g, y, D, torch.arange(1), prior=prior).images for g in (G, G16)]
    gap = (psnr(out[0], hr) - psnr(out[1], hr)).abs().item()
    assert gap < 0.5


@pytest.mark.slow
def test_compiled_generator_gives_the_eager_search_results_for_rls_and_rls_plus():
    """torch.compile of the synthesis: the RLS step and the RLS+ step (per-image weights
    under vmap, through functional_call of the compiled forward) give the eager results."""
    G, Gc = load_generator("tiny"), accelerate(load_generator("tiny"), compile=True)
    prior = WFlow(G.w_dim, family="maf_paper", hidden=(64, 64))
    prior = prior.fit_standardisation(sample_w(G, 1024, seed=1)).eval()
    D = build_degradation(8)
    y = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    method = build_method("rls_plus", anchor={"steps": 3, "start": "w_avg"}, steps=3)
    eager, compiled = (search(method, g, y, D, torch.arange(2), prior=prior) for g in (G, Gc))
    assert (compiled.images - eager.images).abs().max() < 1e-4  # RLS+ output
    anchor = compiled.extras["rls_images"] - eager.extras["rls_images"]
    assert anchor.abs().max() < 1e-4  # the RLS anchor
    assert getattr(Gc.synthesis.forward, "_torchdynamo_orig_callable", None) is not None


def test_evaluate_refuses_half_precision_before_loading_and_bf16_runs_apart(tmp_path):
    from hydra import compose, initialize_config_dir

    import evaluate

    configs = str(Path(evaluate.__file__).resolve().parent / "configs")
    with initialize_config_dir(config_dir=configs, version_base="1.3"):
        base = ["logger=none", f"run_dir={tmp_path / 'run'}", "generator.source=missing"]
        cfg = compose("evaluate", [*base, "trainer.precision=16-mixed"])
        with pytest.raises(ValueError, match="trainer.precision=16-mixed is refused"):
            evaluate.evaluate(cfg)  # before the (missing) generator is looked for
        assert not (tmp_path / "run").exists()
        plain, bf16, compiled = (
            compose("evaluate", extra)
            for extra in ([], ["trainer.precision=bf16-mixed"], ["speed.compile=true"])
        )
    assert evaluate.run_name(plain) != evaluate.run_name(bf16)  # other results, other dir
    assert evaluate.run_name(plain) == evaluate.run_name(compiled)  # the same results
