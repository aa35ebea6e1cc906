#!/usr/bin/env bash
# The GPU benchmarks, after a green first light (ci/gpu_first_light.sh); under 8 minutes.
#
#   bash ci/gpu_bench.sh                  (figures in $OUT, else /tmp/gpustack-bench)
#
# Writes, beside nvidia-smi's report: device.json (per-op kernel times and the device part of
# the fold for 24 MP RGB frames, bench/device.py), throughput.txt (bench/throughput.py end to
# end: 24 MP frames from memory, with and without alignment, and the moving example stack from
# files) and raw.txt (bench/raw.py: 24 MP DNGs, RAW_FRAMES of them, unpack rate against the
# pipeline's). Same wheel handling as the first light.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/gpustack-bench}"
. ci/gpu_env.sh
CORES="$(nproc)"
timeout 120 "$PY" bench/device.py --backend cuda --size 6000x4000 --frames 40 --out "$out" 2>&1 | grep -v '^{' | tee "$out/device.txt"
{
  timeout 100 "$PY" bench/throughput.py --backend cuda --frames 30 --size 6000x4000
  timeout 80 "$PY" bench/throughput.py --backend cuda --frames 30 --size 6000x4000 --align none
  timeout 40 "$PY" bench/throughput.py --backend cuda --folder examples/pcb
} 2>&1 | tee "$out/throughput.txt"
timeout 200 "$PY" bench/raw.py --backend cuda --frames "${RAW_FRAMES:-60}" --size 6000x4000 --workers "$CORES" \
  --skip-libraw-pipeline 2>&1 | tee "$out/raw.txt"
echo "gpu bench: exit $EXITCODE (figures in $out)"
exit $EXITCODE
