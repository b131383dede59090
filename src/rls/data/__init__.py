"""Datasets the evaluation runs on, and the Lightning DataModule that serves them.

``images`` reads and checks image files, ``datasets`` holds the datasets (image folders, LR
folders, generator-sampled targets) and their batching, ``module`` the DataModule. The
datasets need no Lightning: the DataModule (and with it Lightning) is imported on first use
of :class:`RestorationDataModule`, :func:`build_dataset` or :func:`check_unique_ids`.
"""

from rls.data.datasets import (
    GeneratorSampleDataset,
    ImageFolderDataset,
    LRFolderDataset,
    collate_records,
)
from rls.data.images import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    MIN_HR_FRACTION,
    ON_ERROR,
    check_image,
    entry_problem,
    image_size,
    list_images,
    load_image,
    open_upright,
    pixel_limit,
    skipped_entries,
    to_tensor,
)
from rls.data.lfw import LFWDataset, lfw_faces

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "MIN_HR_FRACTION",
    "ON_ERROR",
    "GeneratorSampleDataset",
    "ImageFolderDataset",
    "LFWDataset",
    "LRFolderDataset",
    "RestorationDataModule",
    "build_dataset",
    "check_image",
    "check_unique_ids",
    "collate_records",
    "entry_problem",
    "image_size",
    "lfw_faces",
    "list_images",
    "load_image",
    "open_upright",
    "pixel_limit",
    "skipped_entries",
    "to_tensor",
]


def __getattr__(name: str):
    # The DataModule subclasses Lightning's: import it (and Lightning) only when asked for.
    if name in ("RestorationDataModule", "build_dataset", "check_unique_ids"):
        from rls.data import module

        return getattr(module, name)
    raise AttributeError(f"module 'rls.data' has no attribute {name!r}")
