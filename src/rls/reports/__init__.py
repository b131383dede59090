"""Reports from run and sweep directories: pure functions, no Lightning, no Hydra callbacks.

- :mod:`rls.reports.run_files`: a run directory's files (results.csv and its shards,
  summary.json, images/): reading, writing atomically, summarising, resuming.
- :mod:`rls.reports.run_html`: ``report.html`` of one run (:func:`build_report`).
- :mod:`rls.reports.sweep`: a sweep's members and their rows as one table
  (:func:`load_sweep`); :mod:`rls.reports.sweep_html`: ``sweep_report.html`` and the sweep's
  CSV/JSON files (:func:`write_sweep`).
- :mod:`rls.reports.tradeoff`: the realism–fidelity curves both pages draw.
- :mod:`rls.reports.wandb_offline` reads W&B run files offline;
  :mod:`rls.reports.wandb_report` builds a sweep's W&B Report from them.
- ``python -m rls.reports run|sweep|wandb ...`` (:mod:`rls.reports.cli`) rebuilds any of them.

In a notebook::

    from rls.reports import build_report, load_sweep, write_sweep
    build_report("runs/eval_...")                       # -> runs/eval_.../report.html
    write_sweep(load_sweep(["runs/a", "runs/b"]), "out")  # -> out/sweep_report.html, ...
"""

from rls.reports.run_html import build_report
from rls.reports.sweep import Sweep, load_sweep
from rls.reports.sweep_html import write_sweep

__all__ = ["Sweep", "build_report", "load_sweep", "write_sweep"]
