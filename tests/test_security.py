"""Hostile files are refused and never executed: a payload hidden in a tensor storage record
of a network pickle, a hostile ``.pt`` generator, and a hostile Lightning checkpoint in a flow
run directory that ``train_flow.py`` resumes from. Each payload calls ``os.system`` to create a
marker file; the marker must never appear.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import pickle
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import train_flow
from rls.generators import load_generator
from rls.generators.checkpoints import CheckpointError
from rls.lit import fit_flow

ROOT = Path(__file__).resolve().parents[1]
SMALL_FLOW = {"family": "maf", "transforms": 2, "hidden": [32, 32]}
SMALL_RUN = {"batch_size": 128, "seed": 0, "val_size": 256, "epoch_size": 512, "lr": 3e-3}
QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"}


class _Shell:
    """Unpickles as ``os.system(command)``."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Reduce:
    """Unpickles as ``func(*args)``: lets a test spell any pickle record by hand."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _touch(marker: Path) -> _Shell:
    return _Shell(f"touch {marker}")


def _storage_record_pickle(path: Path, marker: Path) -> bytes:
    """A network pickle whose one tensor is rebuilt from a storage record that is itself a
    (legacy) ``torch.save`` of the payload: what ``torch.storage._load_from_bytes`` reads."""
    payload = io.BytesIO()
    torch.save(_touch(marker), payload, _use_new_zipfile_serialization=False)
    storage = _Reduce(torch.storage._load_from_bytes, payload.getvalue())
    tensor = _Reduce(
        torch._utils._rebuild_tensor_v2, storage, 0, (1,), (1,), False, collections.OrderedDict()
    )
    data = pickle.dumps({"G_ema": tensor, "G": tensor}, protocol=4)
    path.write_bytes(data)
    return data


def test_payload_in_a_tensor_storage_record_is_refused(tmp_path):
    marker = tmp_path / "EXECUTED"
    data = _storage_record_pickle(tmp_path / "network-snapshot.pkl", marker)
    with contextlib.suppress(Exception):  # the payload is live: a plain unpickle runs it
        pickle.loads(data)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckpointError, match=r"network-snapshot\.pkl: .*posix\.system"):
        load_generator(str(tmp_path / "network-snapshot.pkl"))
    assert not marker.exists()


def test_hostile_pt_generator_is_refused(tmp_path):
    marker = tmp_path / "EXECUTED"
    path = tmp_path / "stylegan2-ffhq-config-f.pt"
    torch.save({"g_ema": {"style.1.weight": torch.zeros(2)}, "latent_avg": _touch(marker)}, path)
    with pytest.raises(CheckpointError, match=r"stylegan2-ffhq-config-f\.pt: .*system"):
        load_generator(str(path))
    assert not marker.exists()


def _hostile_lightning_checkpoint(path: Path, marker: Path) -> None:
    """A checkpoint with every key Lightning expects and a payload in the loop state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "epoch": 0,
            "global_step": 1,
            "pytorch-lightning_version": "2.6.6",
            "state_dict": {},
            "loops": {"fit_loop": _touch(marker)},
            "callbacks": {},
            "optimizer_states": [],
            "lr_schedulers": [],
        },
        path,
    )


def test_hostile_checkpoint_is_refused_when_train_flow_resumes(tmp_path, monkeypatch):
    """``python train_flow.py output_dir=DIR`` resumes from DIR/checkpoints/last.ckpt."""
    marker = tmp_path / "EXECUTED"
    _hostile_lightning_checkpoint(tmp_path / "checkpoints" / "last.ckpt", marker)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # a user's environment
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(
            "train_flow",
            [
                f"output_dir={tmp_path}",
                "logger=none",
                "flow_training.max_steps=2",
                "flow.transforms=2",
                "flow.hidden=[32,32]",
                "flow_training.epoch_size=512",
                "flow_training.val_size=256",
                "flow_training.batch_size=128",
                "trainer.enable_progress_bar=false",
            ],
        )
    with pytest.raises(ValueError, match=r"last\.ckpt: refused to load.*posix\.system"):
        train_flow.main(cfg)
    assert not marker.exists()
    assert not (tmp_path / "flow.safetensors").exists()


def test_resumed_run_never_unpickles_the_best_checkpoint_it_is_pointed_at(tmp_path, monkeypatch):
    """A genuine last.ckpt whose ModelCheckpoint state names a hostile "best" file elsewhere:
    the final evaluation loads that path, and must refuse it, even when the environment asks
    torch for full unpickling by default."""
    G = load_generator("tiny")
    run = tmp_path / "run"
    fit_flow(G, SMALL_FLOW, max_steps=4, output_dir=run, trainer_kwargs=QUIET, **SMALL_RUN)
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    marker, hostile = tmp_path / "EXECUTED", tmp_path / "elsewhere" / "best.ckpt"
    _hostile_lightning_checkpoint(hostile, marker)
    (key,) = [k for k in ckpt["callbacks"] if k.startswith("ModelCheckpoint") and "val/nll" in k]
    ckpt["callbacks"][key].update(best_model_path=str(hostile), best_model_score=torch.tensor(-1e9))
    torch.save(ckpt, last)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(ValueError, match=r"elsewhere/best\.ckpt: refused.*posix\.system"):
        fit_flow(G, SMALL_FLOW, max_steps=6, output_dir=run, trainer_kwargs=QUIET, **SMALL_RUN)
    assert not marker.exists()


def test_hostile_inception_weights_are_refused(tmp_path, monkeypatch):
    """torch-fidelity itself unpickles its weight file in full; ours reads it weights-only."""
    from rls.metrics import RestorationMetrics
    from rls.weights import KNOWN_WEIGHTS

    marker = tmp_path / "EXECUTED"
    torch.save({"fc.weight": _touch(marker)}, tmp_path / KNOWN_WEIGHTS["inception"].filename)
    monkeypatch.setenv("RLS_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=r"weights-inception.*refused.*posix\.system"):
        RestorationMetrics.pretrained(lpips=(), fid=True)
    assert not marker.exists()
