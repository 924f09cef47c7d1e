#!/usr/bin/env bash
# Issue 13's GPU measurement in one call: every net × block at the recipe widths and at the GPU recipe's
# (32,64,128,256,320), bfloat16 autocast, sliding-window prediction and one training step, NCDHW and
# channels_last_3d (which decides medseg.runtime.CHANNELS_LAST_DEFAULT["cuda"]), then the UNets compiled.
# Writes <out>/gpu.csv (the GPU's name), <out>/*.json (medseg bench records) and <out>/*.txt (the tables).
#
#   benchmarks/bench_gpu.sh [out-folder]        # about 5-10 min on one H100/H200-class GPU
set -euo pipefail
out=${1:-bench-gpu}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.csv"
bench() {  # name, then medseg bench options
  local name=$1
  shift
  python -m medseg.cli bench --device cuda --dtype bfloat16 --layer-size 0 --json "$out/$name.json" "$@" \
    | tee "$out/$name.txt"
}
for widths in recipe gpu; do
  bench "$widths-ncdhw" --widths "$widths" --no-channels-last
  bench "$widths-channels-last" --widths "$widths" --channels-last
done
bench gpu-compiled --widths gpu --archs unet --no-channels-last --compile
