#!/usr/bin/env bash
# Create .venv/ in the repository root and install the project into it. Idempotent:
# a second run with an unchanged pyproject.toml does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat .venv/.setup-stamp 2>/dev/null)" != "$stamp" ]; then
    # torch first, pinned, in one command (a CPU-capable CUDA build; never let pip
    # resolve an unpinned torch), then the project and its dev tools.
    .venv/bin/python -m pip install -q --disable-pip-version-check \
        torch==2.14.1 torchvision==0.29.1
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
    echo "$stamp" > .venv/.setup-stamp
fi
