"""Image files: listing a folder, checking entries, reading them upright as tensors.

Nothing here needs Lightning or a dataset: :func:`list_images` gives stable, unique ids for
a folder's images, :func:`entry_problem` and :func:`check_image` say why an entry cannot be
used, :func:`load_image` decodes one to ``[C, R, R]`` in [0, 1].
"""

from __future__ import annotations

import errno
import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageFile, ImageOps
from torch import Tensor

log = logging.getLogger("rls.data")


def readable_extensions() -> tuple[str, ...]:
    """Every file suffix for which Pillow has a reader (its registered extensions whose
    format it can open: PNG, JPEG, WebP, GIF, BMP, TIFF, ...), less its stubs (HDF5, GRIB,
    WMF...: formats it only identifies)."""
    Image.init()
    readers = {
        fmt
        for fmt, (cls, _) in Image.OPEN.items()
        if not (isinstance(cls, type) and issubclass(cls, ImageFile.StubImageFile))
    }
    return tuple(
        sorted(ext for ext, fmt in Image.registered_extensions().items() if fmt in readers)
    )


IMAGE_EXTENSIONS = readable_extensions()
# Pillow refuses to decode more pixels than this by default (a "decompression bomb": a
# small file that decodes to gigabytes). data.dataset.max_pixels sets it per run; an image
# over it is a failed row.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS
ON_ERROR = ("record", "skip", "raise")
# An HR image whose shorter side is under this fraction of the generator's resolution is not
# a high-resolution target (upscaling it only blurs it): it becomes a failed row.
MIN_HR_FRACTION = 0.5


# ----------------------------------------------------------------------------------------------
# Image files


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


def skipped_entries(root: str | os.PathLike) -> list[str]:
    """Names of the visible files in ``root`` that :func:`list_images` leaves out (no image
    format Pillow reads by that suffix), so that they can be listed, not silently dropped."""
    taken = {p.name for _, p in list_images(root)}
    return sorted(
        p.name
        for p in Path(root).iterdir()
        if p.name not in taken and not p.name.startswith(".") and not p.is_dir()
    )


@contextmanager
def pixel_limit(max_pixels: int | None = MAX_PIXELS):
    """Pillow's decompression-bomb limit set to ``max_pixels`` (``None``: no limit) while
    inside; the previous value is restored after. Pillow raises only past twice the limit
    (and warns below that): :func:`check_image` refuses anything past the limit itself."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


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


def check_image(path: Path, max_pixels: int | None = MAX_PIXELS) -> str | None:
    """A cheap header + integrity check; the reason it failed, or ``None`` if it looks fine.

    Any exception while reading becomes the reason (a file can fail in many ways: truncated,
    a decompression bomb, a codec Pillow lacks). More than ``max_pixels`` pixels: refused.
    """
    try:
        with pixel_limit(None), Image.open(path) as img:  # the header: the limit is ours below
            w, h = img.size
            if max_pixels is not None and w * h > max_pixels:
                return (
                    f"DecompressionBombError: {w}x{h} = {w * h} pixels, over the limit of "
                    f"{max_pixels} (data.dataset.max_pixels; raise it to read this image)"
                )
            img.verify()
    except Exception as err:  # one unreadable file is that file's failure, never the run's
        return f"{type(err).__name__}: {err}"
    return None


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the header only, upright (after the EXIF orientation)."""
    with pixel_limit(None), Image.open(path) as img:  # the header only: no bomb to fear
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
