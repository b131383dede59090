"""The run directory of ``evaluate.py``: per-image rows, images, summary, resume.

Layout of a run directory::

    config.yaml                  resolved configuration (written by evaluate.py)
    results.csv                  one row per (image_id, method), merged at the end
    summary.json                 mean / std per method and metric, ok / failed counts, FID/KID
    images/<method>/<file>.png   the solutions; images/lr/<file>.png, images/hr/<file>.png
                                 (<file> = output_stem(image_id): unique per id)
    .shards/results.<owner>.rank<k>.csv  append-only rows of rank k while the run is in flight
    .lock, .lock.json            the process working in the directory (rls.reports.run_lock)

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
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from PIL import Image

from rls.metrics.faces import FACE_NAMES as FACE_COLUMNS
from rls.reports.run_lock import DEFAULT_OWNER, MERGE_LOCK, idle_owners

log = logging.getLogger("rls.reports")

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
    *FACE_COLUMNS,
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
    *FACE_COLUMNS,  # dlib: detection of the output; identity and landmarks against the HR
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


def current_umask() -> int:
    """The process's umask, read without changing it where the system tells it
    (``/proc/self/status`` on Linux), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file so that readers see either the old or the whole new content.

    The file gets the mode a plain ``open()`` would give it (0o666 less the umask): the
    temporary file it is renamed from is created 0o600, which would keep colleagues out.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
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


STATUSES = ("ok", "failed")
NUMERIC_COLUMNS = ("scale", *METRIC_COLUMNS)
_warned: set = set()  # (path, line, problem) already reported: read_rows runs several times


def _warn(path: Path, message: str) -> None:
    if (str(path), message) not in _warned:
        _warned.add((str(path), message))
        log.warning("%s: %s", path, message)


def row_problem(row: dict) -> str | None:
    """Why a row read from a results CSV is not a result (``None``: it is one): fields
    missing or extra, no image id or method, a status other than ok / failed, a metric
    that is not a number, binary bytes."""
    if any("\ufffd" in value for value in [*row.values(), *row.get(None, [])] if value):
        return "binary (non-UTF-8 or NUL) bytes"
    if None in row:
        return "more fields than the header"
    if any(value is None for value in row.values()):
        return "fewer fields than the header"
    if not row.get("image_id") or not row.get("method"):
        return "no image_id or method"
    if row.get("status") not in STATUSES:
        return f"status {row.get('status')!r} is neither ok nor failed"
    for column in NUMERIC_COLUMNS:
        value = row.get(column)
        if value:
            try:
                float(value)
            except ValueError:
                return f"{column}={value!r} is not a number"
    return None


def read_rows(path: str | Path) -> list[dict]:
    """The valid rows of a results CSV (results.csv or a shard).

    Nothing in the file is fatal, and nothing is dropped without a word: a torn last line
    (an interrupted write), a row that is not a result (:func:`row_problem`: a line of
    garbage, binary bytes, a wrong field count) and a shard whose header was lost (its
    rows are read in :data:`COLUMNS` order) are each named in a logged warning. A dropped
    row is not a result, so a rerun computes its image again. Only a results.csv that is
    some other CSV altogether is an error (the run would overwrite it).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    if text and not text.endswith("\n"):
        cut = text[text.rfind("\n") + 1 :]
        text = text[: text.rfind("\n") + 1]
        _warn(path, f"dropped a torn last line (an interrupted write): {cut[:60]!r}")
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        return []
    if "image_id" not in reader.fieldnames:
        if len(reader.fieldnames) != len(COLUMNS):
            if path.parent.name != SHARD_DIR:  # someone's file: never overwrite it unasked
                raise ValueError(f"{path}: not a results file (no image_id column in the header)")
            _warn(path, "not a results shard (no image_id column in the header): ignored")
            return []
        _warn(
            path, "no header line (a crash while it was created): rows read as " + ",".join(COLUMNS)
        )
        reader = csv.DictReader(io.StringIO(text), fieldnames=COLUMNS)
    rows = []
    for row in reader:
        problem = row_problem(row)
        if problem is None:
            rows.append(row)
            continue
        shown = ",".join(str(v) for v in row.values() if v is not None)[:80]
        _warn(
            path,
            f"line {reader.line_num}: not a result ({problem}), ignored; a rerun computes its "
            f"image again: {shown!r}",
        )
    return rows


def shard_paths(run_dir: str | Path, owner: str | None = None) -> list[Path]:
    """The in-flight shards of a run directory, every owner's or ``owner``'s only."""
    shards = sorted((Path(run_dir) / SHARD_DIR).glob("results.*.csv"))
    return shards if owner is None else [p for p in shards if shard_owner(p) == owner]


def shard_owner(path: Path) -> str:
    """The owner a shard's name records: ``results.<owner>.rank<k>.csv`` (``results.rank<k>
    .csv``, the older name, belongs to the default owner)."""
    parts = path.name.split(".")
    return ".".join(parts[1:-2]) or DEFAULT_OWNER


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
    """Append-only CSV of one rank of one owner (``.shards/results.<owner>.rank<k>.csv``):
    each row is flushed and fsynced before returning. A shard left by a crash is continued:
    its torn last line dropped, a lost header restored (its rows kept)."""

    def __init__(self, run_dir: str | Path, rank: int = 0, owner: str = DEFAULT_OWNER):
        self.path = Path(run_dir) / SHARD_DIR / f"results.{owner}.rank{rank}.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._repair()

    def _repair(self) -> None:
        data = self.path.read_bytes()
        header = ",".join(COLUMNS).encode()
        if data.startswith(header + b"\n") and data.endswith(b"\n"):
            return
        rows = read_rows(self.path)  # recovers what it can, with warnings
        atomic_write_bytes(self.path, _csv_text(rows).encode("utf-8"))

    def _append(self, text: str) -> None:
        with open(self.path, "a", encoding="utf-8", newline="") as f:
            if f.tell() == 0:  # new, or removed meanwhile: a shard always starts with its header
                f.write(",".join(COLUMNS) + "\n")
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def write(self, rows: Iterable[dict]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
        for row in rows:
            writer.writerow({k: _format(row.get(k)) for k in COLUMNS})
        self._append(buffer.getvalue())


def _csv_text(rows: Iterable[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: row.get(k, "") for k in COLUMNS} for row in rows)
    return buffer.getvalue()


def merge(run_dir: str | Path, owner: str = DEFAULT_OWNER) -> list[dict]:
    """Fold the shards into ``results.csv`` (atomically, sorted, one row per pair).

    Under ``.merge.lock``, so that owners ending at once fold in turn and none overwrites
    rows another folded. Every shard is read; ``owner``'s are then removed, and those of
    owners no process holds any more (:func:`rls.reports.run_lock.idle_owners`: a crashed
    part's rows are in results.csv now); a live owner's shard stays for it to fold.
    """
    run_dir = Path(run_dir)
    with FileLock(run_dir / MERGE_LOCK):
        rows = sorted(all_rows(run_dir), key=lambda r: (r["method"], r["image_id"]))
        atomic_write_bytes(run_dir / "results.csv", _csv_text(rows).encode("utf-8"))
        others = {shard_owner(p) for p in shard_paths(run_dir)} - {owner}
        for shard in shard_paths(run_dir, owner):
            shard.unlink()
        with idle_owners(run_dir, others) as idle:
            for name in idle:
                for shard in shard_paths(run_dir, name):
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
