"""CUDA against CPU at the paper's size: one RLS and one RLS+ step on FFHQ config-f 1024².

Runs only with a CUDA device (``pytest -m gpu``; ``scripts/gpu_check.sh`` runs it). Same
seeds, same inputs, TF32 off: the losses of both steps and the images after them agree to
float32 tolerance (per-image draws are made on the CPU and moved, so they are identical).
"""

from __future__ import annotations

import pytest
import torch

from rls.degradations import build_degradation
from rls.flows import WFlow, sample_w
from rls.generators.make_random import make_random
from rls.search import build_method, search

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def setup():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    G = make_random("ffhq1024", seed=0, calibration_samples=0)
    prior = WFlow(G.w_dim, hidden=(2 * G.w_dim,) * 2)
    prior = prior.fit_standardisation(sample_w(G, 4096, seed=1)).eval()
    D = build_degradation(8)
    y = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    return G, prior, D, y


def _run(method, setup, device):
    G, prior, D, y = setup
    G, prior, D = (m.to(device) for m in (G, prior, D))
    result = search(method, G, y.to(device), D, torch.tensor([11, 12]), prior=prior)
    return result.images.cpu(), result.history["total"].cpu()


@pytest.mark.parametrize(
    "method",
    [
        build_method("rls", steps=1),
        build_method("rls_plus", anchor={"steps": 1}, steps=1),
    ],
    ids=["rls", "rls_plus"],
)
def test_one_step_on_cuda_matches_cpu_at_config_f(setup, method):
    img_cpu, loss_cpu = _run(method, setup, torch.device("cpu"))
    img_gpu, loss_gpu = _run(method, setup, torch.device("cuda"))
    assert torch.allclose(loss_gpu, loss_cpu, rtol=1e-3, atol=1e-4)
    assert (img_gpu - img_cpu).abs().mean() < 1e-3
    assert (img_gpu - img_cpu).abs().max() < 5e-2
