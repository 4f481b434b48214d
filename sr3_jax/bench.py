"""`sr3 bench`: compile time, step time, throughput, FLOPs and MFU of the train step and samplers.

Times are medians over `iters` timed calls after one warm-up call, each ended by
`block_until_ready`. FLOPs come from XLA's cost analysis of the lowered (not yet optimised)
program: after compilation GPU convolutions become library calls that the analysis no longer counts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sr3_jax import configs, inference, sharding, train
from sr3_jax.cpu import malloc as host_malloc
from sr3_jax.data import loader
from sr3_jax.models import unet

# Dense peak TFLOP/s per chip, by compute dtype (GPU float32 runs matmuls as TF32 by default).
PEAK_TFLOPS = {
  "TPU v4": {"bfloat16": 275.0},
  "TPU v5 lite": {"bfloat16": 197.0},  # v5e
  "TPU v5e": {"bfloat16": 197.0},
  "TPU v5p": {"bfloat16": 459.0},
  "TPU v5": {"bfloat16": 459.0},
  "TPU v6 lite": {"bfloat16": 918.0},  # v6e (Trillium)
  "TPU v6e": {"bfloat16": 918.0},
  "H100": {"bfloat16": 989.0, "float16": 989.0, "float32": 494.0},
  "H200": {"bfloat16": 989.0, "float16": 989.0, "float32": 494.0},
}
WHAT = ("train", "sample", "forward", "data", "fid", "latency")
# Allocators a process may have preloaded in place of glibc's malloc, by the library's file name.
ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


def host_allocator(maps: str | None = None, environ=None) -> str | None:
  """The malloc this process runs on: 'glibc' (with host_malloc's settings and GLIBC_TUNABLES), or a
  preloaded jemalloc/tcmalloc/mimalloc (with its MALLOC_CONF / MIMALLOC_* settings); None where
  /proc/self/maps cannot be read (not Linux).

  XLA's CPU runtime allocates each execution's temporaries afresh: with glibc's default settings
  those blocks are mmap'ed and every page faults in again on every step. `sr3` tells glibc to keep
  them (host_malloc); jemalloc with dirty pages kept (MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1)
  reuses them too. docs/cpu_performance.md has the effect.
  """
  environ = os.environ if environ is None else environ
  if maps is None:
    try:
      with open("/proc/self/maps") as f:
        maps = f.read()
    except OSError:
      return None
  for name in ALLOCATORS:
    if f"lib{name}" in maps:
      prefix = "MALLOC_CONF" if name == "jemalloc" else name.upper() + "_"
      settings = [f"{k}={v}" for k, v in sorted(environ.items()) if k.startswith(prefix)]
      return " ".join([name] + settings)
  name = f"glibc ({host_malloc.KEPT})" if host_malloc.applied() else "glibc"
  tunables = environ.get("GLIBC_TUNABLES")
  return f"{name} GLIBC_TUNABLES={tunables}" if tunables else name


def peak_tflops(device_kind: str, dtype: str) -> float | None:
  """The dense peak for a device kind string such as 'NVIDIA H100 80GB HBM3' or 'TPU v5p'."""
  for key in sorted(PEAK_TFLOPS, key=len, reverse=True):  # most specific name first
    if key.lower() in device_kind.lower():
      return PEAK_TFLOPS[key].get(dtype)
  return None


def _flops(lowered) -> float | None:
  """XLA's FLOP count of the lowered (unoptimized) program.

  GPU and TPU backends reached through the PJRT plugin API do not implement the lowered
  program's cost analysis; there the same HLO module is analysed by the CPU client, which counts
  the same operations (the analysis is of the program, not of a device's kernels).
  """
  try:
    cost = lowered.cost_analysis()
  except NotImplementedError:
    cost = None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    cost = _cpu_cost_analysis(lowered)
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


def _cpu_cost_analysis(lowered) -> dict | None:
  try:
    from jax._src.lib import _jax  # the analysis has no public entry point that takes a client

    module = lowered.compiler_ir("hlo").as_hlo_module()
    return _jax.hlo_module_cost_analysis(jax.local_devices(backend="cpu")[0].client, module)
  except Exception as e:  # a FLOP count is a report, never a reason to lose the timing
    print(f"bench: no FLOP count ({type(e).__name__}: {e})", file=sys.stderr)
    return None


def _peak_memory() -> int | None:
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # some backends do not implement it
    return None
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def _time(fn: Callable[[], Any], iters: int) -> list[float]:
  jax.block_until_ready(fn())  # warm-up
  times = []
  for _ in range(iters):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return times


@dataclasses.dataclass
class BenchResult:
  what: str
  config: str
  device_kind: str
  device_count: int
  dtype: str
  params: int
  batch: int
  image_size: int
  compile_s: float | None
  step_s: float
  step_s_min: float
  step_s_max: float
  iters: int
  examples_per_s: float
  flops_per_step: float | None
  tflops_per_s: float | None
  mfu: float | None
  peak_memory_bytes: int | None
  sampling_steps: int | None = None
  sampler: str | None = None
  host_allocator: str | None = None


def _direct_convolutions(config, model: unet.UNet):
  """`config` with XLA's own convolutions, when `model` uses the CPU's (im2col, Winograd, subpixel).

  FLOP counts (and MFU) refer to the direct convolution's arithmetic: XLA's cost analysis counts
  the im2col weight gradient's loop body once, and Winograd and the subpixel upsampling
  convolution do fewer multiplies by design.
  """
  if model.config.conv_impl != "cpu":
    return config
  direct = config.copy_and_resolve_references()
  direct.model.conv_impl = "xla"
  return direct


def run_fid(batch: int = 64, iters: int = 5, log=sys.stderr) -> BenchResult:
  """Images/s of FID's Inception features (sr3_jax/metrics/fid.py) on 299×299 inputs, batched
  over the local devices; the weights must be on this machine (fid-inception)."""
  from sr3_jax.metrics import fid

  model = fid.Inception(batch=batch)
  x = jax.device_put(
    np.random.default_rng(0)
    .uniform(0, 255, (model.batch, fid.SIZE, fid.SIZE, 3))
    .astype(np.float32),
    model.runner.sharding,
  )
  t = time.perf_counter()
  lowered = model.runner.fn.lower(model.runner.params, x)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t
  cost = compiled.cost_analysis()
  cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})
  times = _time(lambda: compiled(model.runner.params, x), iters)
  step = float(np.median(times))
  devices = jax.local_devices()
  flops = float(cost["flops"]) if "flops" in cost else None
  kind = devices[0].device_kind
  peak = peak_tflops(kind, "float32")
  print(f"bench fid: {model.batch} images per batch on {len(devices)} × {kind}", file=log)
  return BenchResult(
    what="fid", config="fid-inception", device_kind=kind, device_count=len(devices),
    dtype="float32", params=sum(int(np.size(a)) for a in model.runner.params), batch=model.batch,
    image_size=fid.SIZE, compile_s=compile_s, step_s=step, step_s_min=float(min(times)),
    step_s_max=float(max(times)), iters=iters, examples_per_s=model.batch / step,
    flops_per_step=flops, tflops_per_s=flops / step / 1e12 if flops else None,
    mfu=flops / step / (peak * 1e12) if flops and peak else None, peak_memory_bytes=None,
  )  # fmt: skip


def run_latency(
  config_spec: str,
  steps_list: tuple[int, ...] = (1, 2, 4, 8),
  batches: tuple[int, ...] = (1, 2, 4, 8),
  iters: int = 3,
  dtype: str | None = None,
  sampler: str | None = None,
  overrides: dict | None = None,
  log=sys.stderr,
) -> dict:
  """Milliseconds per frame of the whole sampler (bicubic, N network calls, residual and
  clipping) on one HR tile of the config's size: first every batch in `batches` at the fewest
  steps, to find the batch with the most frames per second; then batch 1 and that batch at every
  step count. Random weights: latency does not depend on them. Median of `iters` calls."""
  config = configs.load(config_spec, overrides)
  if dtype:
    config.model.dtype = dtype
  if sampler:
    config.sampling.sampler = sampler
  configs.validate(config)
  mesh = sharding.make_mesh(config)
  model = unet.build(config.model, mesh.devices.flat)
  devices = jax.devices()
  factor, size = config.data.factor, config.data.image_size
  ndev = len(devices)
  batches = sorted({-(-b // ndev) * ndev for b in batches})  # whole batches per device
  params = jax.jit(lambda k: unet.init_params(model, k))(jax.random.key(0))
  fn = inference.make_super_resolve(config, model)
  bsharding = sharding.batch_sharding(mesh)
  print(
    f"bench latency: {config_spec} {size // factor}→{size} on {ndev} × {devices[0].device_kind}, "
    f"{config.model.dtype}, sampler {config.sampling.sampler}",
    file=log,
  )

  def measure(batch: int, steps: int) -> dict:
    lr = jax.device_put(
      np.random.default_rng(0)
      .uniform(-1, 1, (batch, size // factor, size // factor, 3))
      .astype(np.float32),
      bsharding,
    )
    levels = inference.inference_grid(config, steps)
    t = time.perf_counter()
    compiled = fn.lower(params, lr, levels, jax.random.key(0)).compile()
    compile_s = time.perf_counter() - t
    med = statistics.median(_time(lambda: compiled(params, lr, levels, jax.random.key(0)), iters))
    row = dict(batch=batch, steps=steps, ms_per_call=1e3 * med, ms_per_frame=1e3 * med / batch)
    row.update(frames_per_s=batch / med, compile_s=compile_s)
    print(f"  batch {batch:3d}, {steps} steps: {row['ms_per_frame']:9.1f} ms per frame", file=log)
    return row

  search = [measure(b, min(steps_list)) for b in batches]
  best = max(search, key=lambda r: r["frames_per_s"])["batch"]
  rows = {(r["batch"], r["steps"]): r for r in search}
  for b in sorted({batches[0], best}):
    for n in steps_list:
      if (b, n) not in rows:
        rows[(b, n)] = measure(b, n)
  return {
    "what": "latency",
    "config": config_spec,
    "device_kind": devices[0].device_kind,
    "device_count": ndev,
    "dtype": config.model.dtype,
    "sampler": config.sampling.sampler,
    "params": unet.count_params(config.model),
    "lr_size": size // factor,
    "hr_size": size,
    "best_batch": best,
    "iters": iters,
    "rows": sorted(rows.values(), key=lambda r: (r["batch"], r["steps"])),
  }


def report_latency(result: dict, as_json: bool, out=None) -> None:
  out = out or sys.stdout
  if as_json:
    print(json.dumps(result), file=out)
    return
  print(
    f"{result['config']}: {result['lr_size']}→{result['hr_size']}, {result['params'] / 1e6:.1f}M "
    f"params, {result['dtype']}, {result['sampler']}, {result['device_count']} × "
    f"{result['device_kind']}; best batch {result['best_batch']}",
    file=out,
  )
  print("| batch | steps | ms per frame | frames/s |\n|---|---|---|---|", file=out)
  for r in result["rows"]:
    print(
      f"| {r['batch']} | {r['steps']} | {r['ms_per_frame']:.1f} | {r['frames_per_s']:.2f} |",
      file=out,
    )


def run(
  config_spec: str,
  what: str = "train",
  batch: int | None = None,
  iters: int = 5,
  dtype: str | None = None,
  steps: int | None = None,
  sampler: str | None = None,
  overrides: dict | None = None,
  log=sys.stderr,
) -> BenchResult:
  if what not in WHAT:
    raise ValueError(f"--what {what!r}; choose one of {WHAT}")
  if what == "fid":
    return run_fid(batch or 64, iters, log)
  config = configs.load(config_spec, overrides)
  if dtype:
    config.model.dtype = dtype
  if batch:
    config.train.batch_size = batch
  if sampler:
    config.sampling.sampler = sampler
  configs.validate(config)
  bs = config.train.batch_size
  size = config.data.image_size
  mesh = sharding.make_mesh(config)
  model = unet.build(config.model, mesh.devices.flat)
  direct = _direct_convolutions(config, model)
  direct_model = model if direct is config else unet.build(direct.model)
  devices = jax.devices()
  kind = devices[0].device_kind
  n_params = unet.count_params(config.model)
  print(
    f"bench {what}: {config_spec} on {len(devices)} × {kind}, batch {bs}, {size}², "
    f"{config.model.dtype}, {n_params / 1e6:.2f}M params",
    file=log,
  )
  allocator = host_allocator()
  if (
    jax.default_backend() == "cpu"
    and allocator is not None
    and allocator.startswith("glibc")
    and not host_malloc.applied()
    and what != "data"
  ):
    print(
      "bench: glibc's malloc with its default settings faults every step's temporaries in afresh; "
      "unset SR3_MALLOC (or SR3_MALLOC=keep) to keep them: docs/cpu_performance.md",
      file=log,
    )

  rng = np.random.default_rng(0)
  hr = jax.device_put(
    rng.uniform(-1, 1, (bs, size, size, 3)).astype(np.float32), sharding.batch_sharding(mesh)
  )
  n_steps = None
  if what == "train":
    state = train.create_train_state(config, model, mesh)
    step = train.make_train_step(config, model, mesh)
    lowered = step.lower(state, {"hr": hr})
    flops = _flops(lowered)
    if direct is not config:
      flops = _flops(train.make_train_step(direct, direct_model, mesh).lower(state, {"hr": hr}))
    t = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t
    holder = [state]

    def call():
      holder[0], metrics = compiled(holder[0], {"hr": hr})
      return metrics
  elif what in ("sample", "forward"):
    params = jax.jit(lambda k: unet.init_params(model, k))(jax.random.key(0))
    lr = hr[:, :: config.data.factor, :: config.data.factor]
    if what == "sample":
      n_steps = steps or config.sampling.steps
      gammas = inference.inference_grid(config, n_steps)
      fn = inference.make_super_resolve(config, model)
      args = (params, lr, gammas, jax.random.key(0))
    else:  # one sampling step's network call: Winograd kernels transformed beforehand, as samplers do
      gamma = jnp.full((bs,), 0.5)
      variables = jax.jit(lambda p: unet.prepare_inference(model, p, hr, gamma, hr))(params)
      fn = jax.jit(lambda v, z, g, c: model.apply(v, z, g, c))
      args = (variables, hr, gamma, hr)
    lowered = fn.lower(*args)
    t = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t
    # XLA counts a loop body once: a sampler reports the forward's FLOPs times the number of steps.
    fwd = jax.jit(lambda p, z, g, c: direct_model.apply({"params": p}, z, g, c))
    flops = _flops(fwd.lower(params, hr, jnp.full((bs,), 0.5), hr))
    if what == "sample":
      flops = flops * n_steps if flops else None
    call = lambda: compiled(*args)
  else:  # data: the Grain loader's HR crops per second, each batch placed on the mesh
    batches = iter(loader.make_dataset(config.data, config.data.train_split, bs, seed=config.seed))
    bsharding = sharding.batch_sharding(mesh)
    compile_s, flops = None, None
    call = lambda: loader.global_batch(next(batches), bsharding)["hr"]

  times = _time(call, iters)
  med = statistics.median(times)
  achieved = flops / med / 1e12 if flops else None
  peak = peak_tflops(kind, config.model.dtype) if what != "data" else None
  mfu = achieved / (peak * len(devices)) if (achieved and peak) else None
  return BenchResult(
    what=what,
    config=config_spec,
    device_kind=kind,
    device_count=len(devices),
    dtype=config.model.dtype,
    params=n_params,
    batch=bs,
    image_size=size,
    compile_s=compile_s,
    step_s=med,
    step_s_min=min(times),
    step_s_max=max(times),
    iters=iters,
    examples_per_s=bs / med,
    flops_per_step=flops,
    tflops_per_s=achieved,
    mfu=mfu,
    peak_memory_bytes=_peak_memory(),
    sampling_steps=n_steps,
    sampler=config.sampling.sampler if what == "sample" else None,
    host_allocator=allocator,
  )


def report(result: BenchResult, as_json: bool, out=sys.stdout) -> None:
  d = dataclasses.asdict(result)
  if as_json:
    print(json.dumps(d), file=out)
    return
  for k, v in d.items():
    print(f"{k:>18}: {v}", file=out)
