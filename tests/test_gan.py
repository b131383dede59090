"""Training a StyleGAN2 on real faces: the loss pieces, EMA, augmentation, train_generator.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from rls.generators import load_generator
from rls.generators.discriminator import Discriminator, minibatch_stddev
from rls.lit.gan_module import (
    AdaptiveAugment,
    GANModule,
    ada_augment,
    diff_augment,
    ema_beta,
    mix_styles,
    pairwise_rmse,
    r1_penalty,
)

ROOT = Path(__file__).resolve().parents[1]
SMALL_G = dict(z_dim=8, w_dim=8, img_resolution=16, img_channels=3, num_layers=2,
               channel_base=128, channel_max=16)  # fmt: skip
SMALL_D = dict(img_resolution=16, img_channels=3, channel_base=128, channel_max=16)


def test_r1_penalty_is_the_squared_gradient_norm_of_the_logits():
    """D(x) = Σ a·x + Σ x²: ∇D = a + 2x, checked against the hand-computed norm."""
    torch.manual_seed(0)
    a = torch.randn(1, 3, 8, 8)

    def D(x):
        return (a * x).sum(dim=[1, 2, 3]) + x.square().sum(dim=[1, 2, 3])

    x = torch.randn(4, 3, 8, 8)
    r1, logits = r1_penalty(D, x)
    expected = (a + 2 * x).square().sum(dim=[1, 2, 3])
    assert torch.allclose(r1, expected, rtol=1e-5)
    assert torch.allclose(logits, D(x))
    # through an augmentation the gradient is taken w.r.t. the un-augmented reals
    r1_aug, _ = r1_penalty(D, x, augment=lambda t: 3 * t)
    assert torch.allclose(r1_aug, (3 * (a + 2 * 3 * x)).square().sum(dim=[1, 2, 3]), rtol=1e-5)
    assert r1.requires_grad  # a graph to back-propagate into D's weights


def test_ema_update_rule_and_half_life():
    """β = 0.5^(batch / ema_nimg): after ema_kimg·1000 images the old weight is halved;
    the ramp shortens it early on; the update is β·ema + (1 − β)·G."""
    assert ema_beta(16, 10**9, 5.0, 0.05) ** (5000 / 16) == pytest.approx(0.5)
    assert ema_beta(16, 1600, 5.0, 0.05) == pytest.approx(0.5 ** (16 / 80))  # ramp: 0.05·1600
    module = GANModule(SMALL_G, SMALL_D, batch_size=4, ema_kimg=1.0, ema_rampup=None)
    p = dict(module.G.named_parameters())["synthesis.b4.conv1.weight"]
    module.update_ema(4, 4)  # first call: a copy
    ema = lambda: dict(module.G_ema.module.named_parameters())["synthesis.b4.conv1.weight"]  # noqa: E731
    assert torch.equal(ema(), p)
    before = ema().detach().clone()
    with torch.no_grad():
        p.add_(1.0)
    beta = module.update_ema(4, 8)
    assert beta == pytest.approx(0.5 ** (4 / 1000))
    assert torch.allclose(ema(), beta * before + (1 - beta) * p.detach(), atol=1e-6)


def test_augmentation_is_differentiable_and_random_per_image():
    aug = diff_augment(resolution=16)
    x = torch.randn(8, 3, 16, 16, requires_grad=True)
    y = aug(x)
    assert y.shape == x.shape
    (grad,) = torch.autograd.grad(y.square().sum(), x)
    assert (grad != 0).float().mean() > 0.3  # gradients reach the (un-cut) input pixels
    same = x.detach()[:1].expand(8, -1, -1, -1)
    out = aug(same)
    assert not torch.allclose(out[0], out[1])  # per-image random parameters


def test_training_step_augments_reals_and_fakes_with_the_same_pipeline(tmp_path):
    """Every image D sees (fakes in the G step, fakes and reals in the D step with R1)
    goes through the module's one augmentation pipeline first."""
    import pytorch_lightning as pl

    module = GANModule(SMALL_G, SMALL_D, batch_size=4, r1_interval=1)
    into_augment, into_D = [], []
    real_augment = module.augment

    class Spy(torch.nn.Module):  # records its inputs, then runs the real pipeline
        def forward(self, x):
            into_augment.append(x.detach().clone())
            return real_augment(x)

    module.augment = Spy()
    module.D.register_forward_pre_hook(lambda m, args: into_D.append(args[0].detach().clone()))
    real = torch.rand(4, 3, 16, 16) * 2 - 1
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(real), 4))
    assert len(into_augment) == 3 and len(into_D) == 3  # G step: fake; D step: fake, real
    assert sum(torch.equal(x, real) for x in into_augment) == 1  # the reals are augmented
    assert not any(torch.equal(d, x) for d in into_D for x in into_augment)  # never raw


def test_adaptive_augmentation_follows_the_overfitting_heuristic():
    """ADA: every `interval` iterations p moves by batch·interval/(kimg·1000) up when
    r_t = E[sign D(real)] exceeds the target, down when below; clamped to [0, 1]; the
    pipeline's adaptive ops take the new p."""
    ada = AdaptiveAugment(ada_augment(resolution=16), target=0.6, interval=2, kimg=0.1)
    step = 8 * 2 / 100
    for it in range(4):  # D confident on the reals: r_t = 1 > 0.6
        ada.accumulate(torch.ones(8, 1))
        ada.adjust(it, 8)
    assert float(ada.p) == pytest.approx(2 * step) and float(ada.rt) == 1.0
    assert all(op.p == pytest.approx(2 * step) for op in ada.pipeline.adaptive_ops)
    ada.accumulate(torch.tensor([[1.0], [-1.0], [-1.0], [1.0]]))  # r_t = 0 < 0.6
    ada.adjust(5, 8)
    assert float(ada.p) == pytest.approx(step)
    for it in range(6, 40):
        ada.accumulate(-torch.ones(8, 1))
        ada.adjust(it, 8)
    assert float(ada.p) == 0.0  # clamped
    state = ada.state_dict()  # p resumes from a checkpoint
    assert {"p", "sign_sum", "count", "rt"} <= set(state)


def test_ada_pipeline_at_p_0_only_mirrors_and_at_p_1_transforms_every_image():
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    ada = AdaptiveAugment(ada_augment(resolution=16))
    y = ada(x)
    assert all(torch.equal(a, b) or torch.equal(a, b.flip(-1)) for a, b in zip(y, x))
    ada.p.fill_(1.0)
    ada.apply_p()
    y = ada(x)
    assert not any(torch.allclose(a, b) or torch.allclose(a, b.flip(-1)) for a, b in zip(y, x))


def test_style_mixing_takes_rows_after_a_cutoff_from_a_second_code():
    from rls.generators import build_generator

    G = build_generator(**SMALL_G)
    z = torch.randn(3, 8)
    torch.manual_seed(1)
    mixed = mix_styles(G, z, prob=1.0)
    own = G.mapping(z)
    same = (mixed == own).all(dim=2).all(dim=0)  # [num_ws]: rows taken from z's own code
    k = int(same.float().sum())
    assert 1 <= k < G.num_ws and same[:k].all() and not same[k:].any()
    assert torch.equal(mix_styles(G, z, prob=0.0), own)


def test_pairwise_rmse_is_the_mean_distance_between_distinct_images():
    x = torch.zeros(3, 1, 4, 4)
    x[1] += 0.3
    x[2] += 0.6
    assert float(pairwise_rmse(x)) == pytest.approx((0.3 + 0.3 + 0.6) / 3, rel=1e-5)
    assert float(pairwise_rmse(x[:1].expand(5, -1, -1, -1))) == 0.0


def test_minibatch_stddev_feature():
    x = torch.zeros(4, 2, 4, 4)
    assert torch.allclose(minibatch_stddev(x)[:, 2], torch.full((4, 4, 4), 1e-4))
    x[0] = 1.0  # group of 4: values 1,0,0,0 → std sqrt(3/16)
    assert torch.allclose(minibatch_stddev(x)[:, 2], torch.full((4, 4, 4), (3 / 16) ** 0.5))
    D = Discriminator(**SMALL_D)
    assert D(torch.randn(4, 3, 16, 16)).shape == (4, 1)
    with pytest.raises(ValueError, match="Discriminator expects"):
        D(torch.randn(4, 3, 32, 32))


@pytest.mark.slow
def test_train_generator_writes_a_loadable_generator_and_resumes(tmp_path):
    import train_generator

    def run(iterations):
        overrides = [
            f"output_dir={tmp_path}", f"gan.iterations={iterations}", "gan.batch_size=4",
            "data.resolution=16", "generator.z_dim=8", "generator.w_dim=8",
            "generator.channel_base=128", "generator.channel_max=16",
            "discriminator.channel_base=128", "discriminator.channel_max=16",
            "gan.checkpoint_every=1", "gan.export_every=1", "gan.sample_every=2",
            "gan.n_samples=4", "logger=csv", "trainer.enable_progress_bar=false",
            "trainer.log_every_n_steps=1",
        ]  # fmt: skip
        with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
            cfg = compose("train_generator", overrides=overrides)
        return train_generator.main(cfg)

    first = run(2)
    assert first["iterations"] == 2
    path = tmp_path / "generator_ema.safetensors"
    G = load_generator(str(path))
    assert G.img_resolution == 16 and G.z_dim == 8
    record = json.loads((tmp_path / "generator_ema.json").read_text())
    assert record["split"] == {"train": [0, 89], "held_out": [90, 99]}
    assert record["recipe"]["gan"]["batch_size"] == 4 and record["train_seconds"] > 0
    assert (tmp_path / "samples" / "iter_000002.png").is_file()
    second = run(3)  # the same command with more iterations continues from the checkpoint
    assert second["iterations"] == 3 and second["train_seconds"] > first["train_seconds"]
    # both invocations' losses are kept (the resumed one's CSV does not replace the first's),
    # and the second continued at iteration 3 (12 images seen) instead of starting over
    import csv

    def kimg(name):
        with open(tmp_path / "csv" / name) as f:
            return [float(r["kimg"]) for r in csv.DictReader(f) if r.get("kimg")]

    assert kimg("metrics_0.csv") == pytest.approx([0.004, 0.008])
    assert kimg("metrics.csv") == pytest.approx([0.012])
