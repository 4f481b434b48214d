"""The attention implementation on TPU: what the U-Net's self-attention costs in a paper train step.

Every SR3 paper config attends at 16×16 only (model.attn_resolutions=(16,)): 256 positions, heads
of 64 channels. This compiles, for one TPU chip, the forward and backward of that attention core
(softmax(q kᵀ/√d) v, bf16, per-chip batch B) ahead of time and reports the TPU compiler's
figures for

- xla:   jax.nn.dot_product_attention, what models/unet.AttnBlock calls (XLA's own on TPU);
- flash: the Pallas TPU flash-attention kernel (jax.experimental.pallas.ops.tpu.flash_attention),
         on the (B, heads, L, d) layout it takes.

and, from a paper train step compiled by `sr3 aot` (benchmarks/tpu_table.py's JSON lines,
--table), the attention's share of the step: layers × its time / the step's time. No attention
implementation can save more than that share.

  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/tpu_attention.py [--topology v5p:2x2x1]
      [--per-chip 64] [--table tpu_table.jsonl] [--step 16_128=0.337]

The cost model counts a Pallas kernel by the cost estimate its author attached: the flash
kernel's forward carries one, its backward kernels do not, so the flash row's FLOPs and time
leave the backward out; its memory figures are the compiler's own.
"""

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import SingleDeviceSharding  # noqa: E402

from sr3_jax import aot, configs  # noqa: E402
from tpu_table import CONFIGS as CONFIG_FILES  # noqa: E402  (benchmarks/ is on sys.path)


def attention_shape(model) -> tuple[int, int, int, int]:
  """(positions, heads, head_dim, layers) of the U-Net's self-attention (one resolution)."""
  (res,) = model.attn_resolutions
  level = (model.image_size // res).bit_length() - 1
  channels = model.channels * model.channel_mult[level]
  heads = max(1, channels // model.head_dim)
  # Down path: a layer after each res block; the middle: one; up path: one per res block + 1.
  layers = 2 * model.num_res_blocks + 2
  return res * res, heads, channels // heads, layers


def xla_attention(q, k, v):
  return jax.nn.dot_product_attention(q, k, v)


def flash_attention(q, k, v):
  from jax.experimental.pallas.ops.tpu import flash_attention as fa

  t = lambda x: x.transpose(0, 2, 1, 3)  # (B, L, H, D) <-> (B, H, L, D)
  return t(fa.flash_attention(t(q), t(k), t(v), sm_scale=q.shape[-1] ** -0.5))


IMPLS = {"xla": xla_attention, "flash": flash_attention}


def compile_attention(impl, shape, device) -> dict:
  def loss(q, k, v):
    return jnp.sum(jnp.square(IMPLS[impl](q, k, v).astype(jnp.float32)))

  grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
  s = jax.ShapeDtypeStruct(shape, jnp.bfloat16, sharding=SingleDeviceSharding(device))
  t = time.perf_counter()
  compiled = grad.lower(s, s, s).compile()
  compile_s = time.perf_counter() - t
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return dict(
    temp_bytes=int(mem.temp_size_in_bytes),
    flops=float(cost.get("flops", 0.0)),
    optimal_seconds=float(cost.get("optimal_seconds", 0.0)),
    bytes_accessed=float(cost.get("bytes accessed", 0.0)),
    compile_s=compile_s,
  )


def paper_steps(table: pathlib.Path | None, topology: str) -> dict:
  """{config name: (per-chip batch, optimal_seconds)} of the paper train cells on `topology`."""
  out = {}
  if table is None or not table.exists():
    return out
  for line in table.read_text().splitlines():
    r = json.loads(line)
    name = next((n for n, f in CONFIG_FILES.items() if r.get("config", "").endswith(f)), None)
    if (
      name
      and r.get("what") == "train"
      and r.get("topology") == topology
      and r.get("num_slices", 1) == 1
      and r.get("optimal_seconds")
    ):
      out[name] = (r["per_device_batch"], r["optimal_seconds"])
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--topology", default="v5p:2x2x1")
  ap.add_argument("--per-chip", type=int, default=64, help="images per chip (paper batch on v5p-8)")
  ap.add_argument("--configs", default=",".join(CONFIG_FILES))
  ap.add_argument("--impls", default=",".join(IMPLS))
  ap.add_argument("--table", type=pathlib.Path, help="sr3 aot JSON lines with paper train steps")
  ap.add_argument(
    "--step",
    action="append",
    default=[],
    metavar="CONFIG=SECONDS",
    help="a paper step's optimal_seconds at --per-chip, where --table has none (repeatable)",
  )
  args = ap.parse_args()
  device = aot.tpu_devices(args.topology)[0]
  steps = paper_steps(args.table, args.topology)
  for item in args.step:
    name, _, seconds = item.partition("=")
    steps[name] = (args.per_chip, float(seconds))
  print(f"{args.topology}: {device.device_kind}, {args.per_chip} images per chip", file=sys.stderr)
  print(
    "| config | positions × heads × head dim | layers | impl | FLOP (fwd+bwd, one layer) | "
    "optimal time, one layer | all layers | share of the paper step | temporaries | compile |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|")
  for name in args.configs.split(","):
    model = configs.load(CONFIG_FILES[name]).model
    positions, heads, head_dim, layers = attention_shape(model)
    step = steps.get(name)
    for impl in args.impls.split(","):
      r = compile_attention(impl, (args.per_chip, positions, heads, head_dim), device)
      total = layers * r["optimal_seconds"]
      share = "—"
      if step and step[0] == args.per_chip:
        share = f"{100 * total / step[1]:.1f}% of {step[1] * 1e3:.0f} ms"
      print(
        f"| {name} | {positions} × {heads} × {head_dim} | {layers} | {impl} | "
        f"{r['flops'] / 1e9:.1f} G | {r['optimal_seconds'] * 1e3:.3f} ms | "
        f"{total * 1e3:.2f} ms | {share} | {r['temp_bytes'] / 2**20:.0f} MiB | "
        f"{r['compile_s']:.1f} s |",
        flush=True,
      )


if __name__ == "__main__":
  main()
