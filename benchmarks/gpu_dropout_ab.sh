#!/usr/bin/env bash
# The paper 16→128 train step on one GPU under each dropout-mask generator (train.dropout_rng):
#   [RNGS='threefry hash unsafe_rbg'] bash benchmarks/gpu_dropout_ab.sh OUTDIR [PER_RUN_SECONDS]
#   (from the repo root; a first compile with nothing cached took over 250 s on an H200)
# `auto` picks threefry on GPU (configs.base_config); this pass is the GPU measurement behind that
# choice: the same `sr3 bench` train line once per generator, each in its own process, one JSON
# line each in OUTDIR/dropout_ab.jsonl (the generator is added to the line as "dropout_rng").
# JAX_COMPILATION_CACHE_DIR lets the second process reuse the first one's convolution autotuning,
# so the second compile is shorter; the programs themselves differ and are compiled afresh.
# Beyond JAX, Flax, Optax and Orbax, `sr3 bench` needs grain (array_record, portpicker),
# ml_collections, tensorboardX and importlib_resources (benchmarks/gpu.sh says how to bring them).
set -u
out=${1:-/tmp/gpu_dropout_ab}
per_run=${2:-400}
batch=${TRAIN_BATCH:-128}
config=${CONFIG:-experiments/configs/sr3_faces_16_128.py}
rngs=${RNGS:-threefry hash unsafe_rbg}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.95
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/sr3_jax_cache}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" | tee -a "$out/gpu.txt"
start=$SECONDS
for rng in $rngs; do
  echo "== [$((SECONDS - start)) s] train.dropout_rng=$rng (limit ${per_run} s)" | tee -a "$out/log.txt"
  timeout "$per_run" python3 -m sr3_jax bench --config "$config" \
    --what train --dtype bfloat16 --batch "$batch" --iters 5 --set "train.dropout_rng=$rng" \
    --json >"$out/one.txt" 2>>"$out/log.txt"
  rc=$?
  echo "rc=$rc" | tee -a "$out/log.txt"
  [ "$rc" = 0 ] && tail -n 1 "$out/one.txt" |
    python3 -c "import json,sys; d=json.loads(sys.stdin.read()); d['dropout_rng']='$rng'; print(json.dumps(d))" |
    tee -a "$out/dropout_ab.jsonl"
done
nvidia-smi --query-gpu=clocks.sm,temperature.gpu,power.draw --format=csv,noheader | tee -a "$out/gpu.txt"
echo "== done in $((SECONDS - start)) s"
