#!/usr/bin/env bash
# The GPU benchmark pass (issue: performance): one script, run on an H100/H200 from the repo root.
#   bash benchmarks/gpu.sh OUTDIR [TOTAL_SECONDS]
# Each bench is its own process (an out-of-memory batch does not take the others down) and
# prints one JSON line; all lines are collected in OUTDIR/gpu_bench.jsonl. The train step goes
# first with most of the time (XLA's GPU autotuning of every convolution shape makes its compile
# take minutes); the sampler gets what is left of TOTAL_SECONDS.
# Batch sizes: TRAIN_BATCH (default 128: ~85 GB in bf16, for an H200; use 64 on an H100) and
# SAMPLE_BATCH (default 128).
# Beyond JAX, Flax, Optax and Orbax, `sr3 bench` imports grain (with array_record and portpicker) and
# ml_collections; on a host with no package index, `pip download` those wheels elsewhere and
# `pip install --no-index --no-deps` them first.
set -u
out=${1:-/tmp/gpu_bench}
total=${2:-560}
train_batch=${TRAIN_BATCH:-128}
sample_batch=${SAMPLE_BATCH:-128}
mkdir -p "$out"
start=$SECONDS
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.95
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" | tee -a "$out/gpu.txt"
bench() {  # timeout_s then sr3 bench args
  local t=$1; shift
  echo "== [$((SECONDS - start)) s] sr3 bench $* (limit ${t} s)" | tee -a "$out/log.txt"
  timeout "$t" python3 -m sr3_jax bench "$@" --json >"$out/one.txt" 2>>"$out/log.txt"
  local rc=$?
  tail -n 1 "$out/one.txt" | tee -a "$out/gpu_bench.jsonl"
  echo "rc=$rc" | tee -a "$out/log.txt"
}
paper=experiments/configs/sr3_faces_16_128.py
bench $((total * 4 / 5)) --config $paper --what train --dtype bfloat16 --batch "$train_batch" --iters 5
bench $((total - (SECONDS - start) - 5)) --config $paper --what sample --dtype bfloat16 \
  --batch "$sample_batch" --steps 100 --iters 2
nvidia-smi --query-gpu=clocks.sm,temperature.gpu,power.draw --format=csv,noheader | tee -a "$out/gpu.txt"
echo "== done in $((SECONDS - start)) s"
