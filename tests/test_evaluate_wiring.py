"""evaluate.py as a user runs it (the config composed as ``python evaluate.py ...`` would,
then ``evaluate.evaluate``): resume, the corruption on the LR input, per-image seeds
whatever the batching and order, the method configs reaching the methods."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from rls.degradations import build_degradation
from rls.generators import load_generator
from rls.reports.run_files import image_path, read_rows
from rls.seeding import seeds_for

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
IDS = [f"gen{i:05d}" for i in range(4)]

# PULSE draws its start and noise maps from the search seeds: a seeded method. Short and
# with a small diagonal fit; no flow (PULSE needs none), no pretrained metric networks.
PULSE_RUN = [
    "method=[pulse]",
    "method.pulse.steps=3",
    "method.pulse.fit_samples=2048",
    "corruption=gaussian_noise",
    "scale=4",
    "data.dataset.n=4",
    "logger=none",
    "threads=1",
    "trainer.enable_progress_bar=false",
    "metrics.fid=false",
    "metrics.lpips=[]",
    "prior.train_if_missing=false",
]


def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return hydra_compose(config_name="evaluate", overrides=overrides)


def run(run_dir, extra=(), edit=None):
    """``python evaluate.py <PULSE_RUN> <extra> run_dir=...``; returns the rows by (id, method)."""
    import evaluate

    cfg = compose([*PULSE_RUN, *extra, f"run_dir={run_dir}"])
    if edit is not None:
        edit(cfg)
    evaluate.evaluate(cfg)
    return {(r["image_id"], r["method"]): r for r in read_rows(Path(run_dir) / "results.csv")}


def png(run_dir, kind, image_id) -> np.ndarray:
    return np.asarray(Image.open(image_path(run_dir, kind, image_id)), dtype=np.int16)


@pytest.fixture(scope="module")
def batch4(tmp_path_factory):
    """The reference run: the 4 images in one batch."""
    run_dir = tmp_path_factory.mktemp("batch4")
    return run_dir, run(run_dir, ["data.batch_size=4"])


@pytest.fixture(scope="module")
def hr_images():
    """The HR targets of the generated data set (``data=generated``, n=4), by image id."""
    cfg = compose(PULSE_RUN)
    data = instantiate(cfg.data, generator=instantiate(cfg.generator))
    data.setup("test")
    return {rec["image_id"]: rec["hr"] for rec in (data.dataset[i] for i in range(4))}


def assert_same_per_image(rows, reference):
    assert rows.keys() == reference.keys() == {(i, m) for i in IDS for m in ("pulse", "bicubic")}
    for key, row in rows.items():
        for column in ("psnr", "ssim", "lr_psnr"):
            expected = float(reference[key][column])
            assert float(row[column]) == pytest.approx(expected, abs=1e-3), (key, column)


def assert_same_images(run_dir, reference_dir):
    for image_id in IDS:
        lr, lr_ref = png(run_dir, "lr", image_id), png(reference_dir, "lr", image_id)
        assert np.array_equal(lr, lr_ref), image_id  # the identical observation
        diff = np.abs(png(run_dir, "pulse", image_id) - png(reference_dir, "pulse", image_id))
        assert diff.max() <= 1, image_id  # the same solution (one grey level of rounding)


# ------------------------------------------------------------------------------ resume


def test_rerunning_an_interrupted_run_computes_only_the_rest(tmp_path, batch4):
    """A run stopped after its first batch (images 0 and 1 recorded), then the same
    command: the recorded rows are kept as they are, only images 2 and 3 are searched."""
    reference_dir, reference = batch4
    extra = ["data.batch_size=2"]
    first = run(tmp_path, extra)
    header = (tmp_path / "results.csv").read_text().splitlines()[0]
    kept = [r for key, r in first.items() if key[0] in IDS[:2]]
    for r in kept:
        r["notes"] = "recorded before the interruption"
    lines = [",".join(r[c] for c in header.split(",")) for r in kept]
    (tmp_path / "results.csv").write_text("\n".join([header, *lines]) + "\n")

    rows = run(tmp_path, extra)
    assert len(rows) == 4 * 2 and all(r["status"] == "ok" for r in rows.values())
    for key, r in rows.items():
        if key[0] in IDS[:2]:  # not searched again
            assert r["notes"] == "recorded before the interruption", key
        else:  # searched now, with the same result as an uninterrupted run
            assert r["notes"] != "recorded before the interruption", key
            assert float(r["psnr"]) == pytest.approx(float(reference[key]["psnr"]), abs=1e-3)


# --------------------------------------------------------------------- the observation


def test_the_configured_corruption_makes_the_lr_input(batch4, hr_images):
    """corruption=gaussian_noise (σ 0.1): each LR input is D.observe of its HR image with
    the image's own seed, i.e. the clean D(hr) plus N(0, 0.1²) noise."""
    run_dir, _ = batch4
    D = build_degradation(4, corruptions=["gaussian_noise"])
    hr = torch.stack([hr_images[i] for i in IDS])
    clean = build_degradation(4)(hr)
    observed = D.observe(hr, seeds_for(IDS, "observe"))
    lr = torch.stack([torch.from_numpy(png(run_dir, "lr", i)).permute(2, 0, 1) for i in IDS])
    lr = lr.float() / 255
    assert lr.shape == clean.shape == (4, 3, 8, 8)
    assert (lr - observed).abs().max() <= 0.5 / 255 + 1e-6  # the saved PNG rounds y
    inside = (clean > 0.25) & (clean < 0.75)  # away from the [0, 1] clip
    residual = (lr - clean)[inside]
    assert residual.numel() > 300
    assert abs(residual.mean().item()) < 0.02
    assert 0.085 < residual.std().item() < 0.115  # σ = 0.1 (the paper's)


def test_results_measure_the_solution_against_the_observed_input(batch4, hr_images):
    """lr_psnr = PSNR(D(sr), y) with y the noisy observation (not the clean D(hr)); psnr
    compares with the HR image."""
    run_dir, rows = batch4
    D = build_degradation(4, corruptions=["gaussian_noise"])
    for image_id in IDS:
        sr = torch.from_numpy(png(run_dir, "pulse", image_id)).permute(2, 0, 1)[None] / 255
        y = torch.from_numpy(png(run_dir, "lr", image_id)).permute(2, 0, 1)[None] / 255
        lr_psnr = -10 * math.log10((D(sr.float()) - y).pow(2).mean().item())
        psnr = -10 * math.log10((sr - hr_images[image_id]).pow(2).mean().item())
        row = rows[(image_id, "pulse")]
        assert float(row["lr_psnr"]) == pytest.approx(lr_psnr, abs=0.05), image_id
        assert float(row["psnr"]) == pytest.approx(psnr, abs=0.05), image_id


# ------------------------------------------------------------------- per-image seeds


def test_results_and_inputs_do_not_depend_on_the_batch(tmp_path, batch4):
    """Batch 1 vs batch 4: the same LR inputs, solutions and numbers per image (the
    observation noise and the search's random draws are seeded by image, not by slot)."""
    reference_dir, reference = batch4
    rows = run(tmp_path, ["data.batch_size=1"])
    assert_same_per_image(rows, reference)
    assert_same_images(tmp_path, reference_dir)


def test_results_and_inputs_do_not_depend_on_the_order(tmp_path, batch4):
    """The same 4 images served in another order (2, 0, 3, 1), in batches of 3 and 1."""
    reference_dir, reference = batch4

    def shuffled(cfg):
        generated = OmegaConf.to_container(cfg.data.dataset)
        generated.pop("_partial_")
        generated["G"] = OmegaConf.to_container(cfg.generator)
        cfg.data.dataset = {
            "_target_": "torch.utils.data.Subset",
            "dataset": generated,
            "indices": [2, 0, 3, 1],
        }

    rows = run(tmp_path, ["data.batch_size=3"], edit=shuffled)
    assert_same_per_image(rows, reference)
    assert_same_images(tmp_path, reference_dir)


# ----------------------------------------------------------- method configs -> methods


# RLS starts from the mean of 1e6 mapped codes; fewer keep the test fast (not a loss weight)
SMALL_START_MEAN = ["method.rls.start_samples=4096"]


PLUS_ANCHOR = "method.rls_plus.anchor.start_samples"


@pytest.fixture(scope="module")
def tiny_problem():
    from rls.flows import WFlow, sample_w

    G = load_generator("tiny")
    torch.manual_seed(0)
    prior = WFlow(G.w_dim, transforms=2, hidden=(16, 16))
    prior = prior.fit_standardisation(sample_w(G, 1000, seed=0)).eval()
    D = build_degradation(8)
    g = torch.Generator().manual_seed(3)
    y = torch.rand(2, 3, 4, 4, generator=g)
    return G, prior, D, y


def test_rls_config_reaches_the_built_method(tiny_problem):
    """configs/method/rls.yaml (the authors' final weights, sr_boost.py at f8df15d) built
    as evaluate.py builds it: every term of the loss is its weight times its function."""
    import evaluate
    from rls.search import SearchContext
    from rls.search.losses import cross_distance, flow_nll, flow_pn, lr_l1, to_unit

    G, prior, D, y = tiny_problem
    methods = evaluate.build_methods(compose(["method=[rls]", *SMALL_START_MEAN]))
    ctx = SearchContext(G=G, y=y, D=D, seeds=torch.tensor([1, 2]), prior=prior)
    (stage,) = methods["rls"].build_stages(ctx)
    assert stage.steps == 500 and stage.select == "best"
    v = stage.init(ctx)
    v["w"] = v["w"] + 0.3 * torch.randn(v["w"].shape, generator=torch.Generator().manual_seed(0))
    r = stage.render(ctx, v)
    terms = stage.losses(ctx, v, r)
    w = v["w"]
    expected = {
        "l1": 10.0 * lr_l1(D, to_unit(r.image), y),
        "logp": 0.002 * flow_nll(prior, w),
        "pn": 0.004 * flow_pn(prior, w),
        "cross": 0.5 * cross_distance(w),
    }
    assert terms.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(terms[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_rls_plus_config_reaches_the_built_method(tiny_problem):
    """configs/method/rls_plus.yaml: its anchor is the RLS recipe of rls.yaml, its
    fine-tuning the configured steps, loss weight and constraint."""
    import evaluate

    cfg = compose(["method=[rls,rls_plus]", *SMALL_START_MEAN, f"{PLUS_ANCHOR}=4096"])
    methods = evaluate.build_methods(cfg)
    plus = methods["rls_plus"]
    assert plus.config["anchor"] == methods["rls"].config  # RLS+ starts from RLS's solution
    assert plus.config["constraint"] == cfg.method.rls_plus.constraint
    assert plus.config["radius"] == cfg.method.rls_plus.radius
    G, prior, D, y = tiny_problem
    from rls.search import SearchContext, StageOutput
    from rls.search.losses import lr_l1, to_unit

    ctx = SearchContext(G=G, y=y, D=D, seeds=torch.tensor([1, 2]), prior=prior)
    anchor, stage = plus.build_stages(ctx)
    assert anchor.steps == 500 and stage.steps == 80  # x8: the authors' 80 steps
    start = anchor.init(ctx)
    ctx.state["rls"] = StageOutput(start, torch.zeros(2, 3, 32, 32), start["w"], torch.zeros(2))
    v = stage.init(ctx)
    r = stage.render(ctx, v)
    terms = stage.losses(ctx, v, r)
    assert terms.keys() == {"l1"}
    torch.testing.assert_close(terms["l1"], 10.0 * lr_l1(D, to_unit(r.image), y))
