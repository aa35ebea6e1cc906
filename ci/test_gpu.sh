#!/usr/bin/env bash
# The GPU job (run by hand on a CUDA machine, never by .ci/run): the whole suite,
# which then includes the cuda-marked tests and the CPU/CUDA parity tests, plus the
# bench smoke run. Fails if every cuda test was skipped, so a GPU run that found
# no device cannot pass as green.
set -uo pipefail
cd "$(dirname "$0")/.."
EXITCODE=0
trap "EXITCODE=1" ERR
nvidia-smi || true
out="${OUT:-.}"
PYTHONPATH=. python -m pytest -q -m cuda -rs --junitxml="$out/cuda-tests.xml" tests | tee "$out/cuda-tests.log"
if grep -qE "^[0-9]+ skipped" "$out/cuda-tests.log" && ! grep -q passed "$out/cuda-tests.log"; then
  echo "every cuda test was skipped: no device?"; EXITCODE=1
fi
PYTHONPATH=. python -m pytest -q tests | tee "$out/all-tests.log"
PYTHONPATH=. python bench/throughput.py --backend cuda --frames 30 --size 4000x3000 | tee "$out/bench.txt"
exit $EXITCODE
