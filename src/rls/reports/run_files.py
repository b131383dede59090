"""The run directory of ``evaluate.py``: per-image rows, images, summary, resume.

Layout of a run directory::

    config.yaml                  resolved configuration (written by evaluate.py)
    results.csv                  one row per (image_id, method), merged at the end
    summary.json                 mean / std per method and metric, ok / failed counts, FID/KID
    images/<method>/<file>.png   the solutions; images/lr/<file>.png, images/hr/<file>.png
                                 (<file> = output_stem(image_id): unique per id)
    .shards/results.rank<k>.csv  append-only rows of rank k while the run is in flight

Crash safety: every rank appends its rows to its own shard with flush + fsync per row,
images are written to a temporary file and renamed (``os.replace``), and readers drop a
torn last line. An interrupted run therefore loses at most the images in flight; a rerun in
the same directory skips every (image_id, method) pair already recorded as ok and computes
the failed ones again (their new row replaces the old one).

No Lightning here: the evaluation's
``callbacks.results.ResultsWriter`` writes through these functions, and a notebook can read
and rebuild a run directory with them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

COLUMNS = [
    "image_id",
    "method",
    "scale",
    "corruption",
    "psnr",
    "ssim",
    "lpips",
    "lr_psnr",
    "niqe",
    "flow_nll",
    "latent_error",
    "steps",
    "seconds",
    "status",
    "notes",
]
METRIC_COLUMNS = [
    "psnr",
    "ssim",
    "lpips",
    "lr_psnr",
    "niqe",  # no reference; the method ground_truth holds the HR images' own
    "flow_nll",
    "latent_error",  # ‖ŵ - w‖ to the true code, for generator-sampled targets only
    "steps",
    "seconds",
]
SHARD_DIR = ".shards"


# ---------------------------------------------------------------------------------------
# files


def safe_name(image_id: str) -> str:
    """A file name for an image id (ids may hold path separators or odd characters)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(image_id)).strip("._")
    return name or "image"


def output_stem(image_id: str) -> str:
    """The file stem of an image id's outputs: readable (the sanitised id) and unique (8 hex
    of the id's SHA-256), so ids that sanitise alike (``a b`` and ``a_b``, two non-ASCII
    names, ``A`` and ``a`` on a case-insensitive disk) never share a file."""
    digest = hashlib.sha256(str(image_id).encode("utf-8")).hexdigest()[:8]
    return f"{safe_name(image_id)[:80]}-{digest}"


def image_path(run_dir: str | Path, kind: str, image_id: str) -> Path:
    """``images/<kind>/<output_stem(id)>.png`` where kind is a method name, ``lr`` or ``hr``."""
    return Path(run_dir) / "images" / safe_name(kind) / f"{output_stem(image_id)}.png"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file so that readers see either the old or the whole new content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def to_pil(image: torch.Tensor) -> Image.Image:
    """An 8-bit PIL image (RGB, or L for one channel) of a ``[C, H, W]`` image in [0, 1]."""
    if image.ndim != 3:
        raise ValueError(f"expected a [C, H, W] image, got shape {tuple(image.shape)}")
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    array = np.transpose(array, (1, 2, 0))
    if array.shape[2] == 1:
        return Image.fromarray(array[:, :, 0], mode="L")
    return Image.fromarray(array, mode="RGB")


def save_png(path: str | Path, image: torch.Tensor | Image.Image) -> None:
    """Save a ``[C, H, W]`` image in [0, 1] (or a PIL image) as an 8-bit PNG, atomically."""
    if isinstance(image, torch.Tensor):
        if image.ndim != 3:
            raise ValueError(f"{path}: expected a [C, H, W] image, got shape {tuple(image.shape)}")
        image = to_pil(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------
# rows


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a results CSV; a torn last line (interrupted write) is dropped, not fatal."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # the last line was cut mid-write
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is not None and "image_id" not in reader.fieldnames:
        raise ValueError(f"{path}: not a results file (no image_id column in the header)")
    return [row for row in reader if row.get("method") not in (None, "") and None not in row]


def shard_paths(run_dir: str | Path) -> list[Path]:
    return sorted((Path(run_dir) / SHARD_DIR).glob("results.rank*.csv"))


def all_rows(run_dir: str | Path) -> list[dict]:
    """Every recorded row (merged file, then in-flight shards), one per (image_id, method)."""
    run_dir = Path(run_dir)
    rows: dict[tuple[str, str], dict] = {}
    for path in [run_dir / "results.csv", *shard_paths(run_dir)]:
        for row in read_rows(path):
            rows[(row["image_id"], row["method"])] = row
    return list(rows.values())


def finished_pairs(run_dir: str | Path) -> set[tuple[str, str]]:
    """(image_id, method) pairs recorded as ok in a run directory: a rerun skips them and
    computes the failed ones again (a fixed file gets its result; the new row wins)."""
    return {(r["image_id"], r["method"]) for r in all_rows(run_dir) if r["status"] != "failed"}


class ShardWriter:
    """Append-only CSV of one rank: each row is flushed and fsynced before returning."""

    def __init__(self, run_dir: str | Path, rank: int = 0):
        self.path = Path(run_dir) / SHARD_DIR / f"results.rank{rank}.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._drop_torn_tail()
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._append(",".join(COLUMNS) + "\n")

    def _drop_torn_tail(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            atomic_write_bytes(self.path, data[: data.rfind(b"\n") + 1])

    def _append(self, text: str) -> None:
        with open(self.path, "a", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def write(self, rows: Iterable[dict]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
        for row in rows:
            writer.writerow({k: _format(row.get(k)) for k in COLUMNS})
        if buffer.getvalue():
            self._append(buffer.getvalue())


def merge(run_dir: str | Path) -> list[dict]:
    """Fold the shards into ``results.csv`` (atomically, sorted, one row per pair)."""
    run_dir = Path(run_dir)
    rows = sorted(all_rows(run_dir), key=lambda r: (r["method"], r["image_id"]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: row.get(k, "") for k in COLUMNS} for row in rows)
    atomic_write_bytes(run_dir / "results.csv", buffer.getvalue().encode("utf-8"))
    for shard in shard_paths(run_dir):
        shard.unlink()
    return rows


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def summarize(rows: list[dict], dataset_metrics: dict | None = None) -> dict:
    """Per method: counts of ok / failed and mean, std of each metric over the ok rows.

    ``dataset_metrics`` adds set-level numbers per method (e.g. ``{"rls": {"fid": 12.3}}``).
    """
    summary: dict[str, dict] = {}
    for method in sorted({row["method"] for row in rows}):
        mine = [row for row in rows if row["method"] == method]
        ok = [row for row in mine if row["status"] == "ok"]
        entry: dict = {"count": len(mine), "ok": len(ok), "failed": len(mine) - len(ok)}
        notes = sorted({row.get("notes", "") for row in ok if row.get("notes")})
        entry["notes"] = "; ".join(notes)
        for column in METRIC_COLUMNS:
            values = np.array([_float(row.get(column)) for row in ok], dtype=np.float64)
            values = values[np.isfinite(values)]
            if values.size:
                entry[column] = {
                    "mean": float(values.mean()),
                    "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                    "n": int(values.size),
                }
        entry.update((dataset_metrics or {}).get(method, {}))
        summary[method] = entry
    return summary


SET_LEVEL_KEYS = ("fid", "kid_mean", "kid_std", "set_metrics_images")


def summary_metrics(summary: dict) -> dict[str, float]:
    """The run's aggregates as flat numbers ``test/<method>/<metric>`` (means over every ok
    row of the run, counts, FID/KID): the one source of what loggers record (metrics.csv,
    the W&B summary), so after a resume they cover the whole run, not the last invocation."""
    flat = {}
    for method, entry in summary.items():
        for key, value in entry.items():
            if isinstance(value, dict) and "mean" in value:
                flat[f"test/{method}/{key}"] = float(value["mean"])
            elif isinstance(value, int | float) and not isinstance(value, bool):
                flat[f"test/{method}/{key}"] = float(value)
    return flat


def read_summary(run_dir: str | Path) -> dict:
    """summary.json's ``methods`` (empty when there is none yet)."""
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text())["methods"] if path.exists() else {}


def load_png(path: str | Path) -> torch.Tensor:
    """``[C, H, W]`` float in [0, 1] of a PNG written by :func:`save_png`."""
    array = np.asarray(Image.open(path), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array.copy())
    return tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def write_summary(
    run_dir: str | Path, rows: list[dict], dataset_metrics=None, fid_protocol=None
) -> dict:
    """summary.json: ``methods`` (:func:`summarize`) and ``fid_protocol`` (the real set,
    preparation, resolution and feature network of FID/KID; absent without them)."""
    summary = summarize(rows, dataset_metrics)
    content = {"methods": summary}
    if fid_protocol:
        content["fid_protocol"] = fid_protocol
    data = json.dumps(content, indent=2, allow_nan=False, default=str)
    atomic_write_bytes(Path(run_dir) / "summary.json", data.encode("utf-8"))
    return summary


def save_pasted(run_dir: str | Path, images: list, batch: dict) -> None:
    """``images/<method>_pasted/<stem>.png``: each restored face pasted back into its photo.

    Only for batches of aligned faces that carry their crop (``data.dataset.paste_back``):
    ``batch["source"]`` (the photos' paths) and ``batch["quad"]`` (their crop squares).
    """
    if "source" not in batch or "quad" not in batch:
        return
    from rls.align import paste_back
    from rls.data import open_upright

    crops = {i: (s, q) for i, s, q in zip(batch["image_id"], batch["source"], batch["quad"])}
    photos: dict = {}
    for kind, image_id, image in images:
        if kind in ("lr", "hr") or image_id not in crops:
            continue
        source, quad = crops[image_id]
        if source not in photos:
            photos[source] = open_upright(Path(source))
        pasted = paste_back(photos[source], to_pil(image), quad.double().cpu().numpy())
        save_png(image_path(run_dir, f"{kind}_pasted", image_id), pasted)
