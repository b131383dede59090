"""The real faces (scikit-image's LFW subset) and the generator trained on them (lfw32)."""

from __future__ import annotations

import functools

import pytest
import torch

from rls.data import LFWDataset, build_dataset, lfw_faces
from rls.data.lfw import HELDOUT_INDICES, TRAIN_INDICES
from rls.generators import load_generator
from rls.generators.download import SHIPPED_GENERATORS, shipped_path


def test_split_is_fixed_by_index():
    """Faces 0-89 train, 90-99 held out, in index order (no seed, no shuffle), disjoint."""
    assert TRAIN_INDICES == tuple(range(90)) and HELDOUT_INDICES == tuple(range(90, 100))
    from skimage.data import lfw_subset

    raw = torch.as_tensor(lfw_subset()[:100], dtype=torch.float32)
    held = lfw_faces("heldout", resolution=25, channels=1)[:, 0]
    train = lfw_faces("train", resolution=25, channels=1)[:, 0]
    assert torch.equal(held, raw[90:100]) and torch.equal(train, raw[:90])


def test_faces_are_grey_rgb_in_range():
    x = lfw_faces("heldout")
    assert x.shape == (10, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])  # R = G = B
    with pytest.raises(ValueError, match="unknown LFW split"):
        lfw_faces("test")


def test_dataset_yields_heldout_records_at_the_generator_resolution():
    G = load_generator("tiny", img_resolution=64)
    ds = build_dataset(functools.partial(LFWDataset, split="heldout"), G)
    assert ds.image_ids == [f"lfw{i:03d}" for i in range(90, 100)]
    record = ds[0]
    assert set(record) == {"image_id", "hr"} and record["hr"].shape == (3, 64, 64)
    assert torch.equal(record["hr"], lfw_faces("heldout", resolution=64)[0])
    first = LFWDataset(split="heldout", n=2)
    assert first.image_ids == ["lfw090", "lfw091"] and len(first) == 2
    with pytest.raises(ValueError, match="data.dataset.n=11"):
        LFWDataset(split="heldout", n=11)


def test_shipped_generator_loads_by_name_and_makes_images_in_range():
    path = shipped_path("lfw32")
    assert path is not None and path.is_file() and "lfw32" in SHIPPED_GENERATORS
    assert path.stat().st_size < 5_000_000
    G = load_generator("lfw32")
    assert (G.img_resolution, G.img_channels) == (32, 3) and not G.training
    z = torch.randn(16, G.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = G(z)
    assert x.shape == (16, 3, 32, 32) and torch.isfinite(x).all()
    assert x.abs().mean() < 1.0 and (x.abs() <= 1).float().mean() > 0.9  # mostly in [-1, 1]
