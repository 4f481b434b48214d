"""A/B timing of train-step (or forward-pass) variants in one process, for machines whose speed drifts.

Every variant is compiled first, then the variants are timed in turn, round after round, so a
slow minute of the machine hits all of them alike. Prints each variant's median, min and max, and
the per-round ratio of the first variant's time to each other's.

  python benchmarks/ab_train.py --config experiments/configs/bench_reference_16_128.py --rounds 4 \
      "xla:model.conv_impl='xla'" "cpu:model.conv_impl='cpu'"
  python benchmarks/ab_train.py --config experiments/configs/bench_reference_16_128.py --rounds 10 \
      --what forward "xla:model.conv_impl='xla'" "auto:"

`--what forward` times one network call as a sampling step makes it (Winograd kernels prepared
once, `unet.prepare_inference`), on the same random params for every variant.

A variant is NAME:KEY=VALUE,KEY=VALUE (values are Python literals; nothing after the colon: the
config as it is).
"""

import argparse
import ast
import statistics
import sys
import time

import jax
import numpy as np

from sr3_jax import configs, sharding, train
from sr3_jax.cpu import malloc as host_malloc
from sr3_jax.models import unet


def parse_variant(text: str) -> tuple[str, dict]:
  name, _, rest = text.partition(":")
  overrides = {}
  for item in filter(None, rest.split(",")):
    key, _, value = item.partition("=")
    overrides[key] = ast.literal_eval(value)
  return name, overrides


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", required=True)
  ap.add_argument("--rounds", type=int, default=4)
  ap.add_argument("--what", choices=("train", "forward"), default="train")
  ap.add_argument("variants", nargs="+")
  args = ap.parse_args()
  print(
    f"malloc: {host_malloc.keep_freed_memory()}", file=sys.stderr
  )  # before JAX starts, as `sr3` does
  steps = []
  params = None
  for name, overrides in map(parse_variant, args.variants):
    config = configs.load(args.config, overrides)
    configs.validate(config)
    mesh = sharding.make_mesh(config)
    model = unet.build(config.model)
    bs, size = config.train.batch_size, config.data.image_size
    hr = jax.device_put(
      np.random.default_rng(0).uniform(-1, 1, (bs, size, size, 3)).astype(np.float32),
      sharding.batch_sharding(mesh),
    )
    t = time.perf_counter()
    if args.what == "forward":
      if (
        params is None
      ):  # random, not the zero-initialised output layer, so outputs can be compared
        params = jax.jit(lambda k: unet.init_params(model, k))(jax.random.key(0))
        params = jax.tree.map(
          lambda p: p + 0.02 * jax.random.normal(jax.random.key(1), p.shape), params
        )
      gamma = jax.numpy.full((bs,), 0.5)
      variables = jax.jit(lambda p, model=model: unet.prepare_inference(model, p, hr, gamma, hr))(
        params
      )
      forward = (
        jax.jit(lambda v, model=model: model.apply(v, hr, gamma, hr)).lower(variables).compile()
      )
      call = lambda forward=forward, variables=variables: forward(variables)
    else:
      state = train.create_train_state(config, model, mesh)
      step = train.make_train_step(config, model, mesh).lower(state, {"hr": hr}).compile()
      holder = [state]

      def call(step=step, holder=holder, hr=hr):
        holder[0], metrics = step(holder[0], {"hr": hr})
        return metrics

    print(f"{name}: compile {time.perf_counter() - t:.1f} s", flush=True)
    out = jax.block_until_ready(call())  # warm-up
    if args.what == "forward" and steps:
      first = steps[0][4]
      print(
        f"{name}: max |output - {steps[0][0]}'s| = {float(abs(out - first).max()):.2e} "
        f"(output scale {float(abs(first).max()):.2f})"
      )
    steps.append((name, bs, call, [], out))
  for _ in range(args.rounds):
    for _, _, call, times, _ in steps:
      t = time.perf_counter()
      jax.block_until_ready(call())
      times.append(time.perf_counter() - t)
  for name, bs, _, times, _ in steps:
    med = statistics.median(times)
    print(
      f"{name}: median {med:.2f} s (min {min(times):.2f}, max {max(times):.2f}), "
      f"{bs / med:.3f} examples/s"
    )
  base_name, base = steps[0][0], steps[0][3]
  for name, _, _, times, _ in steps[1:]:
    ratios = [b / t for b, t in zip(base, times)]
    print(
      f"{base_name} ÷ {name}, time per round: median {statistics.median(ratios):.3f} "
      f"(min {min(ratios):.3f}, max {max(ratios):.3f})"
    )


if __name__ == "__main__":
  main()
