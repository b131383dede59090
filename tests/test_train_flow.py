"""Flow training: rls.lit.fit_flow, train_flow.py (Hydra), loggers, DDP on CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from callbacks.flow_report import FlowDiagnostics, FlowReport
from callbacks.loggers import make_logger, wandb_mode
from rls.flows import WFlow, sample_w
from rls.flows.recipe import FlowRecipe, RecipeError
from rls.generators import load_generator
from rls.lit import fit_flow
from rls.lit.flow_module import AuthorsDecay, flow_seed

ROOT = Path(__file__).resolve().parents[1]
SMALL_FLOW = {"family": "maf", "transforms": 2, "hidden": [32, 32]}
SMALL_RUN = {"batch_size": 256, "seed": 0, "val_size": 1024, "epoch_size": 2048, "lr": 3e-3}
QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"}


@pytest.fixture(scope="module")
def G():
    return load_generator("tiny")


def test_short_training_lowers_held_out_nll_and_writes_outputs(G, tmp_path):
    val_w = sample_w(G, 1024, flow_seed(0, "val"))
    untrained = WFlow(G.w_dim, **SMALL_FLOW).fit_standardisation(
        sample_w(G, 2048, flow_seed(0, "train/0"))
    )
    before = untrained.nll(val_w).item()
    report = FlowReport()
    diagnostics = FlowDiagnostics(every_n_epochs=2, n=512)
    flow, metrics = fit_flow(
        G, SMALL_FLOW, max_steps=40, output_dir=tmp_path, callbacks=[report, diagnostics],
        trainer_kwargs=QUIET, **SMALL_RUN,
    )  # fmt: skip
    after = metrics["val_nll"]["flow"]
    assert after < before - 2, (before, after)
    assert set(metrics["val_nll"]) == {
        "flow", "brgm_gaussian", "pulse_leaky_diagonal", "wulff_leaky_fullcov"
    }  # fmt: skip
    assert metrics["gaussianity"]["flow"]["w_dim"] == G.w_dim
    # the saved flow is the returned one, and the numbers in metrics.json are its own
    loaded = WFlow.load(tmp_path / "flow.safetensors", generator=G)
    assert torch.equal(loaded.log_prob(val_w), flow.log_prob(val_w))
    assert loaded.nll(val_w).item() == pytest.approx(after, rel=1e-5)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["val_nll"] == metrics["val_nll"] and on_disk["steps"] == 40
    names = {p.name for p in report.written}
    assert {"flow_chi2.png", "flow_moments.png", "flow_qq.png", "flow_nll.png"} <= names
    assert (tmp_path / "tables" / "flow_priors.csv").is_file()
    assert (tmp_path / "figures" / "flow_chi2_during_training.png").is_file()


def test_maf_paper_batch_norm_statistics_are_the_best_epochs_buffer(G, tmp_path):
    """The authors' flow is saved normalising with the statistics of one whole epoch's
    train buffer (as the training script of their layers does), not of the last batch."""
    flow_cfg = {"family": "maf_paper", "transforms": 2, "hidden": [32, 32]}
    fit_flow(G, flow_cfg, max_steps=16, output_dir=tmp_path, trainer_kwargs=QUIET, **SMALL_RUN)
    saved = WFlow.load(tmp_path / "flow.safetensors")
    stats = {k: v for k, v in saved.state_dict().items() if "running_" in k}
    assert len(stats) == 4  # two batch-norm layers
    matches = []
    for epoch in (0, 1):  # 2048 samples / 256 per batch: 8 steps per epoch
        ref = WFlow.load(tmp_path / "flow.safetensors")
        ref.set_running_statistics(sample_w(G, 2048, flow_seed(0, f"train/{epoch}")))
        ours = ref.state_dict()
        matches.append(
            all(torch.allclose(ours[k], v, atol=1e-5, rtol=1e-5) for k, v in stats.items())
        )
    assert any(matches)


def test_resume_continues_from_last_checkpoint(G, tmp_path):
    fit_flow(G, SMALL_FLOW, max_steps=8, output_dir=tmp_path, trainer_kwargs=QUIET, **SMALL_RUN)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    _, metrics = fit_flow(
        G, SMALL_FLOW, max_steps=16, output_dir=tmp_path, trainer_kwargs=QUIET, **SMALL_RUN
    )
    assert metrics["steps"] == 16
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 16
    # a run dir of another flow is refused with the file named, not resumed into
    with pytest.raises(ValueError, match=r"last.ckpt: checkpoint holds a different flow"):
        fit_flow(
            G, {**SMALL_FLOW, "hidden": [16, 16]}, max_steps=20, output_dir=tmp_path,
            trainer_kwargs=QUIET, **SMALL_RUN,
        )  # fmt: skip


def test_same_seed_same_flow(G, tmp_path):
    runs = [
        fit_flow(G, SMALL_FLOW, max_steps=8, output_dir=tmp_path / str(i), trainer_kwargs=QUIET,
                 **SMALL_RUN)[1]["val_nll"]
        for i in range(2)
    ]  # fmt: skip
    assert runs[0] == runs[1]


def test_flow_config_for_another_w_dim_is_refused(G, tmp_path):
    with pytest.raises(ValueError, match=rf"w_dim={G.w_dim + 3}.*w_dim={G.w_dim}"):
        fit_flow(
            G, {**SMALL_FLOW, "w_dim": G.w_dim + 3}, max_steps=1, output_dir=tmp_path,
            trainer_kwargs=QUIET, **SMALL_RUN,
        )  # fmt: skip


def test_stopping_rule_keeps_the_best_checkpoint(G, tmp_path):
    """A rate too high for the flow makes the held-out NLL rise after its best: training
    stops `patience` validations after the best, and the flow written is the best one."""
    run = {**SMALL_RUN, "lr": 0.3, "epoch_size": 512, "patience": 3}
    flow, metrics = fit_flow(
        G, SMALL_FLOW, max_steps=400, output_dir=tmp_path, trainer_kwargs=QUIET, **run
    )
    curve = [p["val_nll"] for p in metrics["curve"]]
    best = min(range(len(curve)), key=curve.__getitem__)
    assert metrics["stopped"] == "plateau" and metrics["steps"] < 400
    assert len(curve) == best + 1 + 3, curve  # stopped 3 validations after the best
    assert curve[-1] > curve[best] + 1, curve  # the last one is clearly worse
    assert metrics["best_step"] == metrics["curve"][best]["step"]
    val_w = sample_w(G, 1024, flow_seed(0, "val"))
    saved = WFlow.load(tmp_path / "flow.safetensors", generator=G)
    assert saved.nll(val_w).item() == pytest.approx(curve[best], abs=1e-3)
    assert metrics["val_nll"]["flow"] == pytest.approx(curve[best], abs=1e-3)


def test_authors_rate_rule_divides_by_10_then_100_on_a_plateau():
    """CPFLOW_lib/train_tab_w.py's update_lr with patience 20: lr/10 at the 7th validation
    without improvement, lr/100 at the 13th, never raised again by an improvement."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    sched = AuthorsDecay(opt, patience=20)
    rates = []
    for nll in [5.0, 4.0] + [4.0] * 6 + [4.5] + [3.0] + [3.5] * 13:
        sched.step(nll)
        rates.append(opt.param_groups[0]["lr"])
    assert rates[:8] == [1e-3] * 8  # 6 bad validations: still lr
    assert rates[8] == pytest.approx(1e-4)  # the 7th: lr/10
    assert rates[9] == pytest.approx(1e-4)  # an improvement keeps lr/10
    assert rates[9 + 12] == pytest.approx(1e-4) and rates[9 + 13] == pytest.approx(1e-5)


@pytest.mark.parametrize(
    "override, key",
    [("flow_training.max_steps=0", "max_steps=0"), ("flow_training.max_steps=-5", "max_steps=-5"),
     ("flow_training.batch_size=-4", "batch_size=-4"), ("flow_training.lr=0", "lr=0.0"),
     ("flow_training.lr=-1e-3", "lr=-0.001"), ("flow_training.epoch_size=100", "batch_size=512"),
     ("flow_training.patience=0", "patience=0"),
     ("flow_training.schedule=cosin", "schedule='cosin'")],
)  # fmt: skip
def test_untrainable_settings_are_refused_before_anything_is_built(tmp_path, override, key):
    """train_flow.py names the key before the generator is built (here a missing file that
    would fail first) and writes nothing."""
    import train_flow

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train_flow", [override, "logger=none", "generator=local",
                                     f"generator.source={tmp_path / 'missing.pkl'}",
                                     f"output_dir={tmp_path / 'out'}"])  # fmt: skip
    with pytest.raises(RecipeError, match=rf"^flow_training\.{key}"):
        train_flow.main.__wrapped__(cfg)
    assert not (tmp_path / "out").exists()


def test_fit_flow_refuses_no_steps_before_building(G, tmp_path):
    with pytest.raises(RecipeError, match=r"flow_training\.max_steps=0"):
        fit_flow(G, SMALL_FLOW, max_steps=0, output_dir=tmp_path / "out", **SMALL_RUN)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flow, family", [("maf", "maf"), ("maf_paper", "maf_paper"), ("maf_zuko", "maf"),
                     ("nsf", "nsf"), ("realnvp", "realnvp")]
)  # fmt: skip
def test_hydra_config_composes_with_overrides(flow, family):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(
            "train_flow",
            overrides=[
                f"flow={flow}",
                "flow_training.max_steps=2000",
                "logger=none",
                "trainer=ddp",
            ],
        )
    assert cfg.flow.family == family and cfg.flow_training.max_steps == 2000
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 2
    assert cfg.logger.kind == "none" and cfg.generator.source == "tiny"
    assert isinstance(instantiate(cfg.callbacks.flow_report), FlowReport)
    assert isinstance(instantiate(cfg.callbacks.flow_diagnostics), FlowDiagnostics)
    WFlow(8, **{**dict(cfg.flow), "hidden": [8, 8]})  # every flow config builds a WFlow


def test_loggers(tmp_path, monkeypatch):
    assert make_logger({"kind": "none"}, tmp_path) is False
    csv = make_logger({"kind": "csv", "name": "csv"}, tmp_path)
    assert Path(csv.log_dir).parent == tmp_path
    with pytest.raises(ValueError, match="unknown logger kind 'tensorbored'"):
        make_logger({"kind": "tensorbored"}, tmp_path)
    # W&B is offline unless an account is configured, and WANDB_MODE always wins
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert wandb_mode("auto") == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    assert wandb_mode("auto") == "online"
    (tmp_path / "netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode("auto") == "disabled"


def _run_train_flow(tmp_path, *overrides, timeout=600):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    # test-only callbacks (flow_ddp_probe) are importable by their module name
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "tests"), env.get("PYTHONPATH")]))
    args = [
        sys.executable, "train_flow.py", f"output_dir={tmp_path}", "logger=csv", "threads=1",
        "flow.transforms=2", "flow.hidden=[32,32]", "flow_training.epoch_size=1024",
        "flow_training.val_size=512", "flow_training.batch_size=128",
        "trainer.enable_progress_bar=false", *overrides,
    ]  # fmt: skip
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_maf_beats_every_older_prior_on_held_out_nll(G, tmp_path):
    """The README's claim: flow=maf (LeakyReLU(5) input and whitening under the authors' MAF)
    has a lower held-out NLL than BRGM's, PULSE/ILO's and Wulff & Torralba's priors."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train_flow", ["flow=maf"])
    _, metrics = fit_flow(
        G, dict(cfg.flow), max_steps=300, batch_size=512, seed=0, val_size=4096,
        output_dir=tmp_path, epoch_size=8192, trainer_kwargs=QUIET,
    )  # fmt: skip
    nll = metrics["val_nll"]
    older = ("brgm_gaussian", "pulse_leaky_diagonal", "wulff_leaky_fullcov")
    assert set(nll) == {"flow", *older}
    assert all(nll["flow"] < nll[k] - 5 for k in older), nll
    assert metrics["flow_beats_all_older_priors"]


@pytest.mark.slow
@pytest.mark.parametrize("generator", ["tiny", "tiny64"])
def test_default_recipe_beats_every_older_prior(generator, tmp_path):
    """The README's flow table: the default flow (flow=maf_paper) trained by the default
    recipe (to its held-out plateau) has a lower held-out NLL than BRGM's, PULSE/ILO's and
    Wulff & Torralba's priors on both shipped generators. Long: thousands of steps on a CPU."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train_flow", [f"generator={generator}"])
    recipe = FlowRecipe.from_settings(dict(cfg.flow), dict(cfg.flow_training))
    _, metrics = fit_flow(
        instantiate(cfg.generator), recipe.flow, output_dir=tmp_path, trainer_kwargs=QUIET,
        **recipe.training_kwargs(),
    )  # fmt: skip
    nll = metrics["val_nll"]
    assert metrics["stopped"] == "plateau", metrics["steps"]
    assert all(nll["flow"] < v for k, v in nll.items() if k != "flow"), nll


@pytest.mark.slow
def test_train_flow_script_end_to_end(tmp_path):
    out = _run_train_flow(tmp_path, "flow_training.max_steps=16", "flow=nsf")
    assert "flow.safetensors" in out.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["flow"]["family"] == "nsf" and metrics["steps"] == 16
    assert (tmp_path / "csv" / "metrics.csv").is_file()
    assert (tmp_path / "figures" / "flow_chi2.png").is_file()


@pytest.mark.slow
def test_train_flow_ddp_two_cpu_processes(tmp_path):
    """Two ranks share each epoch's buffer without overlap: every train row a rank sees is a
    row of that epoch's buffer, and no row is seen by both ranks."""
    probe = tmp_path / "probe"
    _run_train_flow(
        tmp_path, "trainer=ddp", "trainer.accelerator=cpu", "flow_training.max_steps=8",
        "+callbacks.probe._target_=flow_ddp_probe.RecordTrainRows",
        f"+callbacks.probe.out_dir={probe}",
    )  # fmt: skip
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 8
    flow = WFlow.load(tmp_path / "flow.safetensors")
    assert torch.isfinite(torch.tensor(metrics["val_nll"]["flow"]))
    assert flow.w_dim == metrics["w_dim"]
    ranks = [torch.load(probe / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    G = load_generator("tiny")
    assert sorted(ranks[0]) == sorted(ranks[1]) == [0, 1]  # 8 steps of 4 per epoch and rank
    for epoch in (0, 1):
        buffer = {tuple(r.tolist()) for r in sample_w(G, 1024, flow_seed(0, f"train/{epoch}"))}
        seen = [{tuple(r.tolist()) for r in rank[epoch]} for rank in ranks]
        assert len(seen[0]) == len(seen[1]) == 4 * 128
        assert seen[0] <= buffer and seen[1] <= buffer and not seen[0] & seen[1]


def test_an_interrupted_fit_resumes_from_its_last_state_not_its_best(G, tmp_path):
    """Stopped (max_steps) after its best validation and resumed, a fit continues from the
    last epoch's state: the same held-out curve and stop as one uninterrupted fit, the
    best checkpoint kept as before."""
    run = {**SMALL_RUN, "lr": 0.3, "epoch_size": 512, "patience": 3}
    _, whole = fit_flow(
        G, SMALL_FLOW, max_steps=400, output_dir=tmp_path / "whole", trainer_kwargs=QUIET, **run
    )
    curve = whole["curve"]
    assert min(p["lr"] for p in curve) == pytest.approx(0.03)  # the rule acted: lr/10
    best = min(range(len(curve)), key=lambda i: curve[i]["val_nll"])
    cut = curve[best + 2]["step"]  # two validations past the best, before the stop
    fit_flow(G, SMALL_FLOW, max_steps=cut, output_dir=tmp_path / "cut", trainer_kwargs=QUIET,
             **run)  # fmt: skip
    last = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == cut
    _, resumed = fit_flow(
        G, SMALL_FLOW, max_steps=400, output_dir=tmp_path / "cut", trainer_kwargs=QUIET, **run
    )
    assert resumed["stopped"] == "plateau" and resumed["steps"] == whole["steps"]
    assert resumed["best_step"] == whole["best_step"]
    got = [p["val_nll"] for p in resumed["curve"]]
    assert got == pytest.approx([p["val_nll"] for p in curve], abs=1e-4)
