"""Which iterate RLS and RLS+ return (method.md §3-4), as configs/method/*.yaml declare it:
RLS the lowest-loss iterate among those scored before an update (sr_boost.py), RLS+ the
image rendered at its last step, before that step's update (sr_boost_ada.py); and the
switches that change either rule."""

import dataclasses
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rls.degradations import build_degradation
from rls.flows import WFlow, sample_w
from rls.generators import load_generator
from rls.search import build_method, search
from rls.search.losses import to_unit

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "method"
FEW = 2048  # mapped codes averaged for RLS's start (the authors: 1e6); not a selection rule


@pytest.fixture(scope="module")
def G():
    return load_generator("tiny")


@pytest.fixture(scope="module")
def problem(G):
    torch.manual_seed(0)
    prior = WFlow(G.w_dim, transforms=2, hidden=(16, 16))
    prior = prior.fit_standardisation(sample_w(G, 1000, seed=0)).eval()
    D = build_degradation(8)
    with torch.no_grad():
        z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(5))
        y = D(to_unit(G(z)).clamp(0, 1))
    return D, y, torch.tensor([7, 8]), prior


def from_config(name, **overrides):
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{name}.yaml"))
    cfg.pop("_target_")
    if "anchor" in overrides:
        overrides["anchor"] = {**cfg["anchor"], **overrides["anchor"]}
    return build_method(cfg.pop("name"), **{**cfg, **overrides})


def run_recording(method, G, problem, stage_name):
    """Search with ``method``; also return the loss of the iterate ``stage_name`` handed
    on, recomputed from its variables, and the image they render."""
    D, y, seeds, prior = problem
    seen = {}

    def stages(ctx):
        out = []
        for stage in method.build_stages(ctx):
            if stage.name == stage_name:

                def finish(ctx, v, stage=stage, inner=stage.finish):
                    with torch.no_grad():
                        r = stage.render(ctx, v)
                        seen["total"] = sum(stage.losses(ctx, v, r).values())
                        seen["image"] = to_unit(r.image).clamp(0, 1)
                    if inner is not None:
                        inner(ctx, v)

                stage = dataclasses.replace(stage, finish=finish)
            out.append(stage)
        return out

    result = search(dataclasses.replace(method, stages=stages), G, y, D, seeds, prior=prior)
    return result, seen


def test_rls_returns_its_best_iterate_scored_before_an_update(G, problem):
    rls = from_config("rls", steps=6, lr=0.05, start_samples=FEW)
    result, chosen = run_recording(rls, G, problem, "rls")
    history = result.history["rls/total"]  # [steps, B]: each iterate, scored before its update
    assert history.shape == (6, 2)
    torch.testing.assert_close(chosen["total"], history.min(0).values, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.images, chosen["image"], rtol=0, atol=1e-6)
    assert (history.argmin(0) != 5).any()  # the best is not simply the last iterate


def test_rls_score_final_lets_the_iterate_after_the_last_update_compete(G, problem):
    """With a constant schedule, k steps + score_final see exactly the iterates that k + 1
    steps without it score: the same best iterate."""
    D, y, seeds, prior = problem
    common = dict(lr=0.05, schedule="constant", start_samples=FEW)
    after = from_config("rls", steps=5, score_final=True, **common)
    before = from_config("rls", steps=6, **common)
    default = from_config("rls", steps=5, **common)
    a, b, c = (search(m, G, y, D, seeds, prior=prior) for m in (after, before, default))
    torch.testing.assert_close(a.images, b.images, rtol=0, atol=1e-6)
    assert not torch.allclose(a.images, c.images, atol=1e-4)  # here the last one wins


RLS_PLUS = dict(anchor=dict(steps=3, start_samples=FEW), lr=0.3, schedule="constant")


def test_rls_plus_returns_the_image_rendered_before_its_last_update(G, problem):
    plus = from_config("rls_plus", steps=6, **RLS_PLUS)
    result, chosen = run_recording(plus, G, problem, "rls_plus")
    history = result.history["rls_plus/total"]
    assert history.shape == (6, 2)
    torch.testing.assert_close(chosen["total"], history[-1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.images, chosen["image"], rtol=0, atol=1e-6)
    assert (history.argmin(0) != 5).any()  # not the best iterate: the last scored one


def test_rls_plus_output_after_last_update_is_one_more_update(G, problem):
    """``output: after_last_update``: k steps return what k + 1 steps render before their
    last update (constant schedules: the same trajectory)."""
    D, y, seeds, prior = problem
    after = from_config("rls_plus", steps=5, output="after_last_update", **RLS_PLUS)
    before = from_config("rls_plus", steps=6, **RLS_PLUS)
    default = from_config("rls_plus", steps=5, **RLS_PLUS)
    a, b, c = (search(m, G, y, D, seeds, prior=prior) for m in (after, before, default))
    torch.testing.assert_close(a.images, b.images, rtol=0, atol=1e-6)
    assert not torch.allclose(a.images, c.images, atol=1e-4)
