"""``python -m callbacks.sweep ...``: the same as ``python -m rls.reports sweep ...``
(:mod:`rls.reports.sweep`), under the name the README gives."""

from rls.reports.cli import sweep_main

if __name__ == "__main__":
    sweep_main(prog="python -m callbacks.sweep")
