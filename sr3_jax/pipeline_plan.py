"""`sr3 cascade --plan`: how many devices each stage of a pipelined cascade gets.

A pipeline's throughput is set by its slowest stage: micro-batch / max_k t_k(g_k), where stage k
on g_k devices takes t_k(g_k) per micro-batch. The cost model measures each stage's compiled
sampler on one device of this machine (seconds per micro-batch, after a warm-up call) and assumes
data-parallel scaling t_k(g) = t_k(1) / g; its memory per device comes from the compiled
program's memory_analysis at two per-device batches (1 and 2), fitted as a + b·(images per
device). The plan tries every split g_1 + … + g_S ≤ N with each g_k dividing the micro-batch,
drops those whose stage does not fit the device memory, and keeps the one whose slowest stage is
fastest (fewest devices on a tie). A stage that fits on no group of the N devices is an error
naming it and the smallest group that would hold it.

With a TPU topology (`--topology v5p:2x2x2`) the costs come from the TPU compiler instead, for one
chip of it, with no TPU: its `optimal_seconds` per micro-batch (times the steps: the compiler
counts a loop's body once) and the program's memory, arguments
fixed and the rest per image; the devices default to the topology's chips and the memory to its
HBM less what the TPU runtime keeps (aot.USABLE_HBM_BYTES). Nothing is measured then.
"""

from __future__ import annotations

import dataclasses
import itertools
import time

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sr3_jax import cascade


@dataclasses.dataclass
class StageCost:
  name: str
  seconds: float  # per micro-batch on one device
  bytes_fixed: float  # per device, whatever the batch (params, grids)
  bytes_per_image: float  # per device, per image it holds

  def bytes_at(self, images_per_device: float) -> float:
    return self.bytes_fixed + self.bytes_per_image * images_per_device


def _inputs(casc: cascade.Cascade, k: int, batch: int):
  """Arguments of stage k's sampler for `batch` images (random LR, or class 0)."""
  return _stage_inputs(casc.stages[k], casc.params[k], casc.grids[k], batch)


def _stage_inputs(s: cascade.Stage, params, grid, batch: int):
  key = jax.random.key(0)
  if s.is_base:
    return (params, np.zeros(batch, np.int32), grid, key), {"guidance": float(s.guidance)}
  size = s.config.data.image_size // s.factor
  lr = np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
  return (params, lr, grid, key, np.float32(s.aug_level)), {}


def _peak(fn, inputs) -> float:
  args, kwargs = inputs
  m = fn.lower(*args, **kwargs).compile().memory_analysis()
  return float(
    m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
  )


def measure(stages: list[cascade.Stage], micro_batch: int, device=None) -> list[StageCost]:
  """Each stage's time per micro-batch and memory model, on one device."""
  device = device or jax.local_devices()[0]
  casc = cascade.Cascade(stages, mesh=Mesh(np.asarray([device]), ("data",)))
  out = []
  for k, s in enumerate(stages):
    fn = casc.fns[k]
    args, kwargs = _inputs(casc, k, micro_batch)
    jax.block_until_ready(fn(*args, **kwargs))  # compile
    t = time.perf_counter()
    jax.block_until_ready(fn(*args, **kwargs))
    seconds = time.perf_counter() - t
    one, two = (_peak(fn, _inputs(casc, k, b)) for b in (1, 2))
    out.append(StageCost(s.name, seconds, one - (two - one), max(two - one, 0.0)))
  return out


def measure_tpu(
  stages: list[cascade.Stage], micro_batch: int, topology: str
) -> tuple[list[StageCost], int]:
  """Each stage's cost on one chip of a TPU `topology`, from the TPU compiler (no TPU needed):
  time per micro-batch is the compiler's `optimal_seconds`; memory is the program's arguments
  (parameters, grid) fixed and the rest per image. Also the HBM a program may use on the chip
  (aot.USABLE_HBM_BYTES: the chip's less what the TPU runtime keeps)."""
  from sr3_jax import aot

  chip = aot.tpu_devices(topology)[:1]
  one = NamedSharding(Mesh(np.asarray(chip), ("data",)), P())
  abstract = lambda x: jax.ShapeDtypeStruct(np.shape(x), jax.numpy.asarray(x).dtype, sharding=one)
  costs = []
  for k, s in enumerate(stages):
    fn, grid, _ = cascade.stage_program(stages, k, chip)
    args, kwargs = _stage_inputs(s, s.params, grid, micro_batch)
    key = jax.ShapeDtypeStruct((), args[3].dtype, sharding=one)
    args = (*jax.tree.map(abstract, args[:3]), key, *jax.tree.map(abstract, args[4:]))
    compiled = fn.lower(*args, **kwargs).compile()
    m = compiled.memory_analysis()
    # The compiler counts the sampler's loop body (one step) once: the call is len(grid) − 1 steps.
    seconds = (aot.optimal_seconds(compiled)[0] or 0) * (len(grid) - 1)
    if seconds <= 0:
      raise ValueError(
        f"stage {s.name!r}: the TPU compiler gives no time estimate for its sampler on "
        f"{topology}; plan on the devices themselves (without --topology)"
      )
    arg = float(m.argument_size_in_bytes)
    peak = arg + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    costs.append(StageCost(s.name, seconds, arg, max(peak - arg, 0.0) / micro_batch))
  return costs, aot.hbm_bytes(chip[0].device_kind, aot.USABLE_HBM_BYTES)


def _size(n: float) -> str:
  return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def plan(
  costs: list[StageCost], devices: int, micro_batch: int, device_bytes: float | None = None
) -> dict:
  """The split of `devices` over the stages whose slowest stage is fastest (see the module)."""
  names = [c.name for c in costs]
  if len(costs) > devices:
    raise ValueError(f"{len(costs)} stages but {devices} devices: a pipeline needs a group each")
  sizes = [g for g in range(1, devices + 1) if micro_batch % g == 0]
  allowed = []
  for c in costs:
    ok = [g for g in sizes if device_bytes is None or c.bytes_at(micro_batch / g) <= device_bytes]
    if not ok:
      need = next(
        (g for g in range(1, micro_batch + 1) if c.bytes_at(micro_batch / g) <= device_bytes), None
      )
      where = (
        f"the smallest group that holds it has {need} devices ({micro_batch / need:g} images "
        f"each); give it more devices or a smaller --micro-batch"
        if need
        else f"even one image per device needs {_size(c.bytes_at(1.0))}: it needs devices with "
        "more memory, or its parameters sharded (FSDP)"
      )
      raise ValueError(
        f"stage {c.name!r} does not fit: at micro-batch {micro_batch} over at most "
        f"{max(sizes)} devices it needs {_size(c.bytes_at(micro_batch / max(sizes)))} per "
        f"device, more than the {_size(device_bytes)} each has; {where}"
      )
    allowed.append(ok)
  best = None
  for split in itertools.product(*allowed):
    if sum(split) > devices:
      continue
    slowest = max(c.seconds / g for c, g in zip(costs, split))
    if best is None or (slowest, sum(split)) < (best[0], sum(best[1])):
      best = (slowest, split)
  if best is None:
    raise ValueError(
      f"no split of {devices} devices gives every stage ({', '.join(names)}) a group that "
      f"divides micro-batch {micro_batch}; use a micro-batch with more divisors"
    )
  slowest, split = best
  return {
    "devices": devices,
    "micro_batch": micro_batch,
    "groups": dict(zip(names, split)),
    "stage_seconds": {c.name: c.seconds / g for c, g in zip(costs, split)},
    "stage_bytes_per_device": {c.name: c.bytes_at(micro_batch / g) for c, g in zip(costs, split)},
    "one_device_seconds": {c.name: c.seconds for c in costs},
    "predicted_images_per_s": micro_batch / slowest,
  }


def device_memory() -> float | None:
  """What one local device may hold, when the backend says (TPU and GPU do; the CPU does not)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  return float(stats["bytes_limit"]) if "bytes_limit" in stats else None


def markdown(p: dict) -> str:
  rows = [
    f"Plan for {p['devices']} devices, micro-batch {p['micro_batch']}:",
    "",
    "| stage | devices | s / micro-batch (1 device) | predicted s / micro-batch | GiB / device |",
    "|---|---|---|---|---|",
  ]
  for name, g in p["groups"].items():
    rows.append(
      f"| {name} | {g} | {p['one_device_seconds'][name]:.3f} | {p['stage_seconds'][name]:.3f} | "
      f"{p['stage_bytes_per_device'][name] / 2**30:.3f} |"
    )
  rows.append("")
  source = p.get("costs_from", "measured on this machine's first device")
  rows.append(f"predicted: {p['predicted_images_per_s']:.3g} images/s (stage costs {source})")
  if "measured_images_per_s" in p:
    rows.append(
      f"measured: {p['measured_images_per_s']:.3g} images/s over {p['measured_images']} images "
      f"(sequential on all devices: {p['sequential_images_per_s']:.3g} images/s)"
    )
  return "\n".join(rows) + "\n"


def run(
  stages: list[cascade.Stage],
  devices: int,
  micro_batch: int,
  device_gib: float | None = None,
  measure_images: int = 0,
  log=None,
  topology: str | None = None,
) -> dict:
  """Measures the stages (or, with `topology`, has the TPU compiler estimate them for its
  chips), plans the split and, with `measure_images` and enough local devices, runs the pipeline
  with it: predicted and measured throughput."""
  if topology:
    if measure_images:
      raise ValueError(f"--measure runs the pipeline here; it cannot with --topology {topology}")
    costs, hbm = measure_tpu(stages, micro_batch, topology)
    limit = device_gib * 2**30 if device_gib else hbm
    p = plan(costs, devices, micro_batch, limit)
    p["costs_from"] = f"by the TPU compiler for one {topology} chip, no TPU run"
    return p
  limit = device_gib * 2**30 if device_gib else device_memory()
  p = plan(measure(stages, micro_batch), devices, micro_batch, limit)
  if measure_images:
    if devices > len(jax.local_devices()):
      raise ValueError(
        f"--devices {devices}: only {len(jax.local_devices())} local devices to measure on; "
        "plan without measuring, or on the machine that has them"
      )
    n = -(-measure_images // micro_batch) * micro_batch
    base = stages[0].is_base
    lr = None
    if not base:
      size = stages[0].config.data.image_size // stages[0].factor
      lr = np.random.default_rng(0).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)
    _, timing = cascade.run_pipeline(
      stages, jax.random.key(0), n, None, lr, list(p["groups"].values()), micro_batch,
      compare_sequential=True, log=log,
    )  # fmt: skip
    p.update(
      measured_images=n,
      measured_images_per_s=timing["images_per_s"],
      sequential_images_per_s=timing["sequential_images_per_s"],
    )
  return p
