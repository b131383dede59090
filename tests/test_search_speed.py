"""Speed choices of the search hot path give the same numbers as the plain versions."""

from __future__ import annotations

import torch

from rls.search.loop import _make_optimizer


def test_search_adam_is_fused_and_makes_the_default_adam_update():
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(2, 18, 8, generator=gen), torch.randn(2, 3, 3, 4, 4, generator=gen)]
    grads = [[torch.randn(p.shape, generator=gen) for p in start] for _ in range(5)]
    ours = [p.clone().requires_grad_(True) for p in start]
    ref = [p.clone().requires_grad_(True) for p in start]
    opt = _make_optimizer("adam", ours, lr=0.5, betas=(0.9, 0.999), weight_decay=0.0)
    ref_opt = torch.optim.Adam(ref, lr=0.5, foreach=False)
    assert opt.defaults["fused"]  # ~10x faster on RLS+'s weight deltas (benchmarks/optimizer.py)
    for step, g in enumerate(grads):
        for o in (opt, ref_opt):  # the loop's schedules change the lr every step
            o.param_groups[0]["lr"] = 0.5 * (step + 1) / 5
        for p, q, gi in zip(ours, ref, g):
            p.grad, q.grad = gi.clone(), gi.clone()
        opt.step()
        ref_opt.step()
    for p, q in zip(ours, ref):
        assert torch.allclose(p, q, atol=1e-6, rtol=1e-6)
