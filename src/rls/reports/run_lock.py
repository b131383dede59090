"""Concurrent use of one run directory: who works in it, and how parts of a run share it.

**One process per run directory** (with its DDP ranks: rank 0 holds the lock for all).
:class:`RunDirLock` holds ``<run_dir>/.lock``, an operating-system file lock
(``filelock.FileLock``: ``flock`` on POSIX, which NFSv4 honours across hosts). The kernel
releases it when the holder ends, however it ends (``kill -9`` included), so a lock is never
stale and a rerun after a crash simply takes it. ``.lock.json`` beside it records the holder
(pid, host, start) for the one line a second process gets instead of a broken directory::

    run_dir=/runs/x is in use by pid 4242 on node7 since 2026-12-02 01:23:45 UTC (its lock:
    /runs/x/.lock); wait for it to end, or pass another run_dir

**Work sharing** (several processes on disjoint parts of one run, e.g. the tasks of a
cluster array): each part takes the lock under its own ``owner`` name
(``RunDirLock(run_dir, owner="part3of8")`` holds ``.lock-part3of8``) and writes its rows
to shards named after it (``ShardWriter(run_dir, rank, owner=...)`` →
``.shards/results.part3of8.rank0.csv``). :func:`rls.reports.run_files.merge` folds every
shard into results.csv under ``.merge.lock``, so parts may end in any order, and removes
only its caller's shards and those of owners no process holds any more (:func:`idle_owners`);
a part that crashed is rerun under the same owner and continues its own shard.

Leftovers of a crash are never fatal: a shard's torn last line or lost header is repaired
(:class:`~rls.reports.run_files.ShardWriter`), rows that are not results are skipped with a
warning (:func:`~rls.reports.run_files.read_rows`), and temporary files of interrupted
atomic writes (``.<name>.*.tmp``) older than :data:`TEMP_AGE_S` are removed when the lock is
taken, with one warning line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger("rls.reports")

DEFAULT_OWNER = "run"  # the owner of a whole run (its lock is .lock, its shards results.run.*)

MERGE_LOCK = ".merge.lock"
TEMP_AGE_S = 600  # an atomic write takes far less: a temporary file this old is a crash's


class RunDirBusy(RuntimeError):
    """Another process holds the run directory (or this part of it)."""


def lock_path(run_dir: str | Path, owner: str = DEFAULT_OWNER) -> Path:
    name = ".lock" if owner == DEFAULT_OWNER else f".lock-{owner}"
    return Path(run_dir) / name


def holder(run_dir: str | Path, owner: str = DEFAULT_OWNER) -> dict:
    """What ``.lock.json`` says of the lock's holder (empty if it says nothing)."""
    info = lock_path(run_dir, owner).with_name(lock_path(run_dir, owner).name + ".json")
    try:
        return json.loads(info.read_text())
    except (OSError, ValueError):
        return {}


class RunDirLock:
    """Hold ``run_dir`` (or the ``owner`` part of it) for this process; a context manager.

    ``acquire`` raises :class:`RunDirBusy` at once, naming the holder, when another process
    holds it. ``release`` (or leaving the ``with``) lets it go; so does the process's end.
    """

    def __init__(self, run_dir: str | Path, owner: str = DEFAULT_OWNER):
        self.run_dir = Path(run_dir)
        self.owner = owner
        self.path = lock_path(run_dir, owner)
        self.info = self.path.with_name(self.path.name + ".json")
        self._lock = FileLock(self.path)

    def acquire(self) -> RunDirLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise RunDirBusy(self._busy_message()) from None
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "owner": self.owner,
        }
        self.info.write_text(json.dumps(me) + "\n")  # for the message only: read leniently
        remove_stale_temp_files(self.run_dir)
        return self

    def _busy_message(self) -> str:
        who = holder(self.run_dir, self.owner)
        by = (
            f"pid {who.get('pid', '?')} on {who.get('host', '?')} since {who.get('since', '?')}"
            if who
            else "another process"
        )
        part = "" if self.owner == DEFAULT_OWNER else f" (part {self.owner})"
        return (
            f"run_dir={self.run_dir}{part} is in use by {by} (its lock: {self.path}); wait for "
            "it to end, or pass another run_dir"
        )

    def release(self) -> None:
        if self._lock.is_locked:
            with contextlib.suppress(OSError):
                self.info.unlink()
            self._lock.release()

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def idle_owners(run_dir: str | Path, owners: Iterable[str]) -> Iterator[list[str]]:
    """The ``owners`` whose lock no process holds, each held by the caller while inside (so
    that none starts meanwhile and writes into a shard being removed)."""
    held = []
    try:
        for owner in owners:
            lock = FileLock(lock_path(run_dir, owner))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            held.append((owner, lock))
        yield [owner for owner, _ in held]
    finally:
        for _, lock in held:
            lock.release()


def remove_stale_temp_files(run_dir: str | Path, age_s: float = TEMP_AGE_S) -> list[Path]:
    """Remove the temporary files of interrupted atomic writes (``.<name>.*.tmp``) older
    than ``age_s``; one warning line says how many and where."""
    now = time.time()
    stale = []
    for path in Path(run_dir).rglob(".*.tmp"):
        with contextlib.suppress(OSError):
            if path.is_file() and now - path.stat().st_mtime > age_s:
                path.unlink()
                stale.append(path)
    if stale:
        log.warning(
            "%s: removed %d temporary file(s) left by an interrupted run (e.g. %s)",
            run_dir,
            len(stale),
            stale[0].relative_to(run_dir),
        )
    return stale
