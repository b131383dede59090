"""One flow for both entry points: train_flow.py writes the flow evaluate.py would train, into
the cache evaluate.py reads; the recipe and generator keys that name it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

import evaluate
import train_flow
from rls.flows import WFlow
from rls.flows.recipe import FlowRecipe, flow_cache_dir, generator_key
from rls.generators import load_generator
from rls.reports.run_files import read_rows

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")
# the demo's generator and a flow recipe cut to a few steps (the same for both commands)
RECIPE = [
    "generator=tiny64",
    "flow_training.max_steps=6",
    "flow_training.epoch_size=1024",
    "flow_training.val_size=256",
    "flow_training.batch_size=256",
    "flow.hidden=[32,32]",
]
SEARCH = [
    "experiment=demo_tiny",
    "method.rls.steps=4",
    "method.rls_plus.anchor.steps=4",
    "method.rls_plus.steps=2",
    "data.dataset.n=1",
    "data.batch_size=1",
    "logger=none",
    "metrics.fid=false",
    "metrics.lpips=[]",
]


def _compose(name, overrides):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def _results(run_dir):
    rows = read_rows(run_dir / "results.csv")
    return {(r["image_id"], r["method"]): (r["psnr"], r["lr_psnr"]) for r in rows}


def test_train_flow_then_evaluate_uses_that_flow_and_trains_none(tmp_path, capsys):
    cache, own_cache = tmp_path / "flows", tmp_path / "own_flows"
    cfg = _compose("train_flow", [*RECIPE, f"flow_training.cache_dir={cache}", "logger=none"])
    cfg.callbacks = None
    train_flow.main(cfg)
    (flow_dir,) = cache.iterdir()
    flow_file = flow_dir / "flow.safetensors"
    stamp = (flow_file.stat().st_mtime_ns, flow_file.read_bytes())
    assert WFlow.load(flow_file).family == "maf_paper"  # no arguments: the authors' flow

    capsys.readouterr()
    evaluate.evaluate(
        _compose("evaluate", [*SEARCH, *RECIPE, f"flow_training.cache_dir={cache}",
                              f"run_dir={tmp_path / 'reused'}"])
    )  # fmt: skip
    assert "reusing the flow" in capsys.readouterr().out
    assert [flow_dir] == list(cache.iterdir())  # no second flow
    assert (flow_file.stat().st_mtime_ns, flow_file.read_bytes()) == stamp

    evaluate.evaluate(
        _compose("evaluate", [*SEARCH, *RECIPE, f"prior.path={flow_file}",
                              f"flow_training.cache_dir={own_cache}",
                              f"run_dir={tmp_path / 'by_path'}"])
    )  # fmt: skip
    assert not own_cache.exists()  # a given flow: nothing trained
    # the demo with a flow of its own: evaluate trains exactly train_flow's flow
    evaluate.evaluate(
        _compose("evaluate", [*SEARCH, *RECIPE, f"flow_training.cache_dir={own_cache}",
                              f"run_dir={tmp_path / 'own'}"])
    )  # fmt: skip
    told = capsys.readouterr().out  # before training: what, how long at most, the cap's key
    assert "trains to its held-out plateau" in told and "at most 6 steps" in told
    assert "flow_training.max_steps=" in told
    (own_dir,) = own_cache.iterdir()
    assert own_dir.name == flow_dir.name
    own, ours = load_file(own_dir / "flow.safetensors"), load_file(flow_file)
    assert own.keys() == ours.keys() and all(torch.equal(own[k], ours[k]) for k in own)
    results = _results(tmp_path / "reused")
    assert len(results) == 3  # rls, rls_plus, bicubic
    assert results == _results(tmp_path / "by_path") == _results(tmp_path / "own")


def test_recipe_key_names_what_changes_the_flow():
    base = FlowRecipe.from_settings({"family": "maf_paper"}, {"lr": 1e-3, "cache_dir": "x"})
    assert base.key() == FlowRecipe(flow={"family": "maf_paper"}, lr="0.001").key()
    assert base.key() != FlowRecipe(flow={"family": "maf"}).key()
    assert base.key() != FlowRecipe(flow={"family": "maf_paper"}, max_steps=10).key()
    # the train_flow and evaluate configs compose the same default recipe
    recipes = [
        FlowRecipe.from_settings(dict(c.flow), dict(c.flow_training))
        for c in (_compose("train_flow", []), _compose("evaluate", []))
    ]
    assert recipes[0] == recipes[1] and recipes[0].flow["family"] == "maf_paper"
    assert json.loads(json.dumps(recipes[0].training_kwargs()))["max_steps"] == 50000


def test_generator_key_follows_the_mapping_network():
    tiny, tiny64 = load_generator("tiny"), load_generator("tiny", img_resolution=64)
    assert generator_key(tiny) == generator_key(load_generator("tiny"))
    assert generator_key(tiny) != generator_key(tiny64)  # another mapping network
    with torch.no_grad():
        tiny64.synthesis.b4.conv1.weight.add_(1.0)  # the flow models W only
    assert generator_key(tiny64) == generator_key(load_generator("tiny", img_resolution=64))
    assert flow_cache_dir("c", tiny, FlowRecipe()).parent == Path("c")


def test_two_runs_wanting_one_flow_train_it_once(tmp_path, monkeypatch):
    """Two runs needing the same missing flow at once: one trains it, the other waits for
    its lock and loads the result (no second training into the same folder)."""
    import threading

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import rls.lit.flow_module as flow_module
    from rls.lit.flow_cache import cached_flow

    cfg = _compose("evaluate", RECIPE)
    recipe = FlowRecipe.from_settings(
        OmegaConf.to_container(cfg.flow, resolve=True),
        OmegaConf.to_container(cfg.flow_training, resolve=True),
    )
    G = instantiate(cfg.generator)
    trainings = []
    real = flow_module.fit_flow

    def counting(*args, **kwargs):
        trainings.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(flow_module, "fit_flow", counting)
    results = []

    def run():
        found = cached_flow(G, recipe, tmp_path, trainer_kwargs={"enable_progress_bar": False})
        results.append(found)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert len(trainings) == 1 and len(results) == 2
    assert sorted(r.trained for r in results) == [False, True]
    assert all(r.flow is not None and r.path == results[0].path for r in results)


def test_a_truncated_cached_flow_is_set_aside_and_trained_again(tmp_path, caplog):
    """A flow file cut short (a full disk, a killed copy) would end every later run in a
    traceback: it is named in one warning, renamed .damaged, and the flow trained anew."""
    import logging

    cache = tmp_path / "flows"
    cfg = _compose("train_flow", [*RECIPE, f"flow_training.cache_dir={cache}", "logger=none"])
    cfg.callbacks = None
    train_flow.main(cfg)
    (flow_dir,) = cache.iterdir()
    flow_file = flow_dir / "flow.safetensors"
    good = flow_file.read_bytes()
    flow_file.write_bytes(good[: len(good) // 2])
    caplog.set_level(logging.WARNING, logger="rls.lit")
    evaluate.evaluate(
        _compose("evaluate", [*SEARCH, *RECIPE, f"flow_training.cache_dir={cache}",
                              f"run_dir={tmp_path / 'run'}"])
    )  # fmt: skip
    warned = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(warned) == 1 and str(flow_file) in warned[0]
    assert (flow_dir / "flow.safetensors.damaged").read_bytes() == good[: len(good) // 2]
    assert WFlow.load(flow_file).family == "maf_paper"  # trained again, readable
    assert len(_results(tmp_path / "run")) == 3
