"""Offline-aware resolution of pretrained weight files (LPIPS backbones, Inception for FID/KID).

Nothing here downloads behind the user's back: a file is looked up in an explicit path, the
directory named by ``$RLS_WEIGHTS_DIR`` and the torch hub checkpoint cache (where torchvision
and torch-fidelity put their downloads). Only if it is absent, downloads are allowed and
offline mode is off (``$RLS_OFFLINE`` unset or ``0``) is it fetched, with a short timeout
and its SHA-256 prefix checked. Otherwise :class:`MissingWeightsError` says which file to
get and where to put it.
"""

from __future__ import annotations

import bz2
import hashlib
import os
import shutil
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

OFFLINE_ENV = "RLS_OFFLINE"
WEIGHTS_DIR_ENV = "RLS_WEIGHTS_DIR"
DOWNLOAD_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class WeightFile:
    """A pretrained file by name: where it comes from and the SHA-256 prefix it must have.

    ``sha256_prefix=None``: no published checksum to pin; the file loads with a warning
    that prints its SHA-256, so a user can pin it. A ``url`` ending in ``.bz2`` is
    decompressed after the download.
    """

    filename: str
    url: str
    sha256_prefix: str | None
    purpose: str


KNOWN_WEIGHTS: dict[str, WeightFile] = {
    "alexnet": WeightFile(
        "alexnet-owt-7be5be79.pth",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        "7be5be79",
        "torchvision AlexNet ImageNet backbone of LPIPS (alex)",
    ),
    "vgg16": WeightFile(
        "vgg16-397923af.pth",
        "https://download.pytorch.org/models/vgg16-397923af.pth",
        "397923af",
        "torchvision VGG16 ImageNet backbone of LPIPS (vgg)",
    ),
    "inception": WeightFile(
        "weights-inception-2015-12-05-6726825d.pth",
        "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
        "weights-inception-2015-12-05-6726825d.pth",
        "6726825d",
        "torch-fidelity Inception-v3 (FID/KID features)",
    ),
    "dlib_landmarks68": WeightFile(
        "shape_predictor_68_face_landmarks.dat",
        "http://dlib.net/files/shape_predictor_68_face_landmarks.dat.bz2",
        None,  # dlib publishes no checksum
        "dlib 68-point face landmark model (data.align=ffhq)",
    ),
}


class MissingWeightsError(FileNotFoundError):
    """A pretrained file is neither on disk nor downloadable here."""


def is_offline() -> bool:
    """True when ``$RLS_OFFLINE`` is set to anything but ``0``/empty."""
    return os.environ.get(OFFLINE_ENV, "0").strip().lower() not in ("", "0", "false", "no")


def cache_dirs() -> list[Path]:
    """Directories searched, in order: ``$RLS_WEIGHTS_DIR``, then the torch hub checkpoints."""
    dirs = []
    if os.environ.get(WEIGHTS_DIR_ENV):
        dirs.append(Path(os.environ[WEIGHTS_DIR_ENV]).expanduser())
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


def find_weights(name: str, path: str | os.PathLike | None = None) -> Path | None:
    """The local file for ``name`` (a key of :data:`KNOWN_WEIGHTS`), or ``None``.

    ``path`` may be the file itself or a directory holding it; an explicit path that does not
    exist raises, since the user asked for that file.
    """
    spec = _spec(name)
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / spec.filename
        if not p.is_file():
            raise MissingWeightsError(f"{p}: configured weight file for {spec.purpose} not found")
        return p
    for d in cache_dirs():
        if (d / spec.filename).is_file():
            return d / spec.filename
    return None


def missing_message(name: str) -> str:
    """One sentence naming the file to get and where to put it."""
    spec = _spec(name)
    return (
        f"{spec.filename} ({spec.purpose}) not found; download {spec.url} into "
        f"{cache_dirs()[-1]} (or ${WEIGHTS_DIR_ENV}, or pass its path)"
    )


def resolve_weights(
    name: str, path: str | os.PathLike | None = None, allow_download: bool | None = None
) -> Path:
    """The local file for ``name``, downloading it into the hub cache only when allowed.

    ``allow_download=None`` means: download unless offline mode is set.
    """
    found = find_weights(name, path)
    if found is not None:
        return found
    if allow_download is None:
        allow_download = not is_offline()
    if not allow_download:
        raise MissingWeightsError(missing_message(name))
    spec = _spec(name)
    dst = cache_dirs()[-1] / spec.filename
    dst.parent.mkdir(parents=True, exist_ok=True)
    # torch.hub has no timeout argument; a global default one bounds a hung connection.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    compressed = spec.url.endswith(".bz2")
    target = dst.with_name(dst.name + ".bz2") if compressed else dst
    try:
        torch.hub.download_url_to_file(spec.url, str(target), hash_prefix=spec.sha256_prefix)
    except Exception as err:  # network errors come in many types; all mean "not here"
        raise MissingWeightsError(f"{missing_message(name)}; download failed: {err}") from err
    finally:
        socket.setdefaulttimeout(previous)
    if compressed:
        _decompress_bz2(target, dst)
    if spec.sha256_prefix is None:
        warnings.warn(
            f"{dst}: downloaded without a pinned checksum (none is published); "
            f"its SHA-256 is {_sha256(dst)}",
            stacklevel=2,
        )
    return dst


def _decompress_bz2(src: Path, dst: Path) -> None:
    """``src`` (.bz2) → ``dst``, written atomically; ``src`` is removed."""
    part = dst.with_name(dst.name + ".part")
    with bz2.open(src, "rb") as fin, open(part, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    os.replace(part, dst)
    src.unlink()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _spec(name: str) -> WeightFile:
    if name not in KNOWN_WEIGHTS:
        raise KeyError(f"unknown weight file {name!r}; known: {sorted(KNOWN_WEIGHTS)}")
    return KNOWN_WEIGHTS[name]
