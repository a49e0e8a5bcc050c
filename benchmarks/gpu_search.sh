#!/usr/bin/env bash
# End to end on a CUDA machine: the wall-time estimate calibrated on the GPU, then a short search with
# the latency objective measured on the GPU (PyTorch, bf16 autocast), and its front.
# Usage: bash benchmarks/gpu_search.sh DATASET OUT_DIR   (DATASET: an MSD-layout folder, e.g. from
# `emonas demo-data`; needs the engine's dependencies; a few minutes on one GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
data=$1
out=${2:-${OUT:-.}}
mkdir -p "$out"
run=$(mktemp -d)/run
emonas() { python3 -m engine.cli "$@"; }
common=(--dataset "$data" --population 4 --generations 2 --epochs 2 --device cuda --objective latency
        --latency-target cuda --seed 0)
{
  echo "== estimate (calibrated on this GPU)"
  emonas search "${common[@]}" --out "$run" --estimate
  echo "== search"
  start=$(date +%s)
  emonas search "${common[@]}" --out "$run"
  echo "wall time $(( $(date +%s) - start )) s"
  echo "== front"
  emonas front "$run"
} 2>&1 | tee "$out/gpu_search.log"
