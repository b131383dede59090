"""Read W&B offline runs (``wandb/offline-run-*/run-<id>.wandb``) without the network.

An offline run keeps everything it logged in one transaction log of ``wandb``'s protobuf
``Record`` messages; ``files/`` holds only the media. wandb 0.31 reads that log in its Go
core and no longer ships a Python reader, so the framing is decoded here (a few lines:
LevelDB's log format, the same one the former ``wandb.sdk.internal.datastore`` read) and
the records with wandb's own protobuf classes. Used by the W&B report builder, which turns
a sweep's offline runs into a Report after ``wandb sync``, and by the tests.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)  # ident, magic, version
BLOCK = 32768
RECORD_HEADER = 7  # crc32 (4), length (2), type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _crc(kind: int, data: bytes) -> int:
    return zlib.crc32(data, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF


def read_records(path: str | Path) -> list:
    """Every complete ``wandb_internal_pb2.Record`` of a ``.wandb`` file, in order; a torn or
    corrupt tail (a run killed mid-write) ends the list instead of raising."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if not data.startswith(HEADER):
        raise ValueError(f"{path}: not a W&B transaction log (bad header)")
    records, pos, parts = [], len(HEADER), []
    while pos + RECORD_HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < RECORD_HEADER:  # the block's tail is zero padding
            pos += room
            continue
        checksum, length, kind = struct.unpack_from("<IHB", data, pos)
        body = data[pos + RECORD_HEADER : pos + RECORD_HEADER + length]
        if kind == 0 or len(body) < length or _crc(kind, body) != checksum:
            break
        pos += RECORD_HEADER + length
        parts = [body] if kind in (FULL, FIRST) else [*parts, body]
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            records.append(record)
    return records


def _update(target: dict, items) -> dict:
    """Apply history/summary/config items to ``target``; wandb splits a dict value (a media
    reference such as ``{"_type": "table-file", "path": ...}``) into items with a
    ``nested_key`` path, which are put back together here."""
    for item in items:
        path = [item.key] if item.key else list(item.nested_key)
        node = target
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(item.value_json) if item.value_json else None
    return target


@dataclass
class OfflineRun:
    """What one offline run logged: its identity, config, history rows, summary, artifacts."""

    path: Path
    run_id: str = ""
    project: str = ""
    entity: str = ""
    group: str = ""
    job_type: str = ""
    name: str = ""
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    artifacts: list[dict] = field(default_factory=list)
    finished: bool = False

    @property
    def files(self) -> Path:
        return self.path / "files"

    def history_keys(self) -> set[str]:
        return {k for row in self.history for k in row if not k.startswith("_")}

    def values(self, key: str) -> list:
        """Every logged value of ``key``, in order."""
        return [row[key] for row in self.history if key in row]

    def table(self, key: str) -> dict:
        """The last W&B Table logged under ``key``: ``{"columns": [...], "data": [[...]]}``."""
        ref = self.values(key)[-1]
        return json.loads((self.files / ref["path"]).read_text())


def read_run(run_path: str | Path) -> OfflineRun:
    """The offline run in ``run_path`` (a ``wandb/offline-run-*`` directory)."""
    run_path = Path(run_path)
    logs = sorted(run_path.glob("run-*.wandb"))
    if not logs:
        raise FileNotFoundError(f"{run_path}: no run-*.wandb file (not a W&B run directory)")
    run = OfflineRun(path=run_path)
    for record in read_records(logs[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.project, run.entity = r.run_id, r.project, r.entity
            run.group, run.job_type, run.name = r.run_group, r.job_type, r.display_name
            _update(run.config, r.config.update)
        elif kind == "config":
            _update(run.config, record.config.update)
        elif kind == "history":
            run.history.append(_update({}, record.history.item))
        elif kind == "summary":
            _update(run.summary, record.summary.update)
        elif kind == "artifact":
            a = record.artifact
            files = [entry.path for entry in a.manifest.contents]
            run.artifacts.append({"name": a.name, "type": a.type, "files": files})
        elif kind == "exit":
            run.finished = True
    run.config = {k: _config_value(v) for k, v in run.config.items() if k != "_wandb"}
    return run


def _config_value(value):
    """Config entries may be stored as ``{"value": v, "desc": ...}``."""
    if isinstance(value, dict) and "value" in value and set(value) <= {"value", "desc"}:
        return value["value"]
    return value


def find_runs(root: str | Path) -> list[Path]:
    """The W&B run directories under ``root`` (a run directory of evaluate.py or
    train_flow.py, or a ``wandb/`` folder), oldest first: ``offline-run-<time>-<id>`` and,
    for online runs, their local copy ``run-<time>-<id>`` (the same transaction log)."""
    root = Path(root)
    wandb_dir = root if root.name == "wandb" else root / "wandb"
    found = [*wandb_dir.glob("offline-run-*"), *wandb_dir.glob("run-*")]
    return sorted((p for p in found if p.is_dir()), key=lambda p: p.name.removeprefix("offline-"))
