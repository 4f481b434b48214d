"""`sr3 aot`: a config's train step or sampler compiled ahead of time for a TPU topology, on any host.

With the TPU compiler installed (`jax[tpu]` at the installed jax's version; no TPU needed),
`jax.experimental.topologies.get_topology_desc` describes the chips of a slice (or of several
slices) and `jit(...).lower(abstract inputs).compile()` runs the TPU compiler for them. The real
train step (`train.make_train_step`) or sampler (`inference.make_super_resolve` /
`make_generate`) is built on the mesh the config gets on those chips, from abstract state and
batches (nothing is allocated), and the compiler reports per chip:

- memory: argument + output + temporary − aliased bytes (`peak_hbm_bytes`) against the chip's HBM;
- cost: `flops` and `optimal_seconds`, the compiler's own estimate of the step's time, from which
  `mfu_bound` = flops / optimal_seconds / the chip's dense bf16 peak (an upper bound on MFU). For
  the sampler they are for the whole call: the compiler counts its loop's body (one step) once,
  so `sr3 aot` multiplies by the steps. The cost model counts −1 s for each op it cannot price;
  those that do no work (FREE_UNPRICED_OPS: v4, v5e and v6e join sliced prefetches with them)
  are taken back, and a program with any other has no time estimate. Over several slices the
  cost model prices the chips' work but not the DCN wire: `dcn_bytes_per_step` is what each chip
  sends over DCN, to set against the slices' DCN bandwidth, and `dcn_step_seconds_model` the step
  with that wire in it, modelled from the program's schedule (`hlo_schedule`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import topologies
from jax.sharding import NamedSharding, PartitionSpec as P

from sr3_jax import bench, configs, inference, sharding, train
from sr3_jax.hlo_schedule import branches, dcn_bytes, dcn_schedule, dcn_step_model
from sr3_jax.models import joint as joint_model

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
# What the TPU compiler lets a program hold per chip: the "available HBM" of its out-of-memory
# message (libtpu 0.0.42.1), the chip's HBM less what the runtime keeps. `fits` is judged by it.
USABLE_HBM_BYTES = {
  "TPU v4": int(30.75 * GIB),
  "TPU v5 lite": int(15.75 * GIB),
  "TPU v5e": int(15.75 * GIB),
  "TPU v5p": int(95.74 * GIB),
  "TPU v5": int(95.74 * GIB),
  "TPU v6 lite": int(31.25 * GIB),
  "TPU v6e": int(31.25 * GIB),
}
# Ops the TPU cost model cannot price: it counts −1 s for each into the program's
# `optimal_seconds`. ConcatBitcast joins the slices of a sliced prefetch (memory-space assignment
# copies a buffer into on-chip memory in slices, then views them as one buffer) and does no work
# of its own, so its −1 s is taken back. A multi-slice program adds two more that do next to none:
# ZeroCrop zeroes, in place, the padding of a gradient before its share goes over DCN (its output
# aliases its operand), and SliceId reads the chip's slice number (one scalar). Other unpriced
# ops (RngBitGenerator, for the rbg dropout generators) do work: their program keeps no estimate.
FREE_UNPRICED_OPS = ("ConcatBitcast", "ZeroCrop", "SliceId")
# HBM bandwidth per chip, bytes/s (Cloud TPU system architecture pages): the roofline's memory
# side in the DCN step model (`hlo_schedule`).
HBM_BYTES_PER_S = {
  "TPU v4": 1.2e12,
  "TPU v5 lite": 0.819e12,
  "TPU v5e": 0.819e12,
  "TPU v5p": 2.765e12,
  "TPU v5": 2.765e12,
  "TPU v6 lite": 1.64e12,
  "TPU v6e": 1.64e12,
}
# DCN bandwidth per chip that the step model assumes unless told (`sr3 aot --dcn-gbps`): an
# assumption (the figure BENCHMARKS.md prices v5p's DCN at), not a measurement; a pod's own
# network sets the real one.
DCN_GBPS_PER_CHIP = 50.0
WHAT = ("train", "sample")
EXAMPLE_TOPOLOGIES = ("v4:2x2x1", "v5e:2x2", "v5p:2x2x1", "v6e:2x2")


def hbm_bytes(device_kind: str, table: dict = HBM_BYTES) -> int | None:
  """The chip's HBM (or, with table=USABLE_HBM_BYTES, what the compiler lets a program use; with
  HBM_BYTES_PER_S, its bandwidth)."""
  for key in sorted(table, key=len, reverse=True):  # most specific name first
    if key.lower() in device_kind.lower():
      return table[key]
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
  usable_hbm_bytes: int | None = None  # the compiler's limit per chip, which `fits` is judged by
  # The cost model's own optimal_seconds (× the steps for a sampler) before FREE_UNPRICED_OPS'
  # −1 s each were taken back, and how many were.
  cost_model_seconds: float | None = None
  free_unpriced_ops: int = 0
  # XLA options the program was compiled with (`sr3 aot --compiler-option`), such as
  # xla_tpu_sliced_prefetch_max_slices=0 for a time the cost model can price; {} for the default.
  compiler_options: dict[str, str] = dataclasses.field(default_factory=dict)
  # Bytes each chip sends over DCN per step (the multi-slice collectives' `send`s; 0 on one
  # slice). The cost model does not price the DCN wire: `optimal_seconds` is the chips' own work,
  # and a step whose DCN transfers do not overlap it takes this / the chip's DCN bandwidth more.
  dcn_bytes_per_step: int = 0
  # Where those sends sit in the compiled schedule (`dcn_schedule`): the bytes sent while the chip
  # still has matmul or convolution work ahead of it, which the transfers can overlap, and how
  # many of the program's matmul/convolution fusions come after its first DCN send.
  dcn_bytes_before_last_matmul: int = 0
  matmul_fusions: int = 0
  matmul_fusions_after_dcn_send: int = 0
  # The step with its DCN wire, modelled (`hlo_schedule.dcn_step_model`): each op's roofline time,
  # scaled to `optimal_seconds`, and the sends on one wire of `dcn_gbps_per_chip`. None on one
  # slice or where the compiler has no time. A model, not a measurement.
  dcn_gbps_per_chip: float | None = None
  dcn_step_seconds_model: float | None = None


class DoesNotFit(ValueError):
  """The TPU compiler ran out of HBM for the program; what it said it needed, when it said so."""

  def __init__(self, message: str, required: int | None = None, compile_s: float = 0.0):
    super().__init__(message)
    self.required_bytes = required
    self.compile_s = compile_s


_UNITS = {"K": 1024, "M": 1024**2, "G": GIB, "T": 1024 * GIB}


def required_bytes(message: str) -> int | None:
  """The bytes an out-of-memory message says the program needs: "required … (38.79G)"."""
  m = re.search(r"required[^(]*\(([\d.]+)([KMGT])\)", message)
  return int(float(m.group(1)) * _UNITS[m.group(2)]) if m else None


def _first_line(e: Exception) -> str:
  text = str(e).strip().splitlines()
  return text[0][:300] if text else type(e).__name__


def cost_of(compiled) -> dict:
  """The compiled program's cost analysis as one dict (older jax gives a list of one)."""
  cost = compiled.cost_analysis()
  return (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})


def _free_unpriced(hlo: str) -> tuple[int, int]:
  """FREE_UNPRICED_OPS in the compiled program's text: all of them, and those inside the branches
  of a conditional (the train step's non-finite skip is one)."""
  per: dict[str, int] = {}
  in_branches: set[str] = set()
  name = ""
  for line in hlo.splitlines():
    head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line.rstrip())
    if head:
      name = head.group(1)
    if any(f'custom_call_target="{op}"' in line for op in FREE_UNPRICED_OPS):
      per[name] = per.get(name, 0) + 1
    in_branches.update(branches(line))
  return sum(per.values()), sum(n for c, n in per.items() if c in in_branches)


def optimal_seconds(compiled) -> tuple[float | None, float | None, int]:
  """The compiler's time for one run of `compiled` (None where it has no estimate), its raw
  `optimal_seconds`, and how many free unpriced ops (FREE_UNPRICED_OPS) were taken back.

  A conditional is priced by one of its branches, each branch's time with its own −1 s in it:
  with such ops inside the branches that choice is made on wrong times (for the paper train step
  on v5e it kept the non-finite skip, with 7 of them, over the update, with 293), so that
  program has no estimate."""
  cost = cost_of(compiled)
  if "optimal_seconds" not in cost:
    return None, None, 0
  raw = float(cost["optimal_seconds"])
  if raw > 0:
    return raw, raw, 0
  text = compiled.as_text()
  free, in_branches = _free_unpriced(text)
  seconds = raw + free
  # RngBitGenerator does work and is not priced: its −1 s cannot be told from the step's time.
  known = seconds > 0 and not in_branches and " rng-bit-generator(" not in text
  return (seconds if known else None), raw, free


def tpu_devices(topology: str, num_slices: int = 1) -> list[Any]:
  """The devices of `topology` (e.g. "v5p:2x2x1") repeated over `num_slices` slices; one per chip."""
  # A v4 chip has two TensorCores that its runtime drives as one device (megacore); without
  # this the compiler would describe each core as a device with half the chip's HBM.
  extra = {"chip_config_name": "megacore"} if topology.lower().startswith("v4") else {}
  try:
    desc = topologies.get_topology_desc(
      topology_name=topology, platform="tpu", num_slices=num_slices, **extra
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
  model = joint_model.build(config, devices)  # a joint config: every member's U-Net
  if what != "train" and joint_model.is_joint(config):
    raise ValueError(
      "a joint fine-tuning config has no single sampler: compile a stage's sampler from its own "
      "config (CASCADE.py:stage=NAME)"
    )
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


def compiler_options(pairs) -> dict[str, str]:
  """`--compiler-option KEY=VALUE` pairs as XLA's compile options; XLA parses each value itself."""
  out = {}
  for pair in pairs:
    key, eq, value = pair.partition("=")
    if not eq or not key.strip():
      raise ValueError(
        f"--compiler-option {pair!r}: write KEY=VALUE, e.g. xla_tpu_sliced_prefetch_max_slices=0"
      )
    out[key.strip()] = value.strip()
  return out


def compile_for(
  config,
  topology: str,
  num_slices: int = 1,
  what: str = "train",
  steps: int | None = None,
  config_spec: str = "",
  compiler_options: dict[str, str] | None = None,
  hlo_path: str | None = None,
  dcn_gbps: float = DCN_GBPS_PER_CHIP,
) -> AotResult:
  """Compiles `config`'s train step (or sampler) for the TPU topology; the compiler's figures.
  `compiler_options`: XLA options for this compile (none by default). `hlo_path`: where to write
  the compiled program's HLO text (optimised and scheduled: its ENTRY lists the ops in the order
  the chip runs them, each fusion with the compiler's `estimated_cycles`). `dcn_gbps`: the DCN
  bandwidth per chip that a multi-slice program's modelled step assumes."""
  if not dcn_gbps > 0:
    raise ValueError(f"--dcn-gbps {dcn_gbps}: give the DCN bandwidth per chip in Gbit/s, above 0")
  if what not in WHAT:
    raise ValueError(f"--what {what!r}; choose one of {WHAT}")
  options = dict(compiler_options or {})
  configs.validate(config)
  devices = tpu_devices(topology, num_slices)
  try:
    lowered, mesh = lower(config, what, devices, steps)
  except ValueError as e:
    raise ValueError(f"{topology} × {num_slices} slice(s), {len(devices)} chips: {e}") from e
  t = time.perf_counter()
  try:
    compiled = lowered.compile(compiler_options=options or None)
  except Exception as e:  # the TPU compiler refuses a program that cannot fit in HBM
    if options and "INVALID_ARGUMENT" in str(e) and any(k in str(e) for k in options):
      raise ValueError(
        f"--compiler-option: the TPU compiler rejects it ({_first_line(e)}); name an option "
        f"this libtpu knows, with a value of its type"
      ) from None
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    bs = config.train.batch_size
    raise DoesNotFit(
      f"{topology} × {num_slices} slice(s), {len(devices)} chips, global batch {bs} "
      f"({bs / len(devices):g}/chip): does not fit in HBM ({_first_line(e)}); use a smaller "
      f"--batch, shard the state over mesh.fsdp, turn on model.remat, or use a larger slice",
      required_bytes(str(e)),
      time.perf_counter() - t,
    ) from None
  compile_s = time.perf_counter() - t
  text = compiled.as_text()
  if hlo_path:
    with open(hlo_path, "w") as f:
      f.write(text)  # before the figures: a program they fail on is still kept
  mem = compiled.memory_analysis()
  cost = cost_of(compiled)
  kind = devices[0].device_kind
  arg, out = int(mem.argument_size_in_bytes), int(mem.output_size_in_bytes)
  temp, alias = int(mem.temp_size_in_bytes), int(mem.alias_size_in_bytes)
  peak = arg + out + temp - alias
  hbm = hbm_bytes(kind)
  usable = hbm_bytes(kind, USABLE_HBM_BYTES) or hbm
  flops = float(cost["flops"]) if "flops" in cost else None
  # The cost model counts −1 s for each op it cannot price: free ones are taken back, and a
  # program with others (XLA's RngBitGenerator, for the rbg dropout generators) has no estimate.
  seconds, raw_seconds, free_unpriced = optimal_seconds(compiled)
  accessed = float(cost["bytes accessed"]) if "bytes accessed" in cost else None
  dcn = dcn_bytes(text) if num_slices > 1 else 0
  before, matmuls, after = dcn_schedule(text) if num_slices > 1 else (0, 0, 0)
  peak_tflops = bench.peak_tflops(kind, "bfloat16")
  mfu = flops / seconds / (peak_tflops * 1e12) if (flops and seconds and peak_tflops) else None
  bandwidth = hbm_bytes(kind, HBM_BYTES_PER_S)
  model = (
    dcn_step_model(text, seconds, dcn_gbps, peak_tflops * 1e12, bandwidth)
    if dcn and seconds and peak_tflops and bandwidth and what == "train"
    else None
  )
  n = (steps or config.sampling.steps) if what == "sample" else None
  if n:
    # The cost analysis counts a loop's body once, whatever its trip count (a 2-step and an
    # 8-step sampler get the same figures), so the sampler's scan over its steps is one step
    # here; the whole call is n of them (the few ops outside the loop are counted n times too).
    flops, seconds, accessed = (None if v is None else v * n for v in (flops, seconds, accessed))
    raw_seconds = None if raw_seconds is None else raw_seconds * n
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
    params=joint_model.count_params(config),
    sampling_steps=n,
    hbm_per_device_bytes=hbm,
    peak_hbm_bytes=peak,
    argument_bytes=arg,
    output_bytes=out,
    temp_bytes=temp,
    alias_bytes=alias,
    fits=None if usable is None else peak <= usable,
    usable_hbm_bytes=usable,
    flops_per_step=flops,
    bytes_accessed=accessed,
    optimal_seconds=seconds,
    mfu_bound=mfu,
    compile_s=compile_s,
    cost_model_seconds=raw_seconds,
    free_unpriced_ops=free_unpriced,
    compiler_options=options,
    dcn_bytes_per_step=dcn,
    dcn_bytes_before_last_matmul=before,
    matmul_fusions=matmuls,
    matmul_fusions_after_dcn_send=after,
    dcn_gbps_per_chip=dcn_gbps if model else None,
    dcn_step_seconds_model=model.step_seconds if model else None,
  )


@dataclasses.dataclass
class Trial:
  per_device: int
  fits: bool
  peak_hbm_bytes: int | None  # the compiled program's, or what the compiler said it needed
  compile_s: float
  known: bool = False  # taken from an earlier compile (`known=`), not compiled here


# What must match for an earlier `sr3 aot --json` line to stand for a compile of this program.
_SAME_PROGRAM = (
  "config",
  "what",
  "topology",
  "num_slices",
  "dtype",
  "sampling_steps",
  "set",
  "compiler_options",
)
# What a line written before a field was recorded counts as.
_UNRECORDED = {"set": [], "compiler_options": {}}


def load_known(path, **program) -> list[AotResult]:
  """The results in `path` (JSON lines of earlier `sr3 aot --json` runs, such as
  benchmarks/tpu_table.py's --out) of the program `program` names (every field of
  _SAME_PROGRAM; `set` is the list of --set overrides and `compiler_options` the dict of
  --compiler-option ones, [] and {} in lines written before they were recorded). Lines of other
  programs, errors and unreadable lines are skipped."""
  import json
  import pathlib

  missing = sorted(set(_SAME_PROGRAM) - set(program))
  if missing:
    raise TypeError(f"load_known needs {missing}")
  p = pathlib.Path(path)
  if not p.is_file():
    raise FileNotFoundError(f"--known {path}: no such file (JSON lines from `sr3 aot --json`)")
  names = {f.name for f in dataclasses.fields(AotResult)}
  required = {
    f.name
    for f in dataclasses.fields(AotResult)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
  }
  out = []
  for line in p.read_text().splitlines():
    try:
      r = json.loads(line)
    except json.JSONDecodeError:
      continue
    if not isinstance(r, dict) or "error" in r or not required <= set(r):
      continue
    if all(r.get(k, _UNRECORDED.get(k)) == program[k] for k in _SAME_PROGRAM):
      result = AotResult(**{k: r[k] for k in names & set(r)})
      if result.usable_hbm_bytes is None:  # written when `fits` was judged by the datasheet
        result.usable_hbm_bytes = hbm_bytes(result.device_kind, USABLE_HBM_BYTES)
        if result.usable_hbm_bytes is not None:
          result.fits = result.peak_hbm_bytes <= result.usable_hbm_bytes
      out.append(result)
  return out


def max_batch(
  config,
  topology: str,
  num_slices: int = 1,
  what: str = "train",
  steps: int | None = None,
  multiple: int = 1,
  log=None,
  known: list[AotResult] = (),
  compiler_options: dict[str, str] | None = None,
  dcn_gbps: float = DCN_GBPS_PER_CHIP,
) -> tuple[int, AotResult, list[Trial]]:
  """The largest per-chip batch (a multiple of `multiple`) whose program fits in HBM.

  A program that does not fit costs little (the compiler stops at memory assignment) and one that
  fits costs a whole compile, so the search starts from the config's own per-chip batch, aims
  above it at the batch an affine fit of memory predicts, doubles while programs fit, and then
  bisects between the largest fit and the smallest failure, to a step of `multiple`. `known`:
  earlier compiles of this same program (load_known); a batch among them is not compiled again.
  """
  devices = len(tpu_devices(topology, num_slices))
  if multiple < 1:
    raise ValueError(f"--batch-multiple {multiple}: use a positive integer")
  trials: list[Trial] = []
  results: dict[int, AotResult] = {}
  earlier = {
    int(r.per_device_batch): r
    for r in known
    if r.devices == devices and r.fits is not None and float(r.per_device_batch).is_integer()
  }

  def trial(per_device: int) -> bool:
    if per_device in earlier:
      r = earlier[per_device]
      results[per_device] = r
      trials.append(Trial(per_device, r.fits, r.peak_hbm_bytes, r.compile_s, known=True))
      if log:
        print(f"aot: {per_device}/chip: {gib(r.peak_hbm_bytes)}, fits={r.fits}, known", file=log)
      return r.fits
    c = config.copy_and_resolve_references()
    c.train.batch_size = per_device * devices
    try:
      r = compile_for(
        c, topology, num_slices, what, steps, compiler_options=compiler_options, dcn_gbps=dcn_gbps
      )
    except DoesNotFit as e:
      trials.append(Trial(per_device, False, e.required_bytes, e.compile_s))
    else:
      if r.fits is None:
        raise ValueError(
          f"no HBM size is known for {r.device_kind}; --max-batch cannot judge a fit"
        )
      results[per_device] = r
      trials.append(Trial(per_device, r.fits, r.peak_hbm_bytes, r.compile_s))
    t = trials[-1]
    if log:
      print(
        f"aot: {per_device}/chip: {gib(t.peak_hbm_bytes)}, fits={t.fits}, {t.compile_s:.0f} s",
        file=log,
      )
    return t.fits

  up = lambda n: max(multiple, -(-n // multiple) * multiple)  # round up to the multiple
  start = up(max(1, config.train.batch_size // devices))
  lo, hi = 0, None  # the largest fit and the smallest failure, per chip
  if trial(start):
    lo = start
  else:
    hi = start
    while hi > multiple:
      b = up(hi // 2) if up(hi // 2) < hi else hi - multiple
      if trial(b):
        lo = b
        break
      hi = b
    if lo == 0:
      t = trials[-1]
      raise DoesNotFit(
        f"{topology} × {num_slices} slice(s): the program does not fit at {multiple} image(s) "
        f"per chip ({gib(t.peak_hbm_bytes)} needed); shard the state over mesh.fsdp, turn on "
        f"model.remat, or use a larger slice",
        t.peak_hbm_bytes,
      )
  if hi is None:  # aim where memory's affine fit through the fit says the HBM runs out
    r = results[lo]
    slope = max(r.peak_hbm_bytes - r.argument_bytes, 1) / lo
    guess = ((r.usable_hbm_bytes or r.hbm_per_device_bytes) - r.argument_bytes) // slope
    b = max(up(int(guess)), 2 * lo) if guess > lo else 2 * lo
    while hi is None:
      if trial(b):
        lo, b = b, 2 * b
      else:
        hi = b
  while hi - lo > multiple:
    b = lo + max(multiple, ((hi - lo) // 2) // multiple * multiple)
    if trial(b):
      lo = b
    else:
      hi = b
  return lo, results[lo], trials


def gib(n: int | None) -> str:
  return "—" if n is None else f"{n / GIB:.2f} GiB"


def summary(r: AotResult) -> str:
  mfu = "—" if r.mfu_bound is None else f"{100 * r.mfu_bound:.1f}%"
  return (
    f"{r.what} on {r.topology} × {r.num_slices} ({r.devices} × {r.device_kind}), global batch "
    f"{r.global_batch} ({r.per_device_batch:g}/chip): peak {gib(r.peak_hbm_bytes)} of "
    f"{gib(r.hbm_per_device_bytes)} per chip, {r.flops_per_step or float('nan'):.3g} FLOP/chip, "
    f"optimal {r.optimal_seconds or math.nan:.4g} s, MFU bound {mfu}, compiled in {r.compile_s:.1f} s"
    + (
      f", {r.dcn_bytes_per_step / 1e6:.1f} MB/chip over DCN "
      f"({r.dcn_bytes_before_last_matmul / max(r.dcn_bytes_per_step, 1):.0%} of it sent before the "
      f"last matmul; {r.matmul_fusions_after_dcn_send} of {r.matmul_fusions} matmul fusions after "
      f"the first send)"
      + (
        f"; modelled step with the wire at {r.dcn_gbps_per_chip:g} Gbit/s per chip "
        f"{r.dcn_step_seconds_model:.4g} s"
        if r.dcn_step_seconds_model
        else ""
      )
      if r.num_slices > 1
      else ""
    )
  )
