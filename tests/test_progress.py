"""Progress of long runs: what is in flight, steps, loss, rate and ETA; only what is left."""

from __future__ import annotations

from pathlib import Path

import torch

from callbacks.progress import RunProgressBar

FAST = [
    "method=[wplus]",
    "method.wplus.steps=3",
    "method.wplus.start_samples=1000",  # w̄ from 1e3 mapped codes, not 1e6: seconds
    "data.dataset.n=2",
    "data.batch_size=2",
    "prior.train_if_missing=false",
    "metrics.fid=false",
    "metrics.lpips=[]",
    "logger=none",
]


def _evaluate(tmp_path, *overrides):
    from hydra import compose, initialize_config_dir

    import evaluate

    configs = str(Path(evaluate.__file__).resolve().parent / "configs")
    with initialize_config_dir(config_dir=configs, version_base="1.3"):
        cfg = compose("evaluate", [*FAST, f"run_dir={tmp_path}", *overrides])
    cfg.callbacks.progress.refresh_rate = 1  # draw every step: 3-step searches show a loss
    return evaluate.evaluate(cfg)


def test_evaluate_shows_progress_by_default_and_counts_only_what_is_left(tmp_path, capsys):
    _evaluate(tmp_path)
    out = capsys.readouterr().out
    assert "restoring" in out and "/4 " in out  # 2 images x (wplus + bicubic)
    assert "wplus on gen00000,gen00001" in out and "loss=" in out and "stage=wplus" in out
    assert "<00:00" in out or "<" in out  # tqdm's elapsed<remaining: the ETA
    # one image more in the same run directory: the 4 results already there are not counted
    _evaluate(tmp_path, "data.dataset.n=3")
    out = capsys.readouterr().out
    assert "restoring (4 already done)" in out and "/2 " in out
    assert "wplus on gen00002" in out and "gen00000," not in out


def test_quiet_with_enable_progress_bar_false(tmp_path, capsys):
    _evaluate(tmp_path, "trainer.enable_progress_bar=false")
    out = capsys.readouterr().out
    assert "restoring" not in out and "loss=" not in out
    assert (tmp_path / "report.html").exists()


def test_the_loss_is_read_every_refresh_rate_steps_only():
    bar = RunProgressBar(refresh_rate=10)
    from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

    bar.run_bar, bar.search_bar = Tqdm(total=2, disable=True), Tqdm(total=None, disable=True)
    bar.search_start("rls", ["a", "b"])
    reads = []

    class Counted(torch.Tensor):  # records when the progress bar reads a value off it
        def detach(self):
            reads.append(1)
            return super().detach()

    for step in range(25):
        bar.search_step(step, "rls", {"total": torch.ones(2).as_subclass(Counted)})
    assert len(reads) == 2 and bar.search_bar.n == 20  # at steps 10 and 20, not 25 times


def test_flow_training_bar_runs_over_max_steps_without_validation_bars(tmp_path, capsys):
    """One bar for the whole fit, with the latest held-out NLL in it; no bar per epoch's
    validation (3 epochs here) and none for Lightning's sanity check."""
    from rls.generators import load_generator
    from rls.lit import fit_flow

    G = load_generator("tiny")
    cfg = {"family": "maf", "transforms": 1, "hidden": (16, 16)}
    fit_flow(G, cfg, max_steps=6, batch_size=64, seed=0, val_size=128, output_dir=tmp_path,
             epoch_size=128, callbacks=[RunProgressBar(refresh_rate=2)],
             trainer_kwargs={"enable_model_summary": False})  # fmt: skip
    out = capsys.readouterr().out
    assert "training" in out and "6/6" in out and "train/nll=" in out
    assert "val/nll=" in out
    assert "Validation" not in out and "Sanity Checking" not in out
