"""The Hydra side of a sweep (``python evaluate.py -m ...``): after every member and at the
end of the multirun, (re)write the sweep report into ``hydra.sweep.dir``.

Configured in ``configs/evaluate.yaml`` under ``hydra.callbacks``. Each job notes its run
directory (:func:`note_run_dir`, called by evaluate.py) and this callback records how it
ended (``member.json``: done, or failed with the error), so the report shows a failed
member as failed while Hydra goes on with the others, and shows members not run yet as
missing. The report is rebuilt by :mod:`rls.reports.sweep` and :mod:`rls.reports.sweep_html`,
which a user can also run by hand: ``python -m callbacks.sweep <hydra.sweep.dir>`` (or
``python -m rls.reports sweep <hydra.sweep.dir>``).

Launchers: with Hydra's basic launcher every member runs in the launching process, one after
another. With the submitit launchers (``hydra/launcher=slurm`` or ``local``) each member is
a separate process (a SLURM array task) that runs ``on_job_end`` itself, possibly at the
same moment as another member: the rebuild is serialised by a lock file in the sweep dir
(each member records its ``member.json`` first, so the last rebuild sees every member), and
the launching process rebuilds it once more at the end (``on_multirun_end``).
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

from filelock import FileLock
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from rls.reports.run_files import atomic_write_bytes
from rls.reports.sweep import MEMBER_FILE, RUN_DIR_FILE, load_sweep
from rls.reports.sweep_html import write_sweep

LOCK_FILE = ".sweep_report.lock"  # members of a submitit sweep rebuild the report one at a time


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def note_run_dir(run_dir: str | Path) -> None:
    """Inside a multirun job: record the job's run directory in its Hydra output dir, so
    the sweep report finds the member's results even if the job fails later."""
    if _multirun():
        out = Path(HydraConfig.get().runtime.output_dir) / RUN_DIR_FILE
        atomic_write_bytes(out, f"{Path(run_dir).resolve()}\n".encode())


class SweepReport(Callback):
    """Writes sweep_report.html, sweep.csv and sweep.json into the multirun's sweep dir.

    ``update_each_job``: rebuild after every member (a long sweep can be browsed while it
    runs, and the report exists even when Hydra stops on a failed member at the end).
    """

    def __init__(self, update_each_job: bool = True):
        self.update_each_job = update_each_job

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not _multirun():
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        if job_return.status == JobStatus.COMPLETED:
            state = {"status": "done", "error": ""}
        else:
            try:
                _ = job_return.return_value  # a failed job's return value re-raises its error
                error = RuntimeError("the job failed")
            except Exception as raised:
                error = raised
            if isinstance(error, HydraException) and error.__cause__ is not None:
                error = error.__cause__  # evaluate.py's one-line wrapper: record what it wraps
            state = {
                "status": "failed",
                "error": f"{type(error).__name__}: {error}",
                "traceback": "".join(traceback.format_exception(error)),
            }
        atomic_write_bytes(job_dir / MEMBER_FILE, json.dumps(state, indent=2).encode())
        if state["status"] == "failed":
            overrides = " ".join(job_return.overrides or [])
            print(f"[sweep] member '{overrides}' failed ({state['error']}); the others go on")
        if self.update_each_job:
            self._write(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        paths = self._write(Path(config.hydra.sweep.dir))
        print(f"[sweep] report: {paths['html']}  (open it in a browser)")
        if paths.get("paper_table"):
            print(f"[sweep] paper table: {paths['paper_table']} (and .tex, .csv)")

    @staticmethod
    def _write(sweep_dir: Path) -> dict:
        try:
            with FileLock(sweep_dir / LOCK_FILE):
                return write_sweep(load_sweep([sweep_dir]), sweep_dir)
        except Exception as error:  # the members' results matter more than the summary page
            print(f"[sweep] could not write the sweep report into {sweep_dir}: {error!r}")
            print(f"[sweep] rebuild it later with: python -m callbacks.sweep {sweep_dir}")
            return {"html": None}
