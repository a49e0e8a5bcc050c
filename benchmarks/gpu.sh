#!/usr/bin/env bash
# GPU benchmarks on a machine whose Python has PyTorch and numpy only. Well under 10 minutes on an H200.
# Usage: bash benchmarks/gpu.sh [OUT_DIR]   (writes gpu_bench.json and gpu_bench.log there)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-.}}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu_bench.log"
PYTHONUNBUFFERED=1 timeout "${GPU_BENCH_TIMEOUT:-540}" python3 benchmarks/gpu_bench.py --json 2>&1 | tee -a "$out/gpu_bench.log"
tail -n 1 "$out/gpu_bench.log" > "$out/gpu_bench.json"
