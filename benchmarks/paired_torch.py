"""PyTorch and sr3_jax train steps (or forward passes) timed in turn in one process.

This CPU's speed drifts by up to 1.5× within an hour, so two programs timed one after the other
can differ by more than the gap between them. Here each round runs one PyTorch step, then one
sr3_jax step of the same network (`bench_reference_16_128.py`, batch 4), with a pause between them
so that neither framework's worker threads are still spinning when the other starts; the ratio
of each round pairs two steps taken seconds apart. Both run under the same malloc settings: glibc
told to keep freed memory, as `sr3` does (host_malloc), or with SR3_MALLOC=system glibc's defaults.
Needs torch and sr3_jax importable together:

  PYTHONPATH=.venv/lib/python3.11/site-packages:. /tmp/torch/bin/python benchmarks/paired_torch.py 8
  (add `forward` after the round count to time forward passes instead of train steps)
"""

import pathlib
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import torch_reference  # noqa: E402

from sr3_jax import configs, sharding, train  # noqa: E402
from sr3_jax.cpu import malloc as host_malloc  # noqa: E402
from sr3_jax.models import unet  # noqa: E402

PAUSE_S = 1.0


def jax_step(what: str):
  config = configs.load(
    str(pathlib.Path(__file__).parents[1] / "experiments/configs/bench_reference_16_128.py")
  )
  mesh = sharding.make_mesh(config)
  model = unet.build(config.model)
  bs, size = config.train.batch_size, config.data.image_size
  rng = np.random.default_rng(0)
  hr = jax.device_put(
    rng.uniform(-1, 1, (bs, size, size, 3)).astype(np.float32), sharding.batch_sharding(mesh)
  )
  if what == "forward":
    params = jax.jit(lambda k: unet.init_params(model, k))(jax.random.key(0))
    gamma = jax.numpy.full((bs,), 0.5)
    # As in a sampler: Winograd kernels are transformed once, not at every network call.
    variables = jax.jit(lambda p: unet.prepare_inference(model, p, hr, gamma, hr))(params)
    f = jax.jit(lambda v, z, g, c: model.apply(v, z, g, c))
    return lambda: jax.block_until_ready(f(variables, hr, gamma, hr))
  holder = [train.create_train_state(config, model, mesh)]
  step = train.make_train_step(config, model, mesh)

  def call():
    holder[0], metrics = step(holder[0], {"hr": hr})
    jax.block_until_ready(metrics)

  return call


def main(rounds: int, what: str) -> None:
  print(
    f"malloc: {host_malloc.keep_freed_memory()}", file=sys.stderr
  )  # before JAX starts, as `sr3` does
  _, t_step, t_fwd = torch_reference.build()
  torch_fn = t_fwd if what == "forward" else t_step
  jax_fn = jax_step(what)
  torch_fn(), jax_fn()  # warm-up (and compile)
  times = {"pytorch": [], "sr3_jax": []}
  for r in range(rounds):
    for name, fn in (("pytorch", torch_fn), ("sr3_jax", jax_fn)):
      time.sleep(PAUSE_S)
      t = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t)
    print(
      f"round {r}: pytorch {times['pytorch'][-1]:.2f} s, sr3_jax {times['sr3_jax'][-1]:.2f} s",
      flush=True,
    )
  ratios = [p / j for p, j in zip(times["pytorch"], times["sr3_jax"])]
  for name, ts in times.items():
    print(
      f"{what} {name}: median {statistics.median(ts):.2f} s (min {min(ts):.2f}, max {max(ts):.2f})"
    )
  print(
    f"sr3_jax examples/s ÷ PyTorch's, per round: median {statistics.median(ratios):.2f} "
    f"(min {min(ratios):.2f}, max {max(ratios):.2f})"
  )


if __name__ == "__main__":
  main(int(sys.argv[1]) if len(sys.argv) > 1 else 8, sys.argv[2] if len(sys.argv) > 2 else "train")
