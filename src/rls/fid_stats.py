"""FID/KID reference statistics of an HR image set, computed once and cached.

Papers in this field compare against different real sets; here the protocol is explicit:
the real side of FID/KID is either the run's own HR images (``metrics.fid_reference=null``,
the default) or a folder of HR images whose Inception features are computed once
(``python -m rls.metrics fid-stats DIR``) and cached under a key made of the set's content
and the protocol (image preparation, resolution, feature network), so every member of a
sweep reuses them. :func:`protocol` is what summary.json and the report record.

The features themselves are cached (``[N, F]``, float64, safetensors), not only their mean
and covariance: KID needs the samples.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn

CACHE_ENV = "RLS_CACHE"
PREPARATION = (
    "rls.data.ImageFolderDataset: centre crop to a square, resized to the evaluation "
    "resolution (as data=folder prepares HR images)"
)
INCEPTION_PROTOCOL = (
    "torch-fidelity inception-v3-compat pool3 (2048 features, {weights}); [0, 1] images "
    "quantised to uint8, resized to 299x299 inside the network as TF-FID does"
)


def cache_dir() -> Path:
    """``$RLS_CACHE/fid_stats`` (default ``~/.cache/rls/fid_stats``)."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "rls")
    return Path(root) / "fid_stats"


def feature_description(feature: nn.Module) -> str:
    """The feature network in words: Inception by its weight file, anything else by its
    class and a hash of its parameters (so a different network never shares a cache)."""
    if hasattr(feature, "weights_name"):
        return INCEPTION_PROTOCOL.format(weights=feature.weights_name)
    digest = hashlib.sha256()
    for key, value in sorted(feature.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    cls = type(feature)
    return f"{cls.__module__}.{cls.__qualname__} (parameters sha256 {digest.hexdigest()[:12]})"


def set_digest(paths: list[Path], root: Path) -> str:
    """SHA-256 over the images' relative names and contents (order-independent)."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: str(p.relative_to(root))):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def protocol(feature: nn.Module, resolution: int, reference: dict | None = None) -> dict:
    """The FID/KID protocol as recorded in summary.json: the real set, its preparation,
    the resolution and the feature network. ``reference``: a cached set's ``protocol``
    (its ``reference_set``, ``set_sha256`` and ``images``); ``None``: the run's HR images."""
    out = {
        "real_set": "the run's HR images" if reference is None else reference["reference_set"],
        "resolution": int(resolution),
        "preparation": PREPARATION,
        "feature": feature_description(feature),
        "kid": "unbiased MMD², cubic polynomial kernel, subsets of min(subset size, images)",
    }
    if reference is not None:
        out.update(set_sha256=reference["set_sha256"], reference_images=reference["images"])
    return out


@torch.no_grad()
def reference_features(
    root: str | os.PathLike,
    feature: nn.Module,
    resolution: int,
    batch_size: int = 16,
    cache: str | os.PathLike | None = None,
) -> tuple[Tensor, dict, Path]:
    """``(features [N, F] float64, protocol, cache file)`` of the HR images in ``root``:
    read from the cache when this set and protocol were computed before, else computed
    (images that cannot be read are skipped and counted) and cached atomically."""
    from safetensors.torch import load_file, save_file

    from rls.data import ImageFolderDataset

    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such image folder (the FID/KID reference set)")
    dataset = ImageFolderDataset(root, resolution, on_error="skip", min_hr_fraction=0.0)
    paths = [path for _, path in dataset.items]
    if len(paths) < 2:
        raise ValueError(f"{root}: {len(paths)} readable image(s); FID/KID need at least two")
    digest = set_digest(paths, root)
    proto = protocol(feature, resolution)
    key_text = json.dumps([digest, proto["resolution"], proto["preparation"], proto["feature"]])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    out = Path(cache) if cache is not None else cache_dir()
    path = out / f"{digest[:16]}-{key}.safetensors"
    if path.is_file():
        stored = load_file(path)
        with open(path, "rb") as f:  # the header holds the protocol as metadata
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        return stored["features"], json.loads(header["__metadata__"]["protocol"]), path
    device = next(feature.parameters(), torch.zeros(())).device
    chunks, skipped = [], 0
    batch: list[Tensor] = []
    for index in range(len(dataset)):
        record = dataset[index]
        if "error" in record:
            skipped += 1
            continue
        batch.append(record["hr"])
        if len(batch) == batch_size or index == len(dataset) - 1:
            chunks.append(feature(torch.stack(batch).to(device)).double().cpu())
            batch = []
    if batch:
        chunks.append(feature(torch.stack(batch).to(device)).double().cpu())
    features = torch.cat(chunks)
    proto = {
        "reference_set": str(root),
        "set_sha256": digest,
        "images": int(features.shape[0]),
        "skipped": skipped,
        **proto,
    }
    out.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    save_file({"features": features.contiguous()}, str(part), {"protocol": json.dumps(proto)})
    os.replace(part, path)
    return features, proto, path
