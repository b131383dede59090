"""Known official StyleGAN2 checkpoints by name, and a checked download into a cache.

A name resolves to ``$RLS_WEIGHTS_DIR/<file>`` when there, else
``$RLS_CACHE/generators/<file>`` (default ``~/.cache/rls``); a file already there is used as
is (after the size / SHA-256 check when pinned). A missing file is downloaded to
``<file>.<pid>.part`` and renamed only once complete and verified. Without network access the
error names the file, the URL and the exact path to put the file at. A local path never
touches the network.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rls.generators.formats_common import CheckpointError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownCheckpoint:
    """An official checkpoint: where it lives, what it is, and how to verify it.

    ``sha256`` / ``size`` are None where no trustworthy published value was found: such a file
    is accepted with a warning that it is unpinned (we never invent a hash).
    """

    name: str
    url: str
    filename: str
    description: str
    sha256: str | None = None
    size: int | None = None
    pinned_by: str = ""
    resolution: int | None = None  # output side, known before download (early checks)


KNOWN_CHECKPOINTS: dict[str, KnownCheckpoint] = {
    c.name: c
    for c in (
        KnownCheckpoint(
            name="ffhq-1024",
            resolution=1024,
            url="https://nvlabs-fi-cdn.nvidia.com/stylegan2/networks/stylegan2-ffhq-config-f.pkl",
            filename="stylegan2-ffhq-config-f.pkl",
            description="StyleGAN2 config-f FFHQ 1024² (NVIDIA TensorFlow pickle): the face prior "
            "of PULSE / RLS (rosinality's .pt of it is the same network)",
            sha256="adf127ea7bb8a7788c8bdeda3c9937f7310b669b09ecf799ca53a631ff46948d",
            size=381_673_535,
            pinned_by="a public CI script that pins the official bytes (not NVIDIA)",
        ),
        KnownCheckpoint(
            name="ffhq-1024-ada",
            resolution=1024,
            url="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",
            filename="stylegan2-ada-pytorch-ffhq.pkl",
            description="stylegan2-ada-pytorch ffhq.pkl: FFHQ 1024², original StyleGAN2 training",
        ),
        KnownCheckpoint(
            name="ffhq-1024-ngc",
            resolution=1024,
            url="https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/"
            "stylegan2-ffhq-1024x1024.pkl",
            filename="stylegan2-ffhq-1024x1024.pkl",
            description="stylegan3-repo StyleGAN2 FFHQ 1024² (NGC)",
        ),
        KnownCheckpoint(
            name="ffhq-256",
            resolution=256,
            url="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/"
            "transfer-learning-source-nets/ffhq-res256-mirror-paper256-noaug.pkl",
            filename="ffhq-res256-mirror-paper256-noaug.pkl",
            description="StyleGAN2-ADA paper FFHQ 256² (paper256 config, transfer-learning source)",
        ),
        KnownCheckpoint(
            name="ffhq-256-ngc",
            resolution=256,
            url="https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/"
            "stylegan2-ffhq-256x256.pkl",
            filename="stylegan2-ffhq-256x256.pkl",
            description="stylegan3-repo StyleGAN2 FFHQ 256² (NGC)",
        ),
    )
}


def cache_dir() -> Path:
    """``$RLS_CACHE/generators`` (default ``~/.cache/rls/generators``)."""
    root = os.environ.get("RLS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "rls")
    return Path(root) / "generators"


def is_url(source: str) -> bool:
    return urllib.parse.urlparse(str(source)).scheme in ("http", "https")


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, spec: KnownCheckpoint) -> None:
    """Check size and SHA-256 where pinned; warn once where the hash is unpinned."""
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        raise CheckpointError(
            f"{path}: {size} bytes, but '{spec.name}' ({spec.url}) is {spec.size} bytes:"
            " truncated or a different file. Delete it and download again."
        )
    if spec.sha256 is None:
        log.warning("%s: '%s' has no pinned SHA-256; the file is unverified", path, spec.name)
        return
    digest = sha256_of(path)
    if digest != spec.sha256:
        raise CheckpointError(
            f"{path}: SHA-256 {digest} differs from the pinned {spec.sha256} of '{spec.name}'"
            f" ({spec.url}). Delete it and download again."
        )


def _offline_error(url: str, target: Path, err: Exception, name: str | None) -> CheckpointError:
    label = f"'{name}'" if name else "the checkpoint"
    return CheckpointError(
        f"Could not download {label} ({type(err).__name__}: {err}).\n"
        f"  file: {target.name}\n  URL:  {url}\n"
        f"Download it on a machine with internet access and put it at exactly:\n  {target}\n"
        f"or point at any local copy: generator=local generator.source=/path/to/{target.name}"
    )


def download(url: str, target: Path, spec: KnownCheckpoint | None = None, timeout: float = 60):
    """Stream ``url`` to ``target`` atomically (``.part`` then rename), verified when pinned."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # One .part per process: concurrent ranks downloading the same file never share one.
    part = target.with_name(f"{target.name}.{os.getpid()}.part")
    log.info("downloading %s -> %s", url, target)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        part.unlink(missing_ok=True)
        raise _offline_error(url, target, err, spec.name if spec else None) from None
    try:
        if spec is not None:
            verify(part, spec)
    except CheckpointError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)
    return target


# Generators trained by this project and shipped inside the package (``weights/``): a name
# resolves to the file there, wherever the code runs from. Each has a JSON record beside it
# (recipe, data split, seed, steps, wall time, machine).
SHIPPED_GENERATORS: dict[str, str] = {
    "lfw32": "lfw32.safetensors",  # 32² faces: StyleGAN2 trained on LFW faces 0-89
}


def shipped_path(name: str) -> Path | None:
    """The package file of a shipped generator name (``lfw32``), or ``None`` for other names."""
    filename = SHIPPED_GENERATORS.get(str(name))
    return None if filename is None else Path(__file__).parent / "weights" / filename


def resolve(source: str | os.PathLike, *, allow_download: bool = True) -> Path:
    """A local file for ``source``: a shipped name, a known name, an http(s) URL, or a path.

    Known names and URLs are cached; a path must exist (no network is ever used for it).
    """
    text = os.fspath(source)
    shipped = shipped_path(text)
    if shipped is not None:
        if not shipped.is_file():
            raise CheckpointError(
                f"{shipped}: the shipped generator {text!r} is missing from the package"
                " (an incomplete checkout? retrain it with `python train_generator.py`)"
            )
        return shipped
    if text in KNOWN_CHECKPOINTS:
        spec = KNOWN_CHECKPOINTS[text]
        target = cache_dir() / spec.filename
        # a folder of files fetched for offline use (python -m rls.weights fetch)
        copied = Path(os.environ.get("RLS_WEIGHTS_DIR") or target.parent) / spec.filename
        for found in (copied, target):
            if found.is_file():
                verify(found, spec)
                return found
        if not allow_download:
            raise _offline_error(spec.url, target, RuntimeError("downloads disabled"), spec.name)
        return download(spec.url, target, spec)
    if is_url(text):
        base = Path(urllib.parse.urlparse(text).path).name or "checkpoint"
        url_id = hashlib.sha256(text.encode()).hexdigest()[:8]  # same file name, other URL
        target = cache_dir() / f"url-{url_id}-{base}"
        if target.is_file():
            return target
        if not allow_download:
            raise _offline_error(text, target, RuntimeError("downloads disabled"), None)
        log.warning("%s: downloading an unpinned URL; the file is not hash-verified", text)
        return download(text, target)
    path = Path(text).expanduser()
    if not path.is_file():
        known = ", ".join(sorted(SHIPPED_GENERATORS) + sorted(KNOWN_CHECKPOINTS))
        raise CheckpointError(
            f"{path}: no such checkpoint file (known names: tiny, {known}; or an http(s) URL)"
        )
    return path
