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
# A machine without a package index: rawpy's wheel carried in .whl/ (rawpy==0.28.0, cp312, manylinux_2_28).
if ! python -c "import rawpy" 2>/dev/null && ls .whl/rawpy-*.whl >/dev/null 2>&1; then
  pip install -q --no-deps --target .whl/site .whl/rawpy-*.whl && export PYTHONPATH=".whl/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
python -m pytest -q -m cuda -rs --junitxml="$out/cuda-tests.xml" tests | tee "$out/cuda-tests.log"
if grep -qE "^[0-9]+ skipped" "$out/cuda-tests.log" && ! grep -q passed "$out/cuda-tests.log"; then
  echo "every cuda test was skipped: no device?"; EXITCODE=1
fi
python -m pytest -q tests | tee "$out/all-tests.log"
python -m pytest -q bench/test_bench_ops.py --benchmark-enable --benchmark-json="$out/ops.json" | tee "$out/ops.txt"
python bench/throughput.py --backend cuda --frames 30 --size 6000x4000 | tee "$out/bench.txt"
python bench/throughput.py --backend cuda --frames 30 --size 6000x4000 --align none | tee -a "$out/bench.txt"
# a stack that moves (6 of 7 frames warped): the estimation and warp share of the frame time on the GPU
python bench/throughput.py --backend cuda --folder examples/pcb | tee -a "$out/bench.txt"
# the issue measures 200 frames of 24 MP (about 10 GB of DNGs, written once to /tmp)
python bench/raw.py --backend cuda --frames "${RAW_FRAMES:-200}" --size 6000x4000 | tee "$out/raw.txt"
exit $EXITCODE
