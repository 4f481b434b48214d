"""One upsampling layer (2× nearest, then a 3×3 convolution), direct against subpixel, timed in turn.

The reference network's two such layers that XLA convolves (batch 4): 64² → 128² with 128
channels and 32² → 64² with 256. For each, the forward pass, the input gradient, the weight
gradient and both gradients together, each jitted; the variants alternate round after round and
the medians are printed in ms.

  python benchmarks/upsample_conv.py [ROUNDS]
"""

import statistics
import sys
import time

import jax
import numpy as np

from sr3_jax.cpu import malloc as host_malloc
from sr3_jax.cpu import conv, subpixel
from sr3_jax.models.conv import upsample_nearest

LAYERS = ((4, 64, 64, 128), (4, 32, 32, 256))


def variants():
  direct = lambda x, w: conv.conv_im2col_grad(upsample_nearest(x), w)
  sub = lambda x, w: subpixel.upsample_conv(x, w, conv.im2col_weight_grad)
  fns = {}
  for name, f in (("direct", direct), ("subpixel", sub)):
    fns[f"{name} forward"] = jax.jit(lambda x, w, dy, f=f: f(x, w))
    fns[f"{name} input grad"] = jax.jit(lambda x, w, dy, f=f: jax.vjp(lambda x: f(x, w), x)[1](dy))
    fns[f"{name} weight grad"] = jax.jit(lambda x, w, dy, f=f: jax.vjp(lambda w: f(x, w), w)[1](dy))
    fns[f"{name} both grads"] = jax.jit(lambda x, w, dy, f=f: jax.vjp(f, x, w)[1](dy))
  return fns


def main(rounds: int) -> None:
  print(
    f"malloc: {host_malloc.keep_freed_memory()}", file=sys.stderr
  )  # before JAX starts, as `sr3` does
  rng = np.random.default_rng(0)
  fns = variants()
  for shape in LAYERS:
    n, h, w, c = shape
    x = rng.standard_normal(shape).astype(np.float32)
    k = (rng.standard_normal((3, 3, c, c)) * 0.05).astype(np.float32)
    dy = rng.standard_normal((n, 2 * h, 2 * w, c)).astype(np.float32)
    for f in fns.values():
      jax.block_until_ready(f(x, k, dy))
    times = {name: [] for name in fns}
    for _ in range(rounds):
      for name, f in fns.items():
        t = time.perf_counter()
        jax.block_until_ready(f(x, k, dy))
        times[name].append((time.perf_counter() - t) * 1e3)
    print(f"{h}² → {2 * h}², {c} → {c} channels, batch {n}:")
    for name, ts in times.items():
      print(f"  {name:22s} {statistics.median(ts):7.1f} ms")


if __name__ == "__main__":
  main(int(sys.argv[1]) if len(sys.argv) > 1 else 9)
