"""Shards of one evaluation: ``data.shard=I/N`` restores a fixed part of the images, so a
large run can go as N independent jobs (a SLURM array) into one run directory.

Image ``id`` belongs to shard ``sha256("shard", id) mod N`` (:func:`shard_of`): fixed by the
id alone, so it does not move when the run is resumed, when images are added to a folder,
or between machines. The shards are disjoint and together hold every image. A run
directory remembers its N (``sharding.json``); a shard with another N would assign the
images differently and is refused in one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rls.seeding import seed_from_id

SHARDING_FILE = "sharding.json"


class ShardError(ValueError):
    """A shard setting that cannot work (its message is the one line the user sees)."""


def parse_shard(value) -> tuple[int, int] | None:
    """``"I/N"`` (0 <= I < N) -> ``(I, N)``; ``None`` or ``""`` -> ``None`` (no sharding)."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    index, sep, count = text.partition("/")
    try:
        if not sep:
            raise ValueError
        i, n = int(index), int(count)
    except ValueError:
        raise ShardError(
            f"data.shard={value}: expected I/N, e.g. data.shard=0/4 (shard 0 of 4; I from 0 "
            "to N-1, as SLURM's --array=0-3 numbers its tasks)"
        ) from None
    if n < 1 or not 0 <= i < n:
        raise ShardError(f"data.shard={value}: needs N >= 1 and 0 <= I < N")
    return i, n


def shard_of(image_id: str, count: int) -> int:
    """The shard (0..count-1) that image ``image_id`` belongs to."""
    return seed_from_id(image_id, salt="shard") % count


def shard_indices(image_ids: list[str], index: int, count: int) -> list[int]:
    """Positions of the images of shard ``index`` of ``count``, in dataset order."""
    return [k for k, image_id in enumerate(image_ids) if shard_of(image_id, count) == index]


def owner_name(index: int, count: int) -> str:
    """The run-directory owner of a shard (its lock and result shards are named after it)."""
    return f"shard{index}of{count}"


def parse_owner(owner: str) -> tuple[int, int]:
    """``(I, N)`` of an :func:`owner_name`."""
    index, count = owner.removeprefix("shard").split("of")
    return int(index), int(count)


def claim_sharding(run_dir: str | Path, index: int, count: int) -> None:
    """Record ``count`` in the run directory, or refuse a count other than the recorded one."""
    path = Path(run_dir) / SHARDING_FILE
    if path.exists():
        recorded = int(json.loads(path.read_text())["count"])
        if recorded != count:
            raise ShardError(
                f"data.shard={index}/{count}: {Path(run_dir)} is sharded into {recorded} "
                f"(data.shard=I/{recorded}); another N would move images between shards: "
                "keep N, or use a new run_dir"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}")
    part.write_text(json.dumps({"count": count}) + "\n")
    try:
        os.link(part, path)  # atomic create-if-absent: two shards starting at once agree
    except FileExistsError:
        pass
    finally:
        part.unlink()
    claim_sharding(run_dir, index, count)
