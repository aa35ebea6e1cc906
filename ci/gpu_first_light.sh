#!/usr/bin/env bash
# First light: the first thing to run on a GPU machine, before any benchmark; under 5 minutes.
#
#   bash ci/gpu_first_light.sh            (results in $OUT, else /tmp/gpustack-first-light)
#
# Self-contained on a machine with CuPy and a GPU but no package index: runs from the
# source tree (PYTHONPATH), installing any wheels carried in .whl/ (rawpy and
# imagecodecs, cp312 manylinux: the README, "Checking on a GPU", says how to fetch them) into a
# temporary folder. Runs, in order:
#   1. the NVRTC gate and every cuda-marked test: op-by-op parity with the cpu backend, whole
#      stacks from JPEG, 16-bit TIFF and DNG files with motion, every method, byte for byte,
#      the memory check, the synchronised mode, a planted kernel fault;
#   2. the CLI on the bundled example on both backends: the output files compared byte for byte;
#   3. compute-sanitizer memcheck over one small stack, where the machine allows it.
# Fails if any step fails or if every cuda test was skipped (a run that found no GPU is not green).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/gpustack-first-light}"
. ci/gpu_env.sh
export GPUSTACK_REQUIRE_TOOLCHAIN=1
"$PY" - <<'PY' 2>&1 | tee "$out/versions.txt"
import cupy, numba, numpy, gpustack
from gpustack.backends import cuda_status
from gpustack.backends.cuda import _kernels
print("gpustack", gpustack.__version__, "numpy", numpy.__version__, "numba", numba.__version__, "cupy", cupy.__version__)
print("cuda_status", cuda_status())
print("NVRTC", _kernels._nvrtc().getVersion(), "archs", _kernels._nvrtc().getSupportedArchs())
PY

echo "== 1. cuda tests and the NVRTC gate"
timeout 240 "$PY" -m pytest -q -rs -p no:cacheprovider -m "cuda or not cuda" \
  tests/test_nvrtc_modules.py tests/test_cuda_backend.py --junitxml="$out/cuda-tests.xml" 2>&1 | tee "$out/cuda-tests.log"
if ! grep -qE "[0-9]+ passed" "$out/cuda-tests.log" || grep -q "no CUDA device" "$out/cuda-tests.log"; then
  echo "first light: the cuda tests did not run on a GPU"; EXITCODE=1
fi

echo "== 2. the CLI on examples/pcb, cpu and cuda, byte for byte"
for be in cpu cuda; do
  rm -rf "/tmp/gpustack-fl-$be"; mkdir -p "/tmp/gpustack-fl-$be"
  timeout 120 "$PY" -m gpustack stack examples/pcb -o "/tmp/gpustack-fl-$be/fused.tif" \
    --depth-map "/tmp/gpustack-fl-$be/depth.tif" --backend "$be" -v 2>&1 | tail -5 | tee -a "$out/cli.log"
done
for f in fused.tif depth.tif; do
  if cmp "/tmp/gpustack-fl-cpu/$f" "/tmp/gpustack-fl-cuda/$f"; then echo "$f: identical" | tee -a "$out/cli.log"
  else echo "$f: DIFFERS" | tee -a "$out/cli.log"; EXITCODE=1; fi
done

echo "== 3. compute-sanitizer memcheck on one small stack"
if command -v compute-sanitizer >/dev/null; then
  GPUSTACK_TEST_NO_POOL=1 timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 20 \
    "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda_backend.py -k "test_stack_cuda_equals_cpu and pyramid" \
    2>&1 | tail -30 | tee "$out/memcheck.log"
  status=${PIPESTATUS[0]}
  if [ "$status" = 9 ]; then echo "memcheck found errors"; EXITCODE=1
  elif [ "$status" != 0 ]; then echo "memcheck could not run here (exit $status): see memcheck.log"; fi
else
  echo "compute-sanitizer not found: skipped" | tee "$out/memcheck.log"
fi
echo "first light: exit $EXITCODE (logs in $out)"
exit $EXITCODE
