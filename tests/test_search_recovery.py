"""Must-show: on the tiny generator with generator-sampled targets at ×8, RLS
recovers the targets (HR PSNR above bicubic upsampling of the LR, high LR-PSNR), has a
lower flow NLL than unregularised W+ search on the same inputs, and RLS+ raises LR-PSNR
over RLS.

The tiny random-weight generator's per-layer noise dominates its images (the true w with
other noise maps is no closer to the target than bicubic upsampling), while a search can
only recover the latent; so these targets come from the tiny generator with its noise
strengths set to 0. The flow is a small MAF fitted here on mapped samples.
"""

import pytest
import torch
import torch.nn.functional as F

from rls.degradations import build_degradation
from rls.flows import WFlow, sample_w
from rls.generators import load_generator
from rls.search import build_method, search
from rls.search.losses import flow_nll, to_unit


@pytest.fixture(scope="module")
def G():
    G = load_generator("tiny")
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.zero_()
    return G


@pytest.fixture(scope="module")
def flow(G):
    """A small MAF fitted by maximum likelihood on 20k mapped w (a few seconds)."""
    torch.manual_seed(0)
    w = sample_w(G, 20000, seed=0)
    prior = WFlow(G.w_dim, transforms=3, hidden=(128, 128)).fit_standardisation(w)
    opt = torch.optim.Adam(prior.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(250):
        batch = w[torch.randint(0, len(w), (512,), generator=g)]
        loss = -prior.log_prob(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return prior.eval()


def psnr(a, b):
    return -10 * torch.log10((a - b).pow(2).flatten(1).mean(1))


def recovery(G, flow, n_images: int, rls_steps: int, plus_steps: int, starts: int = 1) -> dict:
    """Per-image HR/LR PSNR and flow NLL of bicubic, plain W+, RLS and RLS+."""
    D = build_degradation(8)
    z = torch.randn(n_images, G.z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        w_true = G.mapping(z, None)
        hr = to_unit(G.synthesis(w_true)).clamp(0, 1)
    y = D(hr)
    seeds = torch.arange(n_images)
    plain = dict(lambda_logp=0.0, lambda_pn=0.0, lambda_cross=0.0)  # the paper's w_A
    common = dict(steps=rls_steps, num_starts=starts)
    wplus = search(build_method("rls", **common, **plain), G, y, D, seeds, prior=flow)
    plus = search(
        build_method("rls_plus", anchor=common, steps=plus_steps),
        G, y, D, seeds, prior=flow,
    )  # fmt: skip
    rls_images, rls_latents = plus.extras["rls_images"], plus.extras["rls_latents"]
    bicubic = F.interpolate(y, scale_factor=8, mode="bicubic", align_corners=False).clamp(0, 1)
    with torch.no_grad():
        out = {
            "hr_psnr": {
                "bicubic": psnr(bicubic, hr),
                "wplus": psnr(wplus.images, hr),
                "rls": psnr(rls_images, hr),
                "rls_plus": psnr(plus.images, hr),
            },
            "lr_psnr": {
                "wplus": psnr(D(wplus.images), y),
                "rls": psnr(D(rls_images), y),
                "rls_plus": psnr(D(plus.images), y),
            },
            "nll": {
                "true": flow_nll(flow, w_true),
                "wplus": flow_nll(flow, wplus.latents),
                "rls": flow_nll(flow, rls_latents),
            },
        }
    for group, values in out.items():
        for name, v in values.items():
            print(f"{group:8s} {name:9s} " + " ".join(f"{x:9.2f}" for x in v.tolist()))
    return out


def assert_must_show(out: dict, bicubic_margin_db: float, wplus_margin_db: float, min_lr_psnr):
    hr, lr, nll = out["hr_psnr"], out["lr_psnr"], out["nll"]
    assert hr["rls"].mean() > hr["bicubic"].mean() + bicubic_margin_db  # recovers the targets
    assert hr["rls"].mean() > hr["wplus"].mean() + wplus_margin_db  # the prior is what helps
    assert lr["rls"].mean() > min_lr_psnr  # consistent with the observation
    assert (nll["rls"] < nll["wplus"]).all()  # the prior keeps the code in W's bulk
    assert (lr["rls_plus"] > lr["rls"]).all()  # RLS+ gains fidelity over its anchor


def test_rls_recovers_targets_fast(G, flow):
    """A shorter run on 3 images (the default suite; ~15 s on one core). Run with ``-s``
    to print the per-image numbers."""
    out = recovery(G, flow, n_images=3, rls_steps=150, plus_steps=20)
    # measured: RLS 24.7 dB, bicubic 21.4, W+ 23.7; RLS LR-PSNR 29.5
    assert_must_show(out, bicubic_margin_db=2.5, wplus_margin_db=0.5, min_lr_psnr=26.0)


@pytest.mark.slow
def test_rls_recovers_targets_full(G, flow):
    """The authors' settings: RLS 500 steps, RLS+ 80 steps (×8), 4 images (~2 min)."""
    out = recovery(G, flow, n_images=4, rls_steps=500, plus_steps=80)
    # measured: RLS 30.0 dB, bicubic 21.3, W+ 25.2; RLS LR-PSNR 37.2
    assert_must_show(out, bicubic_margin_db=6.0, wplus_margin_db=3.0, min_lr_psnr=33.0)
