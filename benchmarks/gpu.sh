#!/usr/bin/env bash
# The GPU benchmark pass (issue: performance): one script, run on an H100/H200 from the repo root.
#   bash benchmarks/gpu.sh OUTDIR
# Each bench is its own process (an out-of-memory batch does not take the others down) and
# prints one JSON line; all lines are collected in OUTDIR/gpu_bench.jsonl.
set -u
out=${1:-/tmp/gpu_bench}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.95
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" | tee -a "$out/gpu.txt"
bench() {  # timeout_s then sr3 bench args
  local t=$1; shift
  echo "== sr3 bench $*" | tee -a "$out/log.txt"
  timeout "$t" python3 -m sr3_jax bench "$@" --json >"$out/one.txt" 2>>"$out/log.txt"
  local rc=$?
  tail -n 1 "$out/one.txt" | tee -a "$out/gpu_bench.jsonl"
  echo "rc=$rc" | tee -a "$out/log.txt"
}
paper=experiments/configs/sr3_faces_16_128.py
bench 170 --config $paper --what train --dtype bfloat16 --batch 64 --iters 5
bench 170 --config $paper --what train --dtype bfloat16 --batch 128 --iters 5
bench 150 --config $paper --what sample --dtype bfloat16 --batch 64 --steps 100 --iters 2
