"""Datasets: image folders with awkward files, LR-only folders, generator-sampled targets."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rls.data import (
    GeneratorSampleDataset,
    ImageFolderDataset,
    LRFolderDataset,
    RestorationDataModule,
    build_dataset,
    collate_records,
    list_images,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _rgb(size, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def folder(tmp_path):
    """A folder with every kind of file the dataset must cope with."""
    _rgb((16, 16), 1).save(tmp_path / "b_rgb.png")
    _rgb((16, 16), 2).save(tmp_path / "c_jpeg.JPG", quality=95)
    _rgb((16, 16), 3).save(tmp_path / "d_webp.webp", lossless=True)
    _rgb((16, 16), 4).convert("L").save(tmp_path / "e_gray.png")
    rgba = _rgb((16, 16), 5).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(tmp_path / "f_rgba.png")
    _rgb((32, 20), 6).save(tmp_path / "g_wide.png")
    (tmp_path / "h_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    _rgb((16, 16), 7).save(tmp_path / "a_dup.png")
    _rgb((16, 16), 8).save(tmp_path / "a_dup.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_ids_are_sorted_stems_and_duplicates_are_disambiguated(folder):
    ids = [i for i, _ in list_images(folder)]
    assert ids == [
        "a_dup_jpg", "a_dup_png", "b_rgb", "c_jpeg", "d_webp",
        "e_gray", "f_rgba", "g_wide", "h_corrupt",
    ]  # fmt: skip
    assert ids == [i for i, _ in list_images(folder)]  # stable across calls


def test_folder_yields_rgb_tensors_at_the_generator_resolution(folder, caplog):
    caplog.set_level(logging.INFO, logger="rls.data")
    ds = ImageFolderDataset(folder, resolution=16)
    records = {r["image_id"]: r for r in (ds[i] for i in range(len(ds)))}
    for image_id, r in records.items():
        if image_id == "h_corrupt":
            continue
        assert r["hr"].shape == (3, 16, 16) and r["hr"].dtype == torch.float32
        assert 0 <= r["hr"].min() and r["hr"].max() <= 1
    # lossless formats decode to the exact pixels
    expected = torch.from_numpy(np.array(_rgb((16, 16), 1))).permute(2, 0, 1) / 255
    torch.testing.assert_close(records["b_rgb"]["hr"], expected.float())
    gray = records["e_gray"]["hr"]
    torch.testing.assert_close(gray[0], gray[1])
    torch.testing.assert_close(gray[0], gray[2])
    # one warning per converted file, naming it; a note for the resized one
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("e_gray.png" in m and "grayscale" in m for m in warnings) == 1
    assert sum("f_rgba.png" in m and "alpha dropped" in m for m in warnings) == 1
    notes = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("g_wide.png" in m and "32x20 center-cropped to 20x20" in m for m in notes)
    ds[ds.image_ids.index("e_gray")]  # loading a converted file again warns no more
    again = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(again) == len(warnings)


def test_non_square_image_is_center_cropped(tmp_path):
    array = np.zeros((8, 24, 3), dtype=np.uint8)
    array[:, 8:16] = 255  # white center square, black side bands
    Image.fromarray(array).save(tmp_path / "wide.png")
    hr = ImageFolderDataset(tmp_path, resolution=8)[0]["hr"]
    assert torch.allclose(hr, torch.ones_like(hr))


def test_corrupt_file_is_reported_and_the_rest_still_load(folder, caplog):
    ds = ImageFolderDataset(folder, resolution=16)
    assert [p.name for p, _ in ds.failures] == ["h_corrupt.png"]
    assert any("h_corrupt.png" in r.getMessage() for r in caplog.records)
    record = ds[ds.image_ids.index("h_corrupt")]
    assert set(record) == {"image_id", "error"} and "h_corrupt.png" in record["error"]
    skipping = ImageFolderDataset(folder, resolution=16, on_error="skip")
    assert "h_corrupt" not in skipping.image_ids and len(skipping) == len(ds) - 1
    with pytest.raises(ValueError, match="h_corrupt.png"):
        ImageFolderDataset(folder, resolution=16, on_error="raise")


def test_truncated_file_found_only_when_decoding_becomes_an_error_record(tmp_path):
    _rgb((16, 16), 1).save(tmp_path / "ok.png")
    _rgb((64, 64), 2).save(tmp_path / "cut.jpg", quality=90)
    data = (tmp_path / "cut.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    ds = ImageFolderDataset(tmp_path, resolution=16)
    records = [ds[i] for i in range(len(ds))]
    assert [("error" in r) for r in records] == [True, False]
    assert ds.failures and ds.failures[0][0].name == "cut.jpg"


def test_missing_or_empty_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolderDataset(tmp_path / "nowhere", resolution=16)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        ImageFolderDataset(tmp_path, resolution=16)


def test_lr_folder_keeps_own_size_and_yields_lr(tmp_path):
    _rgb((8, 8), 1).save(tmp_path / "x.png")
    r = LRFolderDataset(tmp_path)[0]
    assert set(r) == {"image_id", "lr"} and r["image_id"] == "x" and r["lr"].shape == (3, 8, 8)
    assert LRFolderDataset(tmp_path, resolution=4)[0]["lr"].shape == (3, 4, 4)


def test_collate_stacks_good_records_and_sets_failures_aside():
    batch = collate_records(
        [
            {"image_id": "a", "hr": torch.zeros(3, 4, 4)},
            {"image_id": "bad", "error": "bad.png: broken"},
            {"image_id": "c", "hr": torch.ones(3, 4, 4)},
        ]
    )
    assert batch["image_id"] == ["a", "c"] and batch["hr"].shape == (2, 3, 4, 4)
    assert batch["failures"] == [("bad", "bad.png: broken")]
    only_bad = collate_records([{"image_id": "bad", "error": "x"}])
    assert only_bad["image_id"] == [] and "hr" not in only_bad
    mixed = collate_records(
        [
            {"image_id": "a", "lr": torch.zeros(3, 4, 4)},
            {"image_id": "odd", "lr": torch.zeros(3, 8, 8)},
            {"image_id": "c", "lr": torch.zeros(3, 4, 4)},
        ]
    )  # mixed sizes: the odd one fails, the rest are batched (never a batching error)
    assert mixed["image_id"] == ["a", "c"] and mixed["lr"].shape == (2, 3, 4, 4)
    assert mixed["failures"] == [
        ("odd", "odd: size lr (3, 8, 8) differs from lr (3, 4, 4) of the other images of its batch")
    ]
    with pytest.raises(ValueError, match="different keys"):
        collate_records(
            [{"image_id": "a", "hr": torch.zeros(1)}, {"image_id": "c", "lr": torch.zeros(1)}]
        )


@pytest.fixture(scope="module")
def G():
    from rls.generators import load_generator

    return load_generator("tiny").eval()


def test_generated_targets_are_deterministic_and_keep_the_true_w(G):
    ds = GeneratorSampleDataset(G, n=3, seed=7)
    a, b = ds[2], GeneratorSampleDataset(G, n=5, seed=7)[2]  # same id, other dataset size
    assert a["image_id"] == "gen00002" and ds.image_ids == ["gen00000", "gen00001", "gen00002"]
    torch.testing.assert_close(a["hr"], b["hr"], rtol=0, atol=0)
    torch.testing.assert_close(a["w"], b["w"], rtol=0, atol=0)
    assert a["hr"].shape == (G.img_channels, G.img_resolution, G.img_resolution)
    assert a["w"].shape == (G.num_ws, G.w_dim)
    assert 0 <= a["hr"].min() and a["hr"].max() <= 1
    # HR is exactly what the generator makes from the kept w
    with torch.no_grad():
        x = ((G.synthesis(a["w"][None], noise_mode="const") + 1) / 2).clamp(0, 1)[0]
    torch.testing.assert_close(a["hr"], x)
    assert not torch.equal(ds[0]["w"], ds[1]["w"])
    assert not torch.equal(GeneratorSampleDataset(G, n=3, seed=8)[2]["w"], a["w"])
    with pytest.raises(IndexError):
        ds[3]


def test_random_noise_mode_is_seeded_per_image(G):
    ds = GeneratorSampleDataset(G, n=2, noise_mode="random")
    torch.testing.assert_close(ds[1]["hr"], ds[1]["hr"], rtol=0, atol=0)
    assert not torch.equal(ds[1]["hr"], GeneratorSampleDataset(G, n=2)[1]["hr"])


def test_datamodule_serves_batches_in_order_with_failures(folder):
    dm = RestorationDataModule(ImageFolderDataset(folder, resolution=16), batch_size=4)
    batches = list(dm.test_dataloader())
    ids = [i for b in batches for i in b["image_id"]]
    failed = [f for b in batches for f in b["failures"]]
    assert ids == [i for i in dm.dataset.image_ids if i != "h_corrupt"]
    assert [f[0] for f in failed] == ["h_corrupt"]


def test_hydra_data_configs_instantiate_with_the_generator(G, folder):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(str(CONFIGS / "data"), version_base="1.3"):
        generated = compose("generated", overrides=["dataset.n=2"])
        folder_cfg = compose("folder", overrides=[f"dataset.root={folder}"])
        lr_cfg = compose("lr_folder", overrides=[f"dataset.root={folder}"])
    dm = instantiate(generated, generator=G)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch["image_id"] == ["gen00000", "gen00001"] and batch["w"].shape[0] == 2
    dm = instantiate(folder_cfg, generator=G)
    dm.setup("test")
    assert dm.dataset.resolution == G.img_resolution
    dm = instantiate(lr_cfg, generator=G)
    dm.setup("test")
    assert dm.dataset.resolution is None  # an LR folder never takes the HR resolution


def test_factory_without_generator_names_what_is_missing(folder):
    from functools import partial

    with pytest.raises(ValueError, match="resolution"):
        build_dataset(partial(ImageFolderDataset, root=folder))


def test_sixteen_bit_grayscale_is_rescaled_not_clipped(tmp_path, caplog):
    array = np.full((8, 8), 32768, dtype=np.uint16)  # half of the 16-bit range
    Image.fromarray(array).save(tmp_path / "deep.png")
    hr = ImageFolderDataset(tmp_path, resolution=8)[0]["hr"]
    assert hr.shape == (3, 8, 8)
    torch.testing.assert_close(hr, torch.full_like(hr, 128 / 255))
    assert any(
        "deep.png" in r.getMessage() and "grayscale" in r.getMessage() for r in caplog.records
    )


def _shard_worker(rank, world, init_file, root, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    dm = RestorationDataModule(ImageFolderDataset(root, resolution=4), batch_size=2)
    ids = [i for batch in dm.test_dataloader() for i in batch["image_id"]]
    torch.save(ids, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_shards_are_disjoint_and_complete(tmp_path):
    import torch.multiprocessing as mp

    root = tmp_path / "imgs"
    root.mkdir()
    for k in range(5):  # odd count: a padding sampler would repeat one image
        _rgb((4, 4), k).save(root / f"img{k}.png")
    out = tmp_path / "ids"
    mp.spawn(_shard_worker, args=(2, tmp_path / "init", root, out), nprocs=2, join=True)
    shards = [torch.load(f"{out}.{r}") for r in range(2)]
    assert sorted(shards[0] + shards[1]) == [f"img{k}" for k in range(5)]
    assert not set(shards[0]) & set(shards[1])
