"""The shared search loop on a toy linear 'generator' (no StyleGAN needed).

Checks the behaviour every method relies on: per-image independence within a batch,
reproducibility from seeds, best-iterate selection, NaN restarts, several starts and
several samples per input, and that the generator is left as it was.
"""

import torch
import torch.nn.functional as F
from torch import nn

from rls.search import Method, OptimGroup, Rendered, SearchContext, Stage, search
from rls.search.losses import lr_l1, to_unit

L, W_DIM, RES = 3, 8, 8


class ToyGenerator(nn.Module):
    """W+ [B, L, W_DIM] -> image [B, 1, RES, RES] in [-1, 1]."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(L * W_DIM, RES * RES)
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            self.net.weight.copy_(torch.randn(RES * RES, L * W_DIM, generator=g) * 0.3)
            self.net.bias.zero_()

    def forward(self, ws):
        return torch.tanh(self.net(ws.flatten(1))).view(-1, 1, RES, RES)


class Pool(nn.Module):
    def forward(self, x):
        return F.avg_pool2d(x, 2)


def toy_method(steps=30, select="best", starts=1, nan_seed=None, num_samples=1, attempts=3):
    def init(ctx):
        return {"w": ctx.randn((L, W_DIM), salt="start") * 0.5}

    def render(ctx, v):
        return Rendered(image=ctx.G(v["w"]), latents=v["w"])

    def losses(ctx, v, r):
        terms = {
            "l1": 10 * lr_l1(ctx.D, to_unit(r.image), ctx.y),
            "reg": 1e-3 * v["w"].pow(2).sum((1, 2)),
        }
        if nan_seed is not None:  # poison the images whose seed is nan_seed
            poison = (ctx.seeds == nan_seed).to(ctx.device)
            terms["l1"] = torch.where(poison, torch.nan, terms["l1"])
        return terms

    stage = Stage(
        name="toy",
        steps=steps,
        init=init,
        render=render,
        losses=losses,
        optim=[OptimGroup(vars=["w"], lr=0.1, schedule="linear1cycledrop")],
        select=select,
        starts=starts,
    )
    return Method(name="toy", stages=[stage], num_samples=num_samples, max_attempts=attempts)


def make_problem(B=4):
    G, D = ToyGenerator(), Pool()
    g = torch.Generator().manual_seed(123)
    w_true = torch.randn(B, L, W_DIM, generator=g) * 0.5
    with torch.no_grad():
        y = D(to_unit(G(w_true)))
    seeds = torch.arange(100, 100 + B, dtype=torch.int64)
    return G, D, y, seeds


def test_search_fits_and_reports_history_and_callback():
    G, D, y, seeds = make_problem()
    calls = []
    res = search(toy_method(), G, y, D, seeds, callback=lambda s, n, l: calls.append((s, n, l)))
    assert res.images.shape == (4, 1, RES, RES) and res.latents.shape == (4, L, W_DIM)
    assert 0 <= res.images.min() and res.images.max() <= 1
    assert res.status == ["ok"] * 4 and res.steps == 30
    assert res.history["total"].shape == (30, 4) and res.history["toy/l1"].shape == (30, 4)
    assert [c[0] for c in calls] == list(range(30)) and calls[0][1] == "toy"
    assert calls[0][2]["total"].shape == (4,)
    total = res.history["total"]
    assert (total[-1] < 0.5 * total[0]).all()  # the fit improves every image
    lr_err = (D(res.images) - y).abs().flatten(1).mean(1)
    assert (10 * lr_err <= total.min(0).values + 1e-5).all()  # best iterate, not worse


def test_best_iterate_beats_last_under_a_bad_schedule():
    """With a huge constant lr the last iterate wanders; 'best' keeps the lowest total."""
    G, D, y, seeds = make_problem()
    method = toy_method(steps=20)
    method.stages[0].optim = [OptimGroup(vars=["w"], lr=5.0)]
    best = search(method, G, y, D, seeds)
    method.stages[0].select = "last"
    last = search(method, G, y, D, seeds)

    def total(r):  # the toy loss, recomputed from the returned image and code
        return 10 * (D(r.images) - y).abs().flatten(1).mean(1) + 1e-3 * r.latents.pow(2).sum((1, 2))

    assert (total(best) <= total(last) + 1e-5).all() and (total(best) < total(last)).any()
    torch.testing.assert_close(
        total(best), best.history["total"].min(0).values.clamp(max=total(last))
    )


def test_batch_invariance_and_reproducibility():
    G, D, y, seeds = make_problem()
    batch = search(toy_method(), G, y, D, seeds)
    again = search(toy_method(), G, y, D, seeds)
    assert torch.equal(batch.images, again.images) and torch.equal(batch.latents, again.latents)
    for b in range(4):
        alone = search(toy_method(), G, y[b : b + 1], D, seeds[b : b + 1])
        torch.testing.assert_close(alone.latents[0], batch.latents[b], atol=1e-5, rtol=0)
        torch.testing.assert_close(alone.images[0], batch.images[b], atol=1e-5, rtol=0)
        torch.testing.assert_close(alone.history["total"][:, 0], batch.history["total"][:, b])


def test_nan_image_is_restarted_from_a_derived_seed_and_others_untouched():
    G, D, y, seeds = make_problem()
    clean = search(toy_method(), G, y, D, seeds)
    res = search(toy_method(nan_seed=int(seeds[2])), G, y, D, seeds)
    assert res.status == ["ok", "ok", "restarted", "ok"]
    assert torch.isfinite(res.images).all() and torch.isfinite(res.history["total"]).all()
    for b in (0, 1, 3):
        torch.testing.assert_close(res.images[b], clean.images[b], atol=1e-6, rtol=0)
    assert not torch.equal(res.latents[2], clean.latents[2])  # a new start


def test_image_that_stays_nan_is_failed_with_its_start_image():
    G, D, y, seeds = make_problem(B=2)
    always_nan = toy_method(nan_seed=int(seeds[0]), attempts=1)
    res = search(always_nan, G, y, D, seeds)
    assert res.status == ["failed", "ok"]
    assert torch.isfinite(res.images).all() and torch.isfinite(res.latents).all()
    w0 = toy_method().stages[0]  # the start image: G at the seeded initial code
    ctx = SearchContext(G=G, y=y[:1], D=D, seeds=seeds[:1])
    start = to_unit(G(w0.init(ctx)["w"])).clamp(0, 1)
    torch.testing.assert_close(res.images[0], start[0])


def test_several_starts_keep_the_best_per_image():
    G, D, y, seeds = make_problem()
    one = search(toy_method(steps=5), G, y, D, seeds)
    three = search(toy_method(steps=5, starts=3), G, y, D, seeds)
    assert three.history["total"].shape == (5, 4)
    best_one = one.history["total"].min(0).values
    best_three = three.history["total"].min(0).values
    assert (best_three <= best_one + 1e-6).all()  # start 0 is the 1-start run
    for b in range(4):  # and still batch-independent
        alone = search(toy_method(steps=5, starts=3), G, y[b : b + 1], D, seeds[b : b + 1])
        torch.testing.assert_close(alone.images[0], three.images[b], atol=1e-5, rtol=0)


def test_num_samples_gives_distinct_solutions_with_sample_zero_the_default():
    G, D, y, seeds = make_problem(B=2)
    single = search(toy_method(steps=10), G, y, D, seeds)
    multi = search(toy_method(steps=10, num_samples=3), G, y, D, seeds)
    assert multi.images.shape == single.images.shape
    assert multi.extras["samples"].shape == (2, 3, 1, RES, RES)
    torch.testing.assert_close(multi.images, single.images, atol=1e-5, rtol=0)
    torch.testing.assert_close(multi.extras["samples"][:, 0], single.images, atol=1e-5, rtol=0)
    assert not torch.allclose(
        multi.extras["sample_latents"][:, 0], multi.extras["sample_latents"][:, 1]
    )
    assert multi.history["total"].shape == (10, 2)


def test_generator_state_restored_and_inference_mode_input_accepted():
    G, D, y, seeds = make_problem(B=1)
    G.train()
    with torch.inference_mode():
        y_inf = y.clone()
        res = search(toy_method(steps=3), G, y_inf, D, seeds)
    assert G.training and all(p.requires_grad for p in G.parameters())
    assert torch.isfinite(res.images).all()


def test_two_stages_chain_through_state_with_global_steps_and_intermediate_extras():
    """Stage 2 starts from stage 1's chosen iterate (ctx.state), the callback counts steps
    over both stages, and stage 1's result is returned in extras."""
    first = toy_method(steps=6).stages[0]

    def init_second(ctx):
        return {"w": ctx.state["toy"].latents.clone()}

    second = Stage(
        name="refine",
        steps=4,
        init=init_second,
        render=first.render,
        losses=first.losses,
        optim=[OptimGroup(vars=["w"], lr=0.01)],
        select="last",
    )
    G, D, y, seeds = make_problem(B=2)
    calls = []
    res = search(
        Method(name="two", stages=[first, second]), G, y, D, seeds,
        callback=lambda s, n, l: calls.append((s, n)),
    )  # fmt: skip
    assert [c[0] for c in calls] == list(range(10))
    assert [c[1] for c in calls] == ["toy"] * 6 + ["refine"] * 4
    assert res.steps == 10 and res.history["total"].shape == (10, 2)
    assert res.history["toy/total"].shape == (6, 2) and res.history["refine/l1"].shape == (4, 2)
    anchor = search(toy_method(steps=6), G, y, D, seeds)
    torch.testing.assert_close(res.extras["toy_latents"], anchor.latents)
    torch.testing.assert_close(res.extras["toy_images"], anchor.images)
    # stage 2's first step evaluates exactly the anchor
    w = anchor.latents
    anchor_total = 10 * lr_l1(D, to_unit(G(w)), y) + 1e-3 * w.pow(2).sum((1, 2))
    torch.testing.assert_close(res.history["refine/total"][0], anchor_total)
