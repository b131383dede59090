#!/usr/bin/env bash
# Set everything up, then lint and run the test suite (fast tests; add `-m slow` for the rest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WANDB_MODE=disabled WANDB_SILENT=true HYDRA_FULL_ERROR=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
