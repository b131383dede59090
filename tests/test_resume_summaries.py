"""After a resume every logged aggregate (summary.json, csv/metrics.csv, FID/KID) covers
every image of the run; a rerun with nothing left keeps them and warns of nothing."""

from __future__ import annotations

import csv
import json
import warnings

import pytest
import pytorch_lightning as pl
import torch
from test_evaluate import wplus_l1

from callbacks.loggers import make_logger
from callbacks.results import ResultsWriter
from rls.data import GeneratorSampleDataset, RestorationDataModule
from rls.degradations import build_degradation
from rls.generators import load_generator
from rls.lit.search_module import SearchModule
from rls.metrics import RestorationMetrics
from rls.reports.run_files import finished_pairs, summary_metrics


class PooledColours(torch.nn.Module):
    """A tiny stand-in for Inception's features (no weights to download)."""

    num_features = 12

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x.float(), 2).flatten(1)


def _wplus(steps=3):
    return wplus_l1(steps)  # test_evaluate's plain W+ recipe


class CrashAfter(pl.Callback):
    def __init__(self, batches):
        self.batches, self.seen = batches, 0

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.seen += 1
        if self.seen >= self.batches:
            raise RuntimeError("simulated crash")


@pytest.fixture(scope="module")
def G():
    return load_generator("tiny")


def _run(G, run_dir, extra=()):
    feature = PooledColours()
    metrics = lambda: RestorationMetrics(None, feature, kid_subset_size=2, kid_subsets=3)  # noqa: E731
    module = SearchModule(
        G,
        {"wplus": _wplus()},
        build_degradation(8, "none"),
        metrics=metrics,
        scale=8,
        skip=finished_pairs(run_dir),
        bicubic_baseline=True,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=make_logger({"kind": "csv"}, run_dir, rewrites_csv=True),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        inference_mode=False,
        callbacks=[ResultsWriter(run_dir), *extra],
    )
    data = RestorationDataModule(GeneratorSampleDataset(G, n=4), batch_size=2)
    trainer.test(module, datamodule=data, verbose=False)


def _summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())["methods"]


def _logged(run_dir):
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {k: float(v) for k, v in rows[-1].items() if k.startswith("test/") and v}


def test_a_resumed_run_logs_aggregates_of_every_image_and_a_rerun_keeps_them(tmp_path, G):
    whole = tmp_path / "whole"
    _run(G, whole)
    resumed = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(G, resumed, [CrashAfter(1)])  # 2 of the 4 images done
    _run(G, resumed)

    expected = _summary(whole)
    got = _summary(resumed)
    for method in ("wplus", "bicubic"):
        assert got[method]["ok"] == 4 and got[method]["psnr"]["n"] == 4
        assert got[method]["psnr"]["mean"] == pytest.approx(expected[method]["psnr"]["mean"])
    # (bicubic's 4 upsampled images give a singular covariance: no FID for it here)
    assert got["wplus"]["set_metrics_images"] == 4
    # earlier images come back from their 8-bit PNGs: FID moves by rounding only
    assert got["wplus"]["fid"] == pytest.approx(expected["wplus"]["fid"], rel=0.01)
    logged = _logged(resumed)
    assert logged == pytest.approx(summary_metrics(got))
    assert logged["test/wplus/ok"] == 4 and "test/wplus/fid" in logged

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run(G, resumed)  # nothing left to do
    assert _summary(resumed) == got
    assert _logged(resumed) == pytest.approx(logged)
    noise = [
        str(w.message) for w in caught if "compute" in str(w.message) or "logs" in str(w.message)
    ]
    assert noise == []
