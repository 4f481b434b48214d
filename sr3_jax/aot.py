"""`sr3 aot`: a config's train step or sampler compiled ahead of time for a TPU topology, on any host.

With the TPU compiler installed (`jax[tpu]` at the installed jax's version; no TPU needed),
`jax.experimental.topologies.get_topology_desc` describes the chips of a slice (or of several
slices) and `jit(...).lower(abstract inputs).compile()` runs the TPU compiler for them. The real
train step (`train.make_train_step`) or sampler (`inference.make_super_resolve` /
`make_generate`) is built on the mesh the config gets on those chips, from abstract state and
batches (nothing is allocated), and the compiler reports per chip:

- memory: argument + output + temporary − aliased bytes (`peak_hbm_bytes`) against the chip's HBM;
- cost: `flops` and `optimal_seconds`, the compiler's own estimate of the step's time, from which
  `mfu_bound` = flops / optimal_seconds / the chip's dense bf16 peak (an upper bound on MFU).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import topologies
from jax.sharding import NamedSharding, PartitionSpec as P

from sr3_jax import bench, configs, inference, sharding, train
from sr3_jax.models import unet

GIB = 1024**3
# HBM per chip, by device kind (Cloud TPU system architecture pages).
HBM_BYTES = {
  "TPU v4": 32 * GIB,
  "TPU v5 lite": 16 * GIB,  # v5e
  "TPU v5e": 16 * GIB,
  "TPU v5p": 95 * GIB,
  "TPU v5": 95 * GIB,
  "TPU v6 lite": 32 * GIB,  # v6e (Trillium)
  "TPU v6e": 32 * GIB,
}
WHAT = ("train", "sample")
EXAMPLE_TOPOLOGIES = ("v4:2x2x1", "v5e:2x2", "v5p:2x2x1", "v6e:2x2")


def hbm_bytes(device_kind: str) -> int | None:
  for key in sorted(HBM_BYTES, key=len, reverse=True):  # most specific name first
    if key.lower() in device_kind.lower():
      return HBM_BYTES[key]
  return None


@dataclasses.dataclass
class AotResult:
  config: str
  what: str
  topology: str
  num_slices: int
  devices: int
  device_kind: str
  mesh: dict[str, int]
  global_batch: int
  per_device_batch: float
  image_size: int
  dtype: str
  params: int
  sampling_steps: int | None
  hbm_per_device_bytes: int | None
  peak_hbm_bytes: int
  argument_bytes: int
  output_bytes: int
  temp_bytes: int
  alias_bytes: int
  fits: bool | None
  flops_per_step: float | None
  bytes_accessed: float | None
  optimal_seconds: float | None
  mfu_bound: float | None
  compile_s: float


def tpu_devices(topology: str, num_slices: int = 1) -> list[Any]:
  """The devices of `topology` (e.g. "v5p:2x2x1") repeated over `num_slices` slices."""
  try:
    desc = topologies.get_topology_desc(
      topology_name=topology, platform="tpu", num_slices=num_slices
    )
  except Exception as e:  # unknown names, or no TPU compiler installed
    text = str(e)
    if "lockfile" in text:
      hint = "another process holds libtpu: set ALLOW_MULTIPLE_LIBTPU_LOAD=1 (sr3 aot does)"
    elif "unknown backend" in text.lower() or "plugin" in text.lower():
      hint = f"install the TPU compiler: pip install 'jax[tpu]=={jax.__version__}' (no TPU needed)"
    else:
      hint = f"use a topology name such as {', '.join(EXAMPLE_TOPOLOGIES)}"
    raise ValueError(
      f"--topology {topology} (--num-slices {num_slices}): the TPU compiler cannot describe it "
      f"({type(e).__name__}: {text[:300]}); {hint}"
    ) from e
  return list(desc.devices)


def _abstract(shape, dtype, shard) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(shape, dtype, sharding=shard)


def lower(config, what: str, devices: list[Any], steps: int | None = None):
  """The lowered train step or sampler of `config` on a mesh over `devices` (abstract inputs)."""
  mesh = sharding.make_mesh(config, devices)
  train.validate_for_mesh(config, mesh, processes=1)
  model = unet.build(config.model, devices)
  bs, size = config.train.batch_size, config.data.image_size
  batch_shard = sharding.batch_sharding(mesh)
  replicated = NamedSharding(mesh, P())
  abstract_state, _ = train.abstract_train_state(config, model, mesh)
  if what == "train":
    step = train.make_train_step(config, model, mesh)
    batch = {"hr": _abstract((bs, size, size, 3), jnp.float32, batch_shard)}
    return step.lower(abstract_state, batch), mesh
  n = steps or config.sampling.steps
  gammas = _abstract((n + 1,), jnp.float32, replicated)
  key = _abstract((), jax.random.key(0).dtype, replicated)
  params = abstract_state.ema_params
  if config.model.conditioning == "none":
    fn = inference.make_generate(config, model)
    return fn.lower(params, _abstract((bs,), jnp.int32, batch_shard), gammas, key), mesh
  lr_size = size // config.data.factor
  lr = _abstract((bs, lr_size, lr_size, 3), jnp.float32, batch_shard)
  return inference.make_super_resolve(config, model).lower(params, lr, gammas, key), mesh


def compile_for(
  config,
  topology: str,
  num_slices: int = 1,
  what: str = "train",
  steps: int | None = None,
  config_spec: str = "",
) -> AotResult:
  """Compiles `config`'s train step (or sampler) for the TPU topology; the compiler's figures."""
  if what not in WHAT:
    raise ValueError(f"--what {what!r}; choose one of {WHAT}")
  configs.validate(config)
  devices = tpu_devices(topology, num_slices)
  try:
    lowered, mesh = lower(config, what, devices, steps)
  except ValueError as e:
    raise ValueError(f"{topology} × {num_slices} slice(s), {len(devices)} chips: {e}") from e
  t = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})
  kind = devices[0].device_kind
  arg, out = int(mem.argument_size_in_bytes), int(mem.output_size_in_bytes)
  temp, alias = int(mem.temp_size_in_bytes), int(mem.alias_size_in_bytes)
  peak = arg + out + temp - alias
  hbm = hbm_bytes(kind)
  flops = float(cost["flops"]) if "flops" in cost else None
  # The cost model answers a negative sentinel where it cannot estimate an op (e.g. XLA's
  # RngBitGenerator, which the rbg dropout generators use): no estimate then, not a negative time.
  seconds = float(cost["optimal_seconds"]) if (cost.get("optimal_seconds") or 0) > 0 else None
  peak_tflops = bench.peak_tflops(kind, "bfloat16")
  mfu = flops / seconds / (peak_tflops * 1e12) if (flops and seconds and peak_tflops) else None
  bs = config.train.batch_size
  return AotResult(
    config=config_spec,
    what=what,
    topology=topology,
    num_slices=num_slices,
    devices=len(devices),
    device_kind=kind,
    mesh={k: int(v) for k, v in mesh.shape.items()},
    global_batch=bs,
    per_device_batch=bs / len(devices),
    image_size=config.data.image_size,
    dtype=config.model.dtype,
    params=unet.count_params(config.model),
    sampling_steps=(steps or config.sampling.steps) if what == "sample" else None,
    hbm_per_device_bytes=hbm,
    peak_hbm_bytes=peak,
    argument_bytes=arg,
    output_bytes=out,
    temp_bytes=temp,
    alias_bytes=alias,
    fits=None if hbm is None else peak <= hbm,
    flops_per_step=flops,
    bytes_accessed=float(cost["bytes accessed"]) if "bytes accessed" in cost else None,
    optimal_seconds=seconds,
    mfu_bound=mfu,
    compile_s=compile_s,
  )


def max_batch(
  config,
  topology: str,
  num_slices: int = 1,
  what: str = "train",
  steps: int | None = None,
  log=None,
) -> tuple[int, AotResult]:
  """The largest per-chip batch whose program fits in HBM (doubling, then bisection); its result."""
  devices = len(tpu_devices(topology, num_slices))

  def trial(per_device: int) -> AotResult:
    c = config.copy_and_resolve_references()
    c.train.batch_size = per_device * devices
    r = compile_for(c, topology, num_slices, what, steps)
    if log:
      print(f"aot: {per_device}/chip: {r.peak_hbm_bytes / GIB:.2f} GiB, fits={r.fits}", file=log)
    if r.fits is None:
      raise ValueError(f"no HBM size is known for {r.device_kind}; --max-batch cannot judge a fit")
    return r

  best = trial(1)
  if not best.fits:
    raise ValueError(
      f"{topology}: the program does not fit at 1 image per chip ({best.peak_hbm_bytes / GIB:.1f} GiB "
      f"of {best.hbm_per_device_bytes / GIB:.0f} GiB); shard the state (mesh.fsdp), turn on "
      f"model.remat, or use a larger slice"
    )
  lo, hi = 1, None
  while hi is None:  # double until it no longer fits
    r = trial(lo * 2)
    if r.fits:
      lo, best = lo * 2, r
    else:
      hi = lo * 2
  while hi - lo > 1:
    mid = (lo + hi) // 2
    r = trial(mid)
    if r.fits:
      lo, best = mid, r
    else:
      hi = mid
  return lo, best


def gib(n: int | None) -> str:
  return "—" if n is None else f"{n / GIB:.2f} GiB"


def summary(r: AotResult) -> str:
  mfu = "—" if r.mfu_bound is None else f"{100 * r.mfu_bound:.1f}%"
  return (
    f"{r.what} on {r.topology} × {r.num_slices} ({r.devices} × {r.device_kind}), global batch "
    f"{r.global_batch} ({r.per_device_batch:g}/chip): peak {gib(r.peak_hbm_bytes)} of "
    f"{gib(r.hbm_per_device_bytes)} per chip, {r.flops_per_step or float('nan'):.3g} FLOP/chip, "
    f"optimal {r.optimal_seconds or math.nan:.4g} s, MFU bound {mfu}, compiled in {r.compile_s:.1f} s"
  )
