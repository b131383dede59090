"""Datasets the evaluation runs on, and the Lightning DataModule that serves them.

Every dataset yields dicts (docs/interfaces.md): ``{"image_id": str, "hr": [C,R,R] in [0,1]}``
for image folders, ``{"image_id", "lr"}`` for LR-only folders, ``{"image_id", "hr", "w"}``
for generator-sampled targets. An entry that cannot be used (unreadable file, dangling link,
symlink loop, directory, HR image far smaller than the generator, LR image of the wrong
size) yields ``{"image_id", "error": "<path>: <reason>"}`` instead (``on_error="record"``),
so the run goes on and the evaluation writes a 'failed' row; :func:`collate_records` batches
both kinds. The datasets need no Lightning.
"""

from __future__ import annotations

import errno
import inspect
import logging
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from rls.seeding import seed_from_id

log = logging.getLogger("rls.data")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
ON_ERROR = ("record", "skip", "raise")
# An HR image whose shorter side is under this fraction of the generator's resolution is not
# a high-resolution target (upscaling it only blurs it): it becomes a failed row.
MIN_HR_FRACTION = 0.5


# ----------------------------------------------------------------------------------------------
# Image folders


def list_images(root: str | os.PathLike) -> list[tuple[str, Path]]:
    """``(image_id, path)`` for every entry in ``root`` named like an image, sorted by name.

    Entries that are not usable files (directories, dangling links, symlink loops) are
    listed too, so that :func:`entry_problem` can report each one instead of it vanishing.
    The id is the file stem; stems shared by several files (``a.png``, ``a.jpg``) become
    ``<stem>_<ext>`` for all of them (plus ``_<k>`` if still shared), so ids are stable
    and unique whatever else is in the folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: image folder not found")
    paths = sorted(
        (p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: p.name,
    )
    stems: dict[str, int] = {}
    for p in paths:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    ids, used = [], set()
    for p in paths:
        image_id = p.stem if stems[p.stem] == 1 else f"{p.stem}_{p.suffix[1:].lower()}"
        base, k = image_id, 1
        while image_id in used:
            image_id, k = f"{base}_{k}", k + 1
        used.add(image_id)
        ids.append((image_id, p))
    return ids


def entry_problem(path: Path) -> str | None:
    """Why a folder entry named like an image is not a readable file, or ``None``."""
    if path.is_symlink():
        try:
            path.stat()
        except OSError as err:
            if err.errno == errno.ELOOP:
                return "symlink loop (the link resolves to itself)"
            return f"dangling symlink (its target {os.readlink(path)} does not exist)"
    if path.is_dir():
        return "a directory, not an image file"
    if not path.is_file():
        return "not a regular file"
    if not os.access(path, os.R_OK):
        return "not readable (permission denied)"
    return None


def check_image(path: Path) -> str | None:
    """A cheap header + integrity check; the reason it failed, or ``None`` if it looks fine."""
    try:
        with Image.open(path) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the header only, upright (after the EXIF orientation)."""
    with Image.open(path) as img:
        w, h = img.size
        if img.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8):  # quarter turns
            w, h = h, w
    return w, h


def open_upright(path: Path, channels: int = 3, warned: set | None = None) -> Image.Image:
    """Decode ``path`` to a PIL image, upright and in RGB (or L for ``channels=1``).

    The EXIF orientation (phone photos) is applied first, with a logged note. Other colour
    modes are converted with one warning per file (alpha is dropped).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    warned = set() if warned is None else warned
    target_mode = "RGB" if channels == 3 else "L"
    with Image.open(path) as img:
        img.load()
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation not in (None, 1):
            if ("exif", path) not in warned:
                warned.add(("exif", path))
                log.info("%s: EXIF orientation %s applied (turned upright)", path, orientation)
            img = ImageOps.exif_transpose(img)
        if img.mode != target_mode:
            if path not in warned:
                warned.add(path)
                log.warning(
                    "%s: %s image (mode %s) converted to %s%s",
                    path,
                    _describe_mode(img.mode),
                    img.mode,
                    target_mode,
                    ", alpha dropped" if "A" in img.mode or "transparency" in img.info else "",
                )
            return _to_mode(img, target_mode)
        return img.copy()


def to_tensor(img: Image.Image) -> Tensor:
    """``[C, H, W]`` float in [0, 1] from an 8-bit PIL image."""
    tensor = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    return tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def load_image(
    path: Path, channels: int = 3, resolution: int | None = None, warned: set | None = None
) -> Tensor:
    """Decode ``path`` to ``[channels, R, R]`` float in [0, 1].

    :func:`open_upright`, then non-square or wrong-size images are center-cropped to a
    square and resized (PIL bicubic, which antialiases when shrinking) with a logged note.
    """
    img = open_upright(path, channels, warned)
    if resolution is not None and img.size != (resolution, resolution):
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        crop = f" center-cropped to {side}x{side} and" if w != h else ""
        log.info("%s: %dx%d%s resized to %dx%d", path, w, h, crop, resolution, resolution)
        img = img.crop((left, top, left + side, top + side))
        img = img.resize((resolution, resolution), Image.Resampling.BICUBIC)
    return to_tensor(img)


def _describe_mode(mode: str) -> str:
    if mode in ("L", "LA", "1", "I", "I;16", "F"):
        return "grayscale"
    if mode in ("RGBA", "LA", "PA"):
        return "transparent"
    return "non-RGB"


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
    if img.mode.startswith("I") or img.mode == "F":  # 16/32-bit: rescale to 8 bit first
        array = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or (img.mode == "I" and array.max() > 255):
            peak = 65535.0
        else:
            peak = 1.0 if img.mode == "F" and array.max() <= 1 else 255.0
        img = Image.fromarray((array / peak * 255.0).round().clip(0, 255).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA")
    return img.convert(mode)


class _FolderDataset(Dataset):
    """Shared indexing and failure handling of the image-folder datasets.

    Every entry is checked at index time (cheaply: the header, not the pixels); one that
    cannot be used is logged, listed in ``failures`` and, with ``on_error="record"``, served
    as an error record naming the path and the reason.
    """

    key = "hr"

    def __init__(self, root, resolution, channels, on_error):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.root = Path(root)
        self.resolution = resolution
        self.channels = channels
        self.on_error = on_error
        self.failures: list[tuple[Path, str]] = []
        self.items: list[tuple[str, Path]] = []
        self._rejected: dict[str, str] = {}  # image_id -> "<path>: <reason>"
        self._warned: set = set()
        for image_id, path in list_images(root):
            reason = entry_problem(path) or check_image(path) or self._size_problem(path)
            if reason is not None:
                self._fail(path, reason)
                if on_error == "skip":
                    continue
                self._rejected[image_id] = f"{path}: {reason}"
            self.items.append((image_id, path))
        if not self.items:
            raise FileNotFoundError(
                f"{self.root}: no readable images ({', '.join(IMAGE_EXTENSIONS)})"
            )

    def _size_problem(self, path: Path) -> str | None:
        """Why the image's size makes it unusable here, or ``None`` (subclasses decide)."""
        return None

    def _fail(self, path: Path, reason: str) -> None:
        if self.on_error == "raise":
            raise ValueError(f"{path}: cannot be used ({reason})")
        if (path, reason) not in self.failures:
            self.failures.append((path, reason))
            action = "skipped" if self.on_error == "skip" else "recorded as failed"
            log.error("%s: %s, %s", path, reason, action)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def image_ids(self) -> list[str]:
        return [image_id for image_id, _ in self.items]

    def __getitem__(self, index: int) -> dict:
        image_id, path = self.items[index]
        if image_id in self._rejected:
            return {"image_id": image_id, "error": self._rejected[image_id]}
        try:
            fields = self._decode(path)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            reason = f"{type(err).__name__}: {err}"
            self._fail(path, reason)
            return {"image_id": image_id, "error": f"{path}: {reason}"}
        return {"image_id": image_id, **fields}

    def _decode(self, path: Path) -> dict:
        """The record's fields for a readable file (subclasses add to them)."""
        return {self.key: load_image(path, self.channels, self.resolution, self._warned)}


class ImageFolderDataset(_FolderDataset):
    """HR images from a folder (png, jpg/jpeg, webp), resized to the generator resolution.

    ``on_error``: ``"record"`` (default) yields ``{"image_id", "error"}`` for an unusable
    entry, ``"skip"`` drops entries failing the index-time checks, ``"raise"`` stops.
    Every failure is logged and listed in ``failures`` as ``(path, reason)`` (those found
    while decoding inside DataLoader worker processes reach the caller as error records only).

    ``min_hr_fraction``: an image whose shorter side is under this fraction of
    ``resolution`` is refused (it would be upscaled into a blurry "high-resolution" target
    and scored as one); one between that and ``resolution`` is used with a warning.

    ``align="ffhq"``: instead of a centre crop, each photo's face is found (dlib's 68
    landmarks; ``landmarks_model`` is the shape model file, or ``None`` for the weight
    caches) and cropped the FFHQ way (:mod:`rls.align`); the size checks then apply to the
    face's crop square, and a photo without a face is a failed row. ``paste_back=True``
    adds ``"quad"`` (the crop square, ``[4, 2]``) and ``"source"`` (the photo's path) to
    each record, so the restored face can be pasted back into the photo.
    """

    key = "hr"

    def __init__(
        self,
        root,
        resolution: int,
        channels: int = 3,
        on_error: str = "record",
        min_hr_fraction: float = MIN_HR_FRACTION,
        align: str | None = None,
        landmarks_model: str | None = None,
        paste_back: bool = False,
        landmarks=None,
    ):
        if not 0 <= min_hr_fraction <= 1:
            raise ValueError(f"min_hr_fraction must be in [0, 1], got {min_hr_fraction}")
        if align not in (None, "none", "ffhq"):
            raise ValueError(f"data.dataset.align={align!r}: expected null or 'ffhq'")
        if paste_back and align != "ffhq":
            raise ValueError("data.dataset.paste_back=true needs data.dataset.align=ffhq")
        self.min_hr_fraction = min_hr_fraction
        self.paste_back = paste_back
        self._aligner = None
        if align == "ffhq":
            from rls.align import DlibLandmarks, FFHQAligner

            if channels != 3:
                raise ValueError("data.dataset.align=ffhq needs an RGB generator (channels 3)")
            # ``landmarks``: any callable photo -> [68, 2] (dlib's by default).
            self._aligner = FFHQAligner(resolution, landmarks or DlibLandmarks(landmarks_model))
        super().__init__(root, resolution, channels, on_error)

    def _decode(self, path: Path) -> dict:
        if self._aligner is None:
            return super()._decode(path)
        from rls.align import quad_side

        photo = open_upright(path, 3, self._warned)
        face = self._aligner(photo)
        side = quad_side(face.quad)
        problem = self._side_problem(path, f"face crop {side:.0f} px across", side)
        if problem is not None:
            raise ValueError(problem)
        log.info("%s: face aligned the FFHQ way (crop %.0f px across)", path, side)
        fields = {"hr": to_tensor(face.image)}
        if self.paste_back:
            fields.update(quad=torch.from_numpy(face.quad), source=str(path))
        return fields

    def _size_problem(self, path: Path) -> str | None:
        if self._aligner is not None:
            return None  # the face's crop is checked once found (see _decode)
        w, h = image_size(path)
        return self._side_problem(path, f"HR image {w}x{h}", min(w, h))

    def _side_problem(self, path: Path, what: str, side: float) -> str | None:
        target = self.resolution
        if side >= target:
            return None
        if side < self.min_hr_fraction * target:
            return (
                f"{what} is smaller than {self.min_hr_fraction:g} x the generator's "
                f"resolution {target} (min_hr_fraction): upscaled, it would be scored as a "
                "high-resolution target it is not"
            )
        log.warning(
            "%s: %s is smaller than the generator's resolution %d: it is upscaled, "
            "so its HR metrics compare against an upscaled image, not a true HR one",
            path,
            what,
            target,
        )
        return None


class LRFolderDataset(_FolderDataset):
    """Observed LR images the user already has (no degradation applied); yields ``"lr"``.

    Images are used at their own size unless ``resolution`` (the LR side, R / scale) is
    given; then other sizes are center-cropped and resized with a logged note.
    ``expected_size`` (the LR side the search needs: generator resolution / scale) makes
    every image of another size a failed entry naming both sizes, so a folder of mixed
    sizes runs with the odd ones failed.
    """

    key = "lr"

    def __init__(
        self,
        root,
        resolution: int | None = None,
        channels: int = 3,
        on_error: str = "record",
        expected_size: int | None = None,
    ):
        self.expected_size = expected_size
        super().__init__(root, resolution, channels, on_error)

    def _size_problem(self, path: Path) -> str | None:
        e = self.expected_size
        if e is None or self.resolution is not None:
            return None
        w, h = image_size(path)
        if (w, h) == (e, e):
            return None
        return (
            f"LR image {w}x{h}, but the search needs {e}x{e} (the generator's resolution / "
            "scale): change the scale or the generator to match, or resize the LR inputs"
        )


# ----------------------------------------------------------------------------------------------
# Generator-sampled (in-domain) targets


class GeneratorSampleDataset(Dataset):
    """HR = (G.synthesis(w) + 1) / 2 for a seeded z per index, keeping the true W+ code.

    Index i is ``gen{i:05d}``; its z comes from ``seed_from_id(image_id, f"data.z.{seed}")``,
    drawn on the CPU, so the targets are the same on every device and in every batching.
    ``noise_mode="random"`` draws the noise maps from a per-image seed as well.
    Runs G in ``__getitem__``: use it with ``num_workers=0`` (the DataModule does).
    """

    def __init__(
        self,
        G: torch.nn.Module,
        n: int = 4,
        seed: int = 0,
        truncation_psi: float = 1.0,
        noise_mode: str = "const",
    ):
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        if noise_mode not in ("const", "random", "none"):
            raise ValueError(f"noise_mode must be const, random or none, got {noise_mode!r}")
        self.G, self.n, self.seed = G, n, seed
        self.truncation_psi, self.noise_mode = truncation_psi, noise_mode

    def __len__(self) -> int:
        return self.n

    @property
    def image_ids(self) -> list[str]:
        return [f"gen{i:05d}" for i in range(self.n)]

    @torch.no_grad()
    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} generated images")
        image_id = f"gen{index:05d}"
        device = next(self.G.parameters()).device
        g = torch.Generator().manual_seed(seed_from_id(image_id, f"data.z.{self.seed}"))
        z = torch.randn(1, self.G.z_dim, generator=g).to(device)
        ws = self.G.mapping(z, None, truncation_psi=self.truncation_psi)
        noise = None
        if self.noise_mode == "random":
            g = torch.Generator().manual_seed(seed_from_id(image_id, f"data.noise.{self.seed}"))
            noise = [
                torch.randn(1, 1, *shape, generator=g).to(device)
                for shape in self.G.synthesis.noise_shapes()
            ]
        img = self.G.synthesis(ws, noise_mode="const" if noise else self.noise_mode, noise=noise)
        hr = ((img[0].float() + 1) / 2).clamp(0, 1).cpu()
        return {"image_id": image_id, "hr": hr, "w": ws[0].float().cpu()}


# ----------------------------------------------------------------------------------------------
# Batching


def collate_records(records: list[dict]) -> dict:
    """Batch dataset records: tensors stacked, ids listed, error records set aside.

    Returns ``{"image_id": [ids of the stacked rows], <key>: Tensor[B, ...] for every tensor
    key, "failures": [(image_id, error), ...]}``. A batch of only failures has
    ``image_id == []`` and no tensors. Records whose tensor shapes differ from the most common
    ones of the batch become failures naming both shapes (never a batching error).
    """
    good = [r for r in records if "error" not in r]
    failures = [(r["image_id"], r["error"]) for r in records if "error" in r]
    for r in good[1:]:
        if sorted(k for k in r if k != "image_id") != sorted(k for k in good[0] if k != "image_id"):
            raise ValueError(
                f"records {good[0]['image_id']} and {r['image_id']} have different keys: "
                f"{sorted(good[0])} vs {sorted(r)}"
            )

    def shapes(r: dict) -> tuple:
        return tuple((k, tuple(v.shape)) for k, v in r.items() if isinstance(v, Tensor))

    if good:
        common = Counter(shapes(r) for r in good).most_common(1)[0][0]  # ties: the first seen
        for r in good:
            if shapes(r) != common:
                mine = ", ".join(f"{k} {s}" for k, s in shapes(r))
                other = ", ".join(f"{k} {s}" for k, s in common)
                reason = f"size {mine} differs from {other} of the other images of its batch"
                failures.append((r["image_id"], f"{r['image_id']}: {reason}"))
        good = [r for r in good if shapes(r) == common]
    batch: dict = {"image_id": [r["image_id"] for r in good], "failures": failures}
    if not good:
        return batch
    for key in (k for k in good[0] if k != "image_id"):
        values = [r[key] for r in good]
        batch[key] = torch.stack(values) if isinstance(values[0], Tensor) else values
    return batch


# ----------------------------------------------------------------------------------------------
# Lightning


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
    """

    def __init__(
        self,
        dataset: Dataset | Callable[..., Dataset],
        batch_size: int = 1,
        num_workers: int = 0,
        generator: torch.nn.Module | None = None,
        scale: int | None = None,
    ):
        super().__init__()
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
        if torch.distributed.is_available() and torch.distributed.is_initialized():
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
