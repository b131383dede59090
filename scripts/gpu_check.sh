#!/usr/bin/env bash
# Everything that needs a GPU, in one command (under 8 minutes on one GPU): the CUDA tests,
# the config-f 1024² search benchmark (fp32, TF32), the speed settings (compiled, bf16,
# channels-last: benchmarks/speed.py) and a 20-image x16 evaluate run
# on random config-f weights; JSON into benchmarks/results/gpu_*.json.
#   bash scripts/gpu_check.sh                       # on a CUDA machine, after setup.sh
#   bash scripts/gpu_check.sh --dry-run --out DIR   # CPU, tiny sizes (the test suite runs it)
# Details: benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
exec "$PY" benchmarks/gpu_check.py "$@"
