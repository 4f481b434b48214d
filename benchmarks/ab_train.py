"""A/B timing of train-step variants in one process, for machines whose speed drifts.

Every variant is compiled first, then the variants are timed in turn, round after round, so a
slow minute of the machine hits all of them alike. Prints each variant's median, min and max.

  python benchmarks/ab_train.py --config experiments/configs/bench_reference_16_128.py --rounds 4 \
      "xla:model.weight_grad='xla'" "auto:"

A variant is NAME:KEY=VALUE,KEY=VALUE (values are Python literals; nothing after the colon: the
config as it is).
"""
import argparse
import ast
import statistics
import time

import jax
import numpy as np

from sr3_jax import configs, train
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
  ap.add_argument("variants", nargs="+")
  args = ap.parse_args()
  steps = []
  for name, overrides in map(parse_variant, args.variants):
    config = configs.load(args.config, overrides)
    configs.validate(config)
    mesh = train.make_mesh(config)
    model = unet.build(config.model)
    bs, size = config.train.batch_size, config.data.image_size
    hr = jax.device_put(np.random.default_rng(0).uniform(-1, 1, (bs, size, size, 3)).astype(np.float32),
                        train.batch_sharding(mesh))
    state = train.create_train_state(config, model, mesh)
    t = time.perf_counter()
    step = train.make_train_step(config, model, mesh).lower(state, {"hr": hr}).compile()
    print(f"{name}: compile {time.perf_counter() - t:.1f} s", flush=True)
    holder = [state]

    def call(step=step, holder=holder, hr=hr):
      holder[0], metrics = step(holder[0], {"hr": hr})
      return metrics
    jax.block_until_ready(call())  # warm-up
    steps.append((name, bs, call, []))
  for _ in range(args.rounds):
    for _, _, call, times in steps:
      t = time.perf_counter()
      jax.block_until_ready(call())
      times.append(time.perf_counter() - t)
  for name, bs, _, times in steps:
    med = statistics.median(times)
    print(f"{name}: median {med:.2f} s (min {min(times):.2f}, max {max(times):.2f}), "
          f"{bs / med:.3f} examples/s")


if __name__ == "__main__":
  main()
