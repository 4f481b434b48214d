"""Scanned blocks on TPU: a run of identical U-Net residual blocks as one `nn.scan`, or unrolled.

Scanning a stack of identical layers (MaxText's `scan_layers`) hands the compiler one body
instead of n copies: a transformer of 48 identical layers compiles several times faster. A U-Net is
not such a stack. Its blocks change shape from level to level, and every up-path block takes a
skip connection of its own width, so only runs of same-shape down-path blocks could share a body.
This script measures both halves of the question for the paper configs:

1. structure: how many of the U-Net's residual blocks a scan could fold (each run of r identical
   blocks becomes one body), from the config alone;
2. the TPU compiler's figures for the longest such run of the paper 16→128 model (its first
   level: 3 blocks at 128×128 with 128 channels), forward and backward at B images per chip,
   scanned (`nn.scan` over the block's params and dropout RNG) and unrolled: compile time,
   temporaries, FLOPs and optimal time.

  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/tpu_scan_blocks.py [--topology v5p:2x2x1]
      [--per-chip 64]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import SingleDeviceSharding  # noqa: E402

from sr3_jax import aot, configs  # noqa: E402
from sr3_jax.models import unet  # noqa: E402
from tpu_table import CONFIGS as CONFIG_FILES  # noqa: E402  (benchmarks/ is on sys.path)


def scannable(model) -> tuple[int, int, list[int]]:
  """(residual blocks, block bodies with same-shape runs scanned, the run lengths)."""
  levels, n = len(model.channel_mult), model.num_res_blocks
  resample = 2 * (levels - 1) if model.resample == "resblock" else 0
  total = levels * n + 2 + levels * (n + 1) + resample
  runs = []
  for level, mult in enumerate(model.channel_mult):
    previous = 1 if level == 0 else model.channel_mult[level - 1]  # conv_in gives `channels`
    runs.append(n if mult == previous else n - 1)  # the first block changes width otherwise
  return total, total - sum(r - 1 for r in runs if r > 1), runs


class _Cell(nn.Module):
  """One residual block as a scan body: (carry, emb) → (carry, None)."""

  block: dict

  @nn.compact
  def __call__(self, x, emb):
    return unet.ResBlock(**self.block, name="block")(x, emb, True), None


class Run(nn.Module):
  """`length` identical residual blocks, scanned or unrolled."""

  length: int
  scan: bool
  block: dict

  @nn.compact
  def __call__(self, x, emb):
    if self.scan:
      stack = nn.scan(
        _Cell,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=nn.broadcast,
        length=self.length,
      )
      x, _ = stack(self.block, name="blocks")(x, emb)
      return x
    for i in range(self.length):
      x = unet.ResBlock(**self.block, name=f"block{i}")(x, emb, True)
    return x


def compile_run(scan: bool, length: int, shape, emb_dim: int, block: dict, device) -> dict:
  model = Run(length, scan, block)
  shard = SingleDeviceSharding(device)
  x = jax.ShapeDtypeStruct(shape, jnp.bfloat16, sharding=shard)
  emb = jax.ShapeDtypeStruct((shape[0], emb_dim), jnp.bfloat16, sharding=shard)
  key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=shard)
  params = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jnp.zeros(shape, jnp.bfloat16), jnp.zeros(emb.shape))
  )["params"]
  params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=shard), params)

  def loss(p, x, emb, key):
    y = model.apply({"params": p}, x, emb, rngs={"dropout": key})
    return jnp.mean(jnp.square(y.astype(jnp.float32)))

  t = time.perf_counter()
  compiled = jax.jit(jax.grad(loss)).lower(params, x, emb, key).compile()
  compile_s = time.perf_counter() - t
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return dict(
    compile_s=compile_s,
    temp_bytes=int(mem.temp_size_in_bytes),
    flops=float(cost.get("flops", 0.0)),
    optimal_seconds=float(cost.get("optimal_seconds", 0.0)),
  )


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--topology", default="v5p:2x2x1")
  ap.add_argument("--per-chip", type=int, default=64, help="images per chip (paper batch on v5p-8)")
  ap.add_argument("--repeats", type=int, default=3, help="compiles per variant; the median")
  args = ap.parse_args()

  print("| config | residual blocks | runs a scan could fold (per level) | block bodies scanned |")
  print("|---|---|---|---|")
  for name, path in CONFIG_FILES.items():
    total, after, runs = scannable(configs.load(path).model)
    print(
      f"| {name} | {total} | {', '.join(map(str, runs))} | {after} ({after / total - 1:+.0%}) |"
    )

  model = configs.load(CONFIG_FILES["16_128"]).model
  size, channels = model.image_size, model.channels * model.channel_mult[0]
  block = dict(
    out_channels=channels,
    num_groups=model.num_groups,
    dropout=model.dropout,
    dtype=jnp.dtype(model.dtype),
    conv_cls=unet.conv_factory("xla"),
  )
  device = aot.tpu_devices(args.topology)[0]
  shape = (args.per_chip, size, size, channels)
  emb_dim = 4 * model.channels
  print(f"\n{args.topology} ({device.device_kind}), {shape} bf16, fwd+bwd:", file=sys.stderr)
  print("\n| 16_128 level 0, 3 blocks | compile (median) | temporaries | FLOP | optimal time |")
  print("|---|---|---|---|---|")
  for scan in (False, True):
    rs = [
      compile_run(scan, model.num_res_blocks, shape, emb_dim, block, device)
      for _ in range(args.repeats)
    ]
    r = rs[0]
    compile_s = sorted(x["compile_s"] for x in rs)[len(rs) // 2]
    print(
      f"| {'scanned' if scan else 'unrolled'} | {compile_s:.2f} s | "
      f"{r['temp_bytes'] / 2**30:.2f} GiB | {r['flops'] / 1e12:.2f} T | "
      f"{r['optimal_seconds'] * 1e3:.1f} ms |",
      flush=True,
    )


if __name__ == "__main__":
  main()
