#!/usr/bin/env bash
# The CPU job: install gpustack with its test dependencies into a fresh virtual
# environment and run the whole suite (CUDA tests skip without a device; the CUDA
# kernels are still compiled by NVRTC, as the backend does, and run through the g++ emulation).
# This is the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 --version
VENV="${GPUSTACK_VENV:-.venv}"
python3 -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[test]"
# Where the test extra installs NVRTC (Linux x86-64 and aarch64) and g++ is there, the kernel
# checks must run, not skip: CI has no GPU, and they are what stands in for one
case "$(uname -s)/$(uname -m)" in
  Linux/x86_64|Linux/aarch64) command -v "${CXX:-g++}" >/dev/null && export GPUSTACK_REQUIRE_TOOLCHAIN="${GPUSTACK_REQUIRE_TOOLCHAIN:-1}" ;;
esac
timeout 20m python -m pytest -q "$@"
