"""RLS+ ``constraint`` (method.md §4): a short search under ``latent``, ``weights`` and
``both`` keeps every budget that constraint promises, and only those."""

import dataclasses
import math

import pytest
import torch

from rls.degradations import build_degradation
from rls.generators import load_generator
from rls.search import build_method, search
from rls.search.losses import to_unit

RADIUS = 0.05  # latent rows within RADIUS·√w_dim (ℓ1) of the anchor
WEIGHT_RADIUS = 1e-3  # each weight delta within RADIUS·WEIGHT_RADIUS·‖θ0_t‖₁ (ℓ1)
PREFIX = "dtheta."


@pytest.fixture(scope="module")
def G():
    return load_generator("tiny")


@pytest.fixture(scope="module")
def problem(G):
    D = build_degradation(8)
    with torch.no_grad():
        z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(5))
        y = D(to_unit(G(z)).clamp(0, 1))
    return D, y, torch.tensor([7, 8])


def recording_rls_plus_output(method):
    """``method`` with the variables its RLS+ stage returns recorded (weight deltas too)."""
    seen = {}

    def stages(ctx):
        out = []
        for stage in method.build_stages(ctx):
            if stage.name == "rls_plus":
                inner = stage.finish

                def finish(ctx, v, inner=inner):
                    seen.update({k: t.detach().clone() for k, t in v.items()})
                    if inner is not None:
                        inner(ctx, v)

                stage = dataclasses.replace(stage, finish=finish)
            out.append(stage)
        return out

    return dataclasses.replace(method, stages=stages), seen


def budgets(G, problem, constraint):
    """Run RLS+ under ``constraint``; return each budget's use (1 = on its boundary):
    the latent rows' ℓ1 distance to the anchor, and every weight tensor's ℓ1 delta."""
    D, y, seeds = problem
    method = build_method(
        "rls_plus",
        anchor=dict(steps=2, lambda_logp=0.0, lambda_pn=0.0),
        steps=4,
        lr=0.1,
        lr_weights=1e-2,  # large, so that an unprojected delta leaves its small ball
        constraint=constraint,
        radius=RADIUS,
        weight_radius=WEIGHT_RADIUS,
    )
    method, seen = recording_rls_plus_output(method)
    result = search(method, G, y, D, seeds)
    assert result.status == ["ok", "ok"]
    latent_l1 = (result.latents - result.extras["rls_latents"]).abs().sum(-1)  # [B, L]
    latent_use = latent_l1 / (RADIUS * math.sqrt(G.w_dim))
    weight_use = {}
    for name, p in G.synthesis.named_parameters():
        delta = seen[PREFIX + name].reshape(len(seeds), -1).abs().sum(1)  # [B]
        budget = RADIUS * WEIGHT_RADIUS * p.detach().abs().sum()
        if budget > 0:
            weight_use[name] = delta / budget
        else:  # a tensor that is zero in θ0 has no budget: it must stay put
            weight_use[name] = torch.where(delta > 0, torch.inf, 0.0)
    return latent_use, weight_use


def test_latent_constraint_keeps_the_rows_in_their_ball_and_leaves_weights_free(G, problem):
    latent_use, weight_use = budgets(G, problem, "latent")
    assert latent_use.max() <= 1 + 1e-3
    assert latent_use.max() > 0.5  # the ball binds
    assert max(u.max() for u in weight_use.values()) > 1  # the weights are not constrained


def test_weights_constraint_keeps_every_delta_in_its_ball_and_leaves_the_latent_free(G, problem):
    latent_use, weight_use = budgets(G, problem, "weights")
    worst = {name: u.max().item() for name, u in weight_use.items()}
    assert max(worst.values()) <= 1 + 1e-3, worst
    assert max(worst.values()) > 0.5  # the balls bind
    assert latent_use.max() > 1  # the latent is not constrained


def test_both_keeps_the_latent_and_every_weight_budget(G, problem):
    latent_use, weight_use = budgets(G, problem, "both")
    worst = {name: u.max().item() for name, u in weight_use.items()}
    assert latent_use.max() <= 1 + 1e-3 and latent_use.max() > 0.5
    assert max(worst.values()) <= 1 + 1e-3, worst
    assert max(worst.values()) > 0.5
