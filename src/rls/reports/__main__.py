"""``python -m rls.reports COMMAND ...`` (see :mod:`rls.reports.cli`)."""

from rls.reports.cli import main

if __name__ == "__main__":
    main()
