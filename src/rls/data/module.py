"""The Lightning DataModule that serves one dataset to the evaluation's test loop.

Also the two checks it runs in ``setup`` (:func:`check_unique_ids`) and the factory
completion (:func:`build_dataset`), which need no Lightning themselves.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from rls.data.datasets import GeneratorSampleDataset, LRFolderDataset, collate_records


def _lightning_base():
    import pytorch_lightning as pl

    return pl.LightningDataModule


class RestorationDataModule(_lightning_base()):
    """Serves one dataset to Lightning's test loop, in a fixed order.

    ``dataset`` is a Dataset, or a factory (e.g. a Hydra ``_partial_``) completed in
    :meth:`setup` with what the generator tells: ``G`` (generator-sampled targets),
    ``resolution`` and ``channels`` (image folders), ``expected_size`` (LR folders: the
    generator's resolution / ``scale``), each passed only if the factory takes it and it is
    not already bound. Two inputs with the same image id are refused (their rows and files
    would overwrite each other). Under DDP each rank gets a disjoint shard (no image is
    repeated to even out the shards, so results.csv has every image exactly once).
    ``shard="I/N"``: only the images of shard I of N (:mod:`rls.data.shard`), one process.
    """

    def __init__(
        self,
        dataset: Dataset | Callable[..., Dataset],
        batch_size: int = 1,
        num_workers: int = 0,
        generator: torch.nn.Module | None = None,
        scale: int | None = None,
        shard: str | None = None,
    ):
        super().__init__()
        from rls.data.shard import parse_shard

        self.shard = parse_shard(shard)  # (I, N): serve only shard I of N (rls.data.shard)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.dataset_factory = dataset
        self.batch_size, self.num_workers = batch_size, num_workers
        self.generator, self.scale = generator, scale
        self.dataset: Dataset | None = dataset if isinstance(dataset, Dataset) else None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            self.dataset = build_dataset(self.dataset_factory, self.generator, self.scale)
        check_unique_ids(self.dataset)

    def test_dataloader(self) -> DataLoader:
        self.setup("test")
        workers = 0 if isinstance(self.dataset, GeneratorSampleDataset) else self.num_workers
        sampler = None
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if self.shard is not None:
            from rls.data.shard import ShardError, shard_indices

            if distributed:
                raise ShardError(
                    "data.shard with several processes (DDP): a shard is one process; run "
                    "the shards as separate jobs instead (a SLURM array: README, Cluster)"
                )
            sampler = shard_indices(list(self.dataset.image_ids), *self.shard)
        elif distributed:
            from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

            sampler = UnrepeatedDistributedSampler(self.dataset, shuffle=False)
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=False,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate_records,
        )

    predict_dataloader = test_dataloader


def check_unique_ids(dataset: Dataset) -> None:
    """Refuse a dataset in which two inputs share an image id (rows, seeds and output files
    are keyed by it, so one would silently replace the other)."""
    ids = getattr(dataset, "image_ids", None)
    if ids is None:
        return
    shared = sorted(i for i, n in Counter(ids).items() if n > 1)
    if shared:
        raise ValueError(
            f"{len(shared)} image id(s) shared by several inputs: {shared[:5]}; every input "
            "needs its own id (its rows, seeds and output files are keyed by it)"
        )


def build_dataset(
    factory: Callable[..., Dataset], G: torch.nn.Module | None = None, scale: int | None = None
) -> Dataset:
    """Call a dataset factory with the generator-given arguments it takes and lacks."""
    params = inspect.signature(factory).parameters
    offered = {}
    if G is not None:
        offered = {
            "G": G,
            "resolution": G.img_resolution,
            "channels": G.img_channels,
        }
        if scale:
            offered["expected_size"] = G.img_resolution // int(scale)
    kwargs = {}
    for name, value in offered.items():
        p = params.get(name)
        if p is None:
            continue
        bound = getattr(factory, "keywords", {}) or {}
        if name in bound:
            continue
        if name == "resolution" and _is_lr(factory):
            continue  # an LR folder's resolution is the LR side, not the generator's
        kwargs[name] = value
    missing = [
        n for n, p in params.items()
        if p.default is inspect.Parameter.empty and n not in kwargs
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]  # fmt: skip
    if missing:
        raise ValueError(f"dataset {_name(factory)} needs {missing} (pass generator= or set them)")
    return factory(**kwargs)


def _is_lr(factory) -> bool:
    func = getattr(factory, "func", factory)
    return isinstance(func, type) and issubclass(func, LRFolderDataset)


def _name(factory) -> str:
    func = getattr(factory, "func", factory)
    return getattr(func, "__name__", repr(func))
