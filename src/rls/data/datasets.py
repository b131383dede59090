"""Datasets the evaluation runs on, and how their records are batched.

Every dataset yields dicts (docs/interfaces.md): ``{"image_id": str, "hr": [C,R,R] in [0,1]}``
for image folders, ``{"image_id", "lr"}`` for LR-only folders, ``{"image_id", "hr", "w"}``
for generator-sampled targets. An entry that cannot be used (unreadable file, dangling link,
symlink loop, directory, HR image far smaller than the generator, LR image of the wrong
size) yields ``{"image_id", "error": "<path>: <reason>"}`` instead (``on_error="record"``),
so the run goes on and the evaluation writes a 'failed' row; :func:`collate_records` batches
both kinds. The datasets need no Lightning.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from rls.data.images import (
    MAX_PIXELS,
    MIN_HR_FRACTION,
    ON_ERROR,
    check_image,
    entry_problem,
    image_size,
    list_images,
    load_image,
    log,
    open_upright,
    pixel_limit,
    skipped_entries,
    to_tensor,
)
from rls.seeding import seed_from_id

# ----------------------------------------------------------------------------------------------
# Image folders


class _FolderDataset(Dataset):
    """Shared indexing and failure handling of the image-folder datasets.

    Every entry is checked at index time (cheaply: the header, not the pixels); one that
    cannot be used is logged, listed in ``failures`` and, with ``on_error="record"``, served
    as an error record naming the path and the reason.
    """

    key = "hr"

    def __init__(self, root, resolution, channels, on_error, max_pixels=MAX_PIXELS):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.root = Path(root)
        self.resolution = resolution
        self.channels = channels
        self.on_error = on_error
        self.max_pixels = max_pixels
        self.failures: list[tuple[Path, str]] = []
        self.items: list[tuple[str, Path]] = []
        self._rejected: dict[str, str] = {}  # image_id -> "<path>: <reason>"
        self._warned: set = set()
        skipped = skipped_entries(root)
        if skipped:
            shown = ", ".join(skipped[:8]) + (
                f" and {len(skipped) - 8} more" if len(skipped) > 8 else ""
            )
            log.warning(
                "%s: %d file(s) skipped, not in an image format Pillow reads: %s",
                root,
                len(skipped),
                shown,
            )
        self.skipped = skipped
        for image_id, path in list_images(root):
            reason = entry_problem(path) or check_image(path, max_pixels)
            if reason is None:
                try:
                    reason = self._size_problem(path)
                except Exception as err:  # an unreadable header: this file's failure only
                    reason = f"{type(err).__name__}: {err}"
            if reason is not None:
                self._fail(path, reason)
                if on_error == "skip":
                    continue
                self._rejected[image_id] = f"{path}: {reason}"
            self.items.append((image_id, path))
        if not self.items:
            raise FileNotFoundError(
                f"{self.root}: no image in a format Pillow reads"
                + (f" (skipped: {', '.join(skipped[:8])})" if skipped else "")
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
            with pixel_limit(self.max_pixels):
                fields = self._decode(path)
        except Exception as err:  # whatever reading one file raises is that file's failed row
            reason = f"{type(err).__name__}: {err}"
            self._fail(path, reason)
            return {"image_id": image_id, "error": f"{path}: {reason}"}
        return {"image_id": image_id, **fields}

    def _decode(self, path: Path) -> dict:
        """The record's fields for a readable file (subclasses add to them)."""
        return {self.key: load_image(path, self.channels, self.resolution, self._warned)}


class ImageFolderDataset(_FolderDataset):
    """HR images from a folder (every format Pillow reads), resized to the generator resolution.

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
        max_pixels: int | None = MAX_PIXELS,
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
        super().__init__(root, resolution, channels, on_error, max_pixels)

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
        max_pixels: int | None = MAX_PIXELS,
    ):
        self.expected_size = expected_size
        super().__init__(root, resolution, channels, on_error, max_pixels)

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
