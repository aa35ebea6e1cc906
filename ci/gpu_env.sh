# Sourced by ci/gpu_first_light.sh and ci/gpu_bench.sh after they set $out: the output folder,
# the error trap, the Python, nvidia-smi's report, and the carried wheels (.whl/) on PYTHONPATH
# beside the source tree (a GPU machine may have no package index).
mkdir -p "$out"
EXITCODE=0
trap 'EXITCODE=1' ERR
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
nvidia-smi 2>&1 | tee "$out/nvidia-smi.txt"
nvidia-smi -q -d CLOCK,MEMORY,PERFORMANCE > "$out/nvidia-smi-q.txt" 2>&1 || true
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpustack-site .whl/*.whl
  export PYTHONPATH="/tmp/gpustack-site"
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
