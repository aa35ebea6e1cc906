#!/usr/bin/env bash
# The CPU job: install gpustack with its test dependencies into a fresh virtual
# environment and run the whole suite (CUDA tests skip without a device; the CUDA
# kernels are still compiled by nvcc --ptx and run through the g++ emulation).
# This is the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 --version
VENV="${GPUSTACK_VENV:-.venv}"
python3 -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[test]"
timeout 20m python -m pytest -q "$@"
