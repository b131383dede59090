"""How ``python evaluate.py`` ends: a mistake, a bad file or a run that produced nothing is
one line on stderr and exit status 1; inside a sweep, one line naming the member and the
sweep report. ``HYDRA_FULL_ERROR=1`` shows the traceback instead."""

from __future__ import annotations

from pathlib import Path

from hydra.errors import CompactHydraException


def failed_run(run_dir: Path) -> str | None:
    """A one-line account of a run in which every image failed (no ``ok`` row of any
    searched method in results.csv), else ``None``."""
    from collections import Counter

    from rls.reports.run_files import read_rows

    rows = [r for r in read_rows(run_dir / "results.csv") if r["method"] != "bicubic"]
    if not rows or any(r["status"] != "failed" for r in rows):
        return None
    reasons = Counter(r.get("notes") or "no reason recorded" for r in rows)
    reason, count = reasons.most_common(1)[0]
    return (
        f"every image failed ({len(rows)} failed rows; {count} of them: {reason}); "
        f"the reasons of each are in {run_dir / 'results.csv'} and {run_dir / 'report.html'}"
    )


class EveryImageFailed(RuntimeError):
    """The run ended, but no image has a result (:func:`failed_run`)."""


class RunFailed(CompactHydraException):
    """A setting that cannot work or a run that produced nothing, as one line: Hydra prints
    the message alone and exits with status 1; ``HYDRA_FULL_ERROR=1`` shows the traceback
    (and that of the error it wraps)."""


def _one_line_error(err: Exception) -> RunFailed | None:
    """What the command line shows for ``err`` escaping :func:`evaluate`: an operator
    mistake (:class:`rls.preflight.PreflightError`) as its message alone; inside a sweep
    (``-m``), any error as one line naming the member and the sweep report (the traceback
    is in the report's member.json); ``None``: let it through with its traceback."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import InstantiationException

    from rls.data.shard import ShardError
    from rls.generators.formats_common import CheckpointError
    from rls.preflight import PreflightError
    from rls.reports.run_lock import RunDirBusy
    from rls.weights import MissingWeightsError

    mistakes = (
        PreflightError
        | EveryImageFailed
        | RunDirBusy
        | CheckpointError
        | MissingWeightsError
        | ShardError
    )
    if isinstance(err, InstantiationException) and isinstance(err.__cause__, mistakes):
        err = err.__cause__  # a bad file met while Hydra built a configured object
    plain = isinstance(err, mistakes)
    message = str(err) if plain else f"{type(err).__name__}: {err}"
    if _multirun():
        from rls.reports.sweep import SWEEP_FILES

        hydra_cfg = HydraConfig.get()
        member = " ".join(hydra_cfg.overrides.task) or "(no overrides)"
        report = Path(hydra_cfg.sweep.dir) / SWEEP_FILES[-1]
        return RunFailed(
            f"[evaluate] sweep member #{hydra_cfg.job.num} '{member}' failed: {message}; "
            f"every member's outcome: {report}"
        )
    if plain:
        return RunFailed(f"[evaluate] {message}")
    return None


def _multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
