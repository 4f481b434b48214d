"""Cascades (SR3 §4.3, CDM): a base generator and SR stages chained, each one jitted sampler.

A cascade is a list of `Stage`s. The first may be a base stage (a U-Net without LR input,
optionally class-conditional with classifier-free guidance); every later stage super-resolves the
previous stage's output by its `data.factor`. A stage trained with conditioning augmentation
(sr3_jax/augment.py) receives its input noised to a fixed level `aug_level`:

- non-truncated: the previous stage samples to the end (x̂0) and that image is noised to z_s;
- truncated: the previous stage's reverse process stops at γ(s) (`samplers.truncated_grid`) and its
  z_s is passed on unchanged; its image for display and metrics is that last step's x̂0.

Each stage's sampler is jitted once and runs with its params replicated and the batch sharded over
the mesh's devices; the random numbers do not depend on how the batch is sharded, so the result
is the same on 1 or 8 devices. The cascade reports every stage's consistency with its input
(SR3's metric) and the cascade-level ‖D(x_final) − x_first‖² against the first stage's image.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sr3_jax import augment, configs, inference, metrics, paths, processes, samplers
from sr3_jax import images as image_io
from sr3_jax.checkpoint import load_for_inference
from sr3_jax.upscale import input_files
from sr3_jax.models import unet

Array = jax.Array


@dataclasses.dataclass
class Stage:
  """One model of a cascade with how it samples inside the cascade."""

  name: str
  config: ml_collections.ConfigDict  # the stage's training config (its workdir's config.json)
  params: Any
  steps: int | None = None  # sampling steps (default: the stage config's)
  sampler: str | None = None  # ddpm | ddim | dpmpp (default: the stage config's)
  aug_level: float = 0.0  # level s its input is noised to (augment.noise stages)
  truncated: bool = False  # its input is the previous stage's z_s (truncated CA)
  guidance: float = 1.0  # base stages with classes: classifier-free guidance scale

  @property
  def is_base(self) -> bool:
    return self.config.model.conditioning == "none"

  @property
  def factor(self) -> int:
    return 1 if self.is_base else int(self.config.data.factor)


def validate(stages: list[Stage]) -> None:
  """One error naming the stage whose place in the cascade does not fit its training config."""
  if not stages:
    raise ValueError("a cascade needs at least one stage")
  for s in stages[1:]:
    if s.is_base:
      raise ValueError(f"stage {s.name!r} is a base stage (no LR input) but is not the first stage")
  for prev, s in zip(stages, stages[1:]):
    out, given = prev.config.data.image_size, s.config.data.image_size // s.factor
    if out != given:
      raise ValueError(
        f"stages do not chain: {prev.name!r} outputs {out}×{out} but {s.name!r} was trained on "
        f"{given}×{given} inputs ({s.config.data.image_size} / factor {s.factor}); reorder the "
        f"stages or train {s.name!r} with data.image_size={out * s.factor}"
      )
  for i, s in enumerate(stages):
    if s.is_base:
      continue
    aug = s.config.model.get("aug_embedding", False)
    if s.aug_level and not aug:
      raise ValueError(
        f"stage {s.name!r}: aug_level={s.aug_level} but it was trained without "
        f"conditioning augmentation (model.aug_embedding=False); set its aug_level to 0"
      )
    if s.truncated:
      if i == 0:
        raise ValueError(
          f"stage {s.name!r}: truncated augmentation needs a previous stage to truncate"
        )
      if not s.aug_level:
        raise ValueError(f"stage {s.name!r}: truncated augmentation needs aug_level > 0")
      if stages[i - 1].config.diffusion.diffuse != "hr":
        raise ValueError(
          f"stage {s.name!r}: truncated augmentation needs the previous stage "
          f"{stages[i - 1].name!r} to diffuse the image itself (diffusion.diffuse='hr')"
        )


@dataclasses.dataclass
class Result:
  names: list[str]
  images: list[np.ndarray]  # per stage (N, H, W, C) in [−1, 1]
  consistency: dict[str, float]  # per SR stage: output vs its (clean) input, mean over images
  cascade_consistency: float | None  # ‖D(final) − first‖² per pixel, [0, 1] scale, mean over images


def stage_program(stages: list[Stage], i: int, devices) -> tuple[Any, np.ndarray, bool]:
  """Stage i's jitted sampler for `devices`, its γ grid, and whether it stops at the next stage's
  truncation level (its sampler then returns z, not x0)."""
  s = stages[i]
  model = unet.build(s.config.model, devices)
  nxt = stages[i + 1] if i + 1 < len(stages) else None
  truncate = nxt is not None and nxt.truncated
  sampler = inference.sampler_config(s.config)
  sampler = dataclasses.replace(
    sampler, name=s.sampler or sampler.name, final="z" if truncate else "x0"
  )
  make = inference.make_generate if s.is_base else inference.make_super_resolve
  grid = np.asarray(inference.inference_grid(s.config, s.steps))
  if truncate:
    # The previous stage stops where its network γ equals the next stage's augmentation γ.
    proc = processes.from_config(s.config)
    gamma = float(augment.level_gamma(nxt.aug_level, nxt.config.augment))
    grid = samplers.truncated_grid(grid, proc.level_from_gamma(gamma), proc)
  return make(s.config, model, sampler), grid, truncate


class Cascade:
  """Compiled samplers for `stages`, all on `mesh` (default: all local devices on one 'data'
  axis), or stage k on `meshes[k]` (disjoint device groups, for `run_pipelined`)."""

  def __init__(
    self, stages: list[Stage], mesh: Mesh | None = None, meshes: list[Mesh] | None = None
  ):
    validate(stages)
    self.stages = stages
    self.mesh = mesh or Mesh(np.asarray(jax.local_devices()), ("data",))
    self.meshes = list(meshes) if meshes else [self.mesh] * len(stages)
    if len(self.meshes) != len(stages):
      raise ValueError(f"{len(stages)} stages but {len(self.meshes)} device groups")
    self.shardings = [NamedSharding(m, P(m.axis_names)) for m in self.meshes]
    self.batch_sharding = self.shardings[0]
    self.params, self.fns, self.grids, self.truncates = [], [], [], []
    for i, s in enumerate(stages):
      fn, grid, truncate = stage_program(stages, i, self.meshes[i].devices.flat)
      self.fns.append(fn)
      self.grids.append(jax.device_put(jnp.asarray(grid), NamedSharding(self.meshes[i], P())))
      self.truncates.append(truncate)
      self.params.append(jax.device_put(s.params, NamedSharding(self.meshes[i], P())))

  def _shard(self, x, i: int = 0) -> Array:
    """x on stage i's devices, split over them (a device-to-device copy for a jax.Array)."""
    return jax.device_put(x if isinstance(x, jax.Array) else np.asarray(x), self.shardings[i])

  def super_resolve(
    self,
    i: int,
    carry: np.ndarray,
    key: Array,
    carry_z: Array | None = None,
    aug_level: float | None = None,
  ):
    """SR stage `i` on `carry` (N, h, w, C) in [−1, 1], N a multiple of the device count: its
    input noised to the stage's augmentation level (or `aug_level`), or, after a truncated
    previous stage, that stage's `carry_z` as it is. Returns what the stage's sampler returns."""
    s = self.stages[i]
    level = s.aug_level if aug_level is None else float(aug_level)
    down = 2 ** (len(s.config.model.channel_mult) - 1)
    hr_h, hr_w = carry.shape[1] * s.factor, carry.shape[2] * s.factor
    if hr_h % down or hr_w % down:
      raise ValueError(
        f"stage {s.name!r} would output {hr_w}×{hr_h}, which its U-Net cannot take (sides "
        f"must be multiples of {down}); give inputs whose sides × {s.factor} are"
      )
    if s.truncated and carry_z is not None:
      cond = self._shard(carry_z, i)  # the previous reverse process stopped at this level
    elif level:
      noise_key = jax.random.fold_in(key, 1_000_003)
      noise = self._shard(jax.random.normal(noise_key, carry.shape), i)
      cond = augment.noise_to_level(self._shard(carry, i), level, noise, s.config.augment)
    else:
      cond = self._shard(carry, i)
    return self.fns[i](self.params[i], cond, self.grids[i], key, jnp.float32(level))

  def _call(self, i, key, carry, carry_z, labels, n, pad):
    """Stage i on the batch: (z handed to a truncated next stage or None, image), on device."""
    s = self.stages[i]
    if s.is_base:
      lab = np.zeros(n, np.int32) if labels is None else np.asarray(labels, np.int32).reshape(n)
      lab = np.concatenate([lab, np.repeat(lab[-1:], pad)])
      out = self.fns[i](
        self.params[i], self._shard(lab, i), self.grids[i], key, guidance=float(s.guidance)
      )
    else:
      out = self.super_resolve(i, carry, key, carry_z)
    return out if self.truncates[i] else (None, out)

  def run(
    self,
    rng: Array,
    num: int | None = None,
    labels: np.ndarray | None = None,
    lr: np.ndarray | None = None,
    log=None,
  ) -> Result:
    """Samples the cascade: from the base stage (`num` images, optional class `labels`) or from
    given images `lr` (N, h, w, C) in [−1, 1], which then enter the first SR stage."""
    log = log or sys.stderr
    stages = list(self.stages)
    if lr is None and not stages[0].is_base:
      raise ValueError("this cascade has no base stage: give LR images to start from (--input)")
    ndev = math.lcm(*(m.size for m in self.meshes))
    first = 0
    if lr is not None:
      if stages[0].is_base:
        first = 1  # given images replace the base stage's output
      if first == len(stages):
        raise ValueError("given LR images but the cascade has no SR stage")
      n = lr.shape[0]
    else:
      n = int(num or 1)
    pad = -n % ndev  # the batch is split over the devices
    names, images = [], []
    carry = carry_z = None
    if lr is not None:
      carry = np.concatenate([lr, np.repeat(lr[-1:], pad, axis=0)]).astype(np.float32)
    for i in range(first, len(stages)):
      carry_z, image = self._call(i, jax.random.fold_in(rng, i), carry, carry_z, labels, n, pad)
      carry = np.asarray(image, np.float32)
      names.append(stages[i].name)
      images.append(carry[:n])
    return self._result(names, images, lr, log)

  def _result(self, names, images, lr, log) -> Result:
    """Each SR stage's consistency with what it was given, and the cascade's, on the host."""
    to01 = lambda x: (np.asarray(x) + 1.0) / 2.0
    consistency = {}
    by_name = {s.name: s for s in self.stages}
    for j, (name, image) in enumerate(zip(names, images)):
      s = by_name[name]
      given = images[j - 1] if j else lr
      if not s.is_base:
        consistency[name] = float(
          np.mean(np.asarray(metrics.consistency(to01(image), to01(given), s.factor)))
        )
      print(
        f"cascade: stage {name} → {image.shape[1]}×{image.shape[2]}"
        + (f", consistency {consistency[name]:.3e}" if name in consistency else ""),
        file=log or sys.stderr,
      )
    start = images[0] if lr is None else lr
    total = images[-1].shape[1] // start.shape[1]
    overall = None
    if len(images) > 1 or lr is not None:
      overall = float(
        np.mean(np.asarray(metrics.consistency((images[-1] + 1) / 2, (start + 1) / 2, total)))
      )
    return Result(names=names, images=images, consistency=consistency, cascade_consistency=overall)

  def run_pipelined(
    self,
    rng: Array,
    micro_batch: int,
    num: int | None = None,
    labels: np.ndarray | None = None,
    lr: np.ndarray | None = None,
    log=None,
  ) -> Result:
    """As `run`, with the stages on their own device groups (`meshes`) and the images streamed
    through them in micro-batches: at tick t stage k works on micro-batch t − k, so once the
    pipeline is full every group is busy at once (JAX dispatches asynchronously; nothing waits
    on the host until the end). A stage's output goes to the next group by `jax.device_put`,
    device to device. Micro-batch m samples with the key fold_in(rng, m): its images are those of
    `run(fold_in(rng, m), …)` on that micro-batch alone. The last micro-batch is padded."""
    stages = list(self.stages)
    if lr is None and not stages[0].is_base:
      raise ValueError("this cascade has no base stage: give LR images to start from (--input)")
    for s, m in zip(stages, self.meshes):
      if micro_batch % m.size:
        raise ValueError(
          f"--micro-batch {micro_batch} does not split over stage {s.name!r}'s {m.size} devices; "
          f"use a multiple of {math.lcm(*(m.size for m in self.meshes))}"
        )
    first = 1 if (lr is not None and stages[0].is_base) else 0
    if first == len(stages):
      raise ValueError("given LR images but the cascade has no SR stage")
    n = lr.shape[0] if lr is not None else int(num or 1)
    count = -(-n // micro_batch)
    pad = count * micro_batch - n

    def padded(x):
      return None if x is None else np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])

    lr_p = padded(None if lr is None else np.asarray(lr, np.float32))
    lab_p = padded(None if labels is None else np.asarray(labels, np.int32).reshape(n))
    part = lambda x, m: None if x is None else x[m * micro_batch : (m + 1) * micro_batch]
    outs: list[list] = [[None] * count for _ in stages]
    for t in range(count + len(stages) - first - 1):
      for k in range(first, len(stages)):
        m = t - (k - first)
        if not 0 <= m < count:
          continue
        carry_z, carry = (None, part(lr_p, m)) if k == first else outs[k - 1][m]
        key = jax.random.fold_in(jax.random.fold_in(rng, m), k)
        outs[k][m] = self._call(k, key, carry, carry_z, part(lab_p, m), micro_batch, 0)
    names = [s.name for s in stages[first:]]
    images = [
      np.concatenate([np.asarray(o[1], np.float32) for o in outs[k]])[:n]
      for k in range(first, len(stages))
    ]
    return self._result(names, images, lr, log)


def even_groups(num_stages: int, num_devices: int) -> list[int]:
  """Devices per stage when split evenly (the later, larger stages get the remainder)."""
  if num_stages > num_devices:
    raise ValueError(
      f"{num_stages} stages but {num_devices} devices: a pipeline needs one device group per "
      "stage; run without --pipeline, or on more devices"
    )
  sizes = [num_devices // num_stages] * num_stages
  for k in range(num_devices % num_stages):
    sizes[-1 - k] += 1
  return sizes


def device_groups(sizes: list[int], names: list[str], devices=None) -> list[Mesh]:
  """Disjoint meshes ('data' axis) of `sizes` devices each, in device order, one per stage."""
  devices = list(devices if devices is not None else jax.local_devices())
  if len(sizes) != len(names):
    raise ValueError(
      f"--groups gives {len(sizes)} device groups for {len(names)} stages ({', '.join(names)})"
    )
  if min(sizes) < 1 or sum(sizes) > len(devices):
    raise ValueError(
      f"--groups {','.join(map(str, sizes))} needs {sum(sizes)} devices (each group ≥ 1); "
      f"there are {len(devices)}"
    )
  starts = np.cumsum([0] + list(sizes))
  return [Mesh(np.asarray(devices[a:b]), ("data",)) for a, b in zip(starts[:-1], starts[1:])]


def timed(fn) -> tuple[Any, float]:
  """(fn(), seconds); fn returns host arrays, so the time includes all device work."""
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# Cascade configs and the `sr3 cascade` command.


def stage_from_config(scfg, root: str | None = None) -> Stage:
  """A Stage from a cascade config's entry: its workdir (`checkpoint`, default ROOT/NAME, or
  ROOT/JOINT for a stage of a joint run) holds the trained stage; sampling settings come from the
  entry."""
  folder = scfg.get("joint") or scfg.name  # a joint fine-tuning run holds several stages
  path = paths.resolve(scfg.get("checkpoint") or str(epath.Path(root or ".") / folder))
  try:
    config, _, params, _ = load_for_inference(path, member=scfg.name)
  except FileNotFoundError as e:
    raise FileNotFoundError(
      f"cascade stage {scfg.name!r}: {e}. Train it first: sr3 train --config "
      f"{scfg.config} --workdir {path}"
    ) from None
  return Stage(
    name=scfg.name,
    config=config,
    params=params,
    steps=scfg.get("steps") or None,
    sampler=scfg.get("sampler") or None,
    aug_level=float(scfg.get("aug_level", 0.0)),
    truncated=bool(scfg.get("truncated", False)),
    guidance=float(scfg.get("guidance", 1.0)),
  )


def write_outputs(
  result: Result, out_dir: pathlib.Path, lr: np.ndarray | None = None, scores: dict | None = None
) -> dict:
  """Every stage's images (STAGE/0000.png …), grid.png (one row per image, one column per stage,
  nearest-upsampled to the final size) and cascade.json."""
  from PIL import Image

  out_dir.mkdir(parents=True, exist_ok=True)
  columns = ([("input", lr)] if lr is not None else []) + list(zip(result.names, result.images))
  for i, (name, imgs) in enumerate(columns):
    folder = out_dir / f"{i}_{name}"
    folder.mkdir(exist_ok=True)
    for k, img in enumerate(imgs):
      Image.fromarray(image_io.to_uint8(img)).save(folder / f"{k:04d}.png")
  size = result.images[-1].shape[1]
  rows = []
  for k in range(result.images[-1].shape[0]):
    panels = [
      np.repeat(
        np.repeat(image_io.to_uint8(imgs[k]), size // imgs.shape[1], 0), size // imgs.shape[2], 1
      )
      for _, imgs in columns
    ]
    rows.append(image_io.grid(panels))
  gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
  Image.fromarray(np.concatenate([x for r in rows for x in (r, gap)][:-1])).save(
    out_dir / "grid.png"
  )
  report = {
    "stages": result.names,
    "sizes": [int(x.shape[1]) for x in result.images],
    "num_images": int(result.images[-1].shape[0]),
    "consistency": result.consistency,
    "cascade_consistency": result.cascade_consistency,
    **(scores or {}),
  }
  (out_dir / "cascade.json").write_text(json.dumps(report, indent=2))
  return report


def read_inputs(folder: str) -> np.ndarray:
  """A folder of equal-sized images → (N, h, w, 3) in [−1, 1]."""
  arrays, paths = [], input_files(folder)
  for p in paths:
    arrays.append(image_io.load_image(p).rgb)
    if arrays[-1].shape != arrays[0].shape:
      raise ValueError(
        f"{p} is {arrays[-1].shape[1]}×{arrays[-1].shape[0]} but {paths[0]} is "
        f"{arrays[0].shape[1]}×{arrays[0].shape[0]}; a cascade's inputs share one size "
        f"(resize them, or use sr3 upscale for mixed sizes)"
      )
  return image_io.to_model_range(np.stack(arrays))


def stage_scores(
  result: Result,
  reference_stats: dict[str, str],
  inception_score: bool = False,
  fid_weights: str | None = None,
  is_weights: str | None = None,
  log=None,
) -> dict:
  """FID of each named stage's images against its reference statistics (an .npz of
  `sr3 fid --save-stats`, at that stage's resolution, as CDM reports FID per stage) and, when
  asked, every stage's Inception Score. Set statistics: no per-image values, no interval."""
  from sr3_jax.metrics import fid
  from sr3_jax.metrics import inception_score as isc

  out: dict = {}
  as_u8 = lambda imgs: [image_io.to_uint8(x) for x in imgs]
  if reference_stats:
    model = fid.Inception(fid_weights)
    out["fid"] = {}
    for name, path in reference_stats.items():
      mu, cov, n_ref = fid.load_stats(path)
      stats = fid.statistics_of(as_u8(result.images[result.names.index(name)]), model)
      fid.warn_if_few(stats.n, f"stage {name}", log)
      value = fid.frechet_distance(*stats.mean_cov(), mu, cov)
      out["fid"][name] = {"fid": value, "n": stats.n, "reference": path, "n_reference": n_ref}
  if inception_score:
    model = isc.Classifier(is_weights)
    out["is"] = {
      n: isc.score_images(as_u8(im), model) for n, im in zip(result.names, result.images)
    }
  return out


def parse_reference_stats(items: list[str] | None, stage_names: list[str]) -> dict[str, str]:
  """['STAGE=FILE.npz', …] → {stage: file}, each stage one of the cascade's."""
  out = {}
  for item in items or []:
    name, sep, path = item.partition("=")
    path = paths.resolve(path)
    if not sep or not path:
      raise ValueError(f"--reference-stats {item!r}: give STAGE=FILE.npz")
    if name not in stage_names:
      raise ValueError(
        f"--reference-stats {item!r}: no stage {name!r} in this cascade; its stages are "
        f"{', '.join(stage_names)}"
      )
    if not pathlib.Path(path).is_file():
      raise FileNotFoundError(
        f"--reference-stats {item!r}: {path} does not exist; make it with sr3 fid --save-stats"
      )
    out[name] = path
  return out


def run(
  config_spec: str,
  output: str,
  num: int = 4,
  label: int | None = None,
  input_dir: str | None = None,
  workdir: str | None = None,
  seed: int = 0,
  log=None,
  reference_stats: list[str] | None = None,
  inception_score: bool = False,
  fid_weights: str | None = None,
  is_weights: str | None = None,
  pipeline: bool = False,
  groups: list[int] | None = None,
  micro_batch: int | None = None,
  compare_sequential: bool = False,
) -> dict:
  """`sr3 cascade`: loads the cascade config's stages from their workdirs and runs them; with
  `reference_stats` (STAGE=FILE.npz) or `inception_score`, scores the stages' images."""
  ccfg = configs.load(config_spec)
  if "stages" not in ccfg:
    raise ValueError(
      f"{config_spec} is not a cascade config (it has no `stages`); a stage's training "
      f"config is FILE.py:stage=NAME"
    )
  refs = parse_reference_stats(reference_stats, [s.name for s in ccfg.stages])
  if refs:
    from sr3_jax.metrics import weights

    weights.locate("fid-inception", fid_weights)  # a missing file stops here, before sampling
  if inception_score:
    from sr3_jax.metrics import weights

    weights.locate("is-inception", is_weights)
  stages = [stage_from_config(s, workdir or ccfg.get("workdir")) for s in ccfg.stages]
  lr = read_inputs(input_dir) if input_dir else None
  labels = None if label is None else np.full(num, label, np.int32)
  if label is not None and not (stages[0].is_base and stages[0].config.model.num_classes):
    raise ValueError("--class needs a class-conditional base stage (model.num_classes > 0)")
  if label is not None and not 0 <= label < stages[0].config.model.num_classes:
    raise ValueError(f"--class {label} is outside [0, {stages[0].config.model.num_classes})")
  if pipeline:
    result, timing = run_pipeline(
      stages, jax.random.key(seed), num, labels, lr, groups, micro_batch, compare_sequential, log
    )
  else:
    result, timing = Cascade(stages).run(jax.random.key(seed), num, labels, lr, log), None
  scores = (
    stage_scores(result, refs, inception_score, fid_weights, is_weights, log)
    if refs or inception_score
    else None
  )
  if timing:
    scores = dict(scores or {}, pipeline=timing)
  return write_outputs(result, pathlib.Path(paths.resolve(output)), lr, scores)


def run_pipeline(
  stages: list[Stage],
  rng: Array,
  num: int,
  labels: np.ndarray | None,
  lr: np.ndarray | None,
  groups: list[int] | None,
  micro_batch: int | None,
  compare_sequential: bool = False,
  log=None,
) -> tuple[Result, dict]:
  """`sr3 cascade --pipeline`: the stages on disjoint device groups, the images streamed through
  in micro-batches; a warm-up micro-batch compiles every stage, then the whole run is timed. With
  `compare_sequential`, the same micro-batches through the stages one after another on all the
  devices are timed too (same images, up to float summation order)."""
  devices = jax.local_devices()
  sizes = list(groups) if groups else even_groups(len(stages), len(devices))
  casc = Cascade(stages, meshes=device_groups(sizes, [s.name for s in stages], devices))
  micro = micro_batch or math.lcm(*sizes)
  n = lr.shape[0] if lr is not None else num
  first = lambda x: None if x is None else x[:micro]
  warm = lambda c, f: f(c, first(labels), first(lr), micro)
  go = lambda c, lab, x, k: c.run_pipelined(rng, micro, num=k, labels=lab, lr=x, log=log)
  warm(casc, go)
  result, seconds = timed(lambda: go(casc, labels, lr, n))
  timing = {
    "groups": dict(zip([s.name for s in stages], sizes)),
    "micro_batch": micro,
    "images": n,
    "seconds": seconds,
    "images_per_s": n / seconds,
  }
  if compare_sequential:
    whole = Cascade(stages)

    def sequential(c, lab, x, k):  # micro-batch m with key fold_in(rng, m), one after another
      parts = []
      for m in range(-(-k // micro)):
        sl = slice(m * micro, (m + 1) * micro)
        parts.append(
          c.run(
            jax.random.fold_in(rng, m),
            num=min(micro, k - m * micro),
            labels=None if lab is None else lab[sl],
            lr=None if x is None else x[sl],
            log=io.StringIO(),
          )
        )
      return parts

    warm(whole, sequential)
    _, seq_seconds = timed(lambda: sequential(whole, labels, lr, n))
    timing.update(sequential_seconds=seq_seconds, sequential_images_per_s=n / seq_seconds)
  print(
    f"cascade --pipeline: groups {timing['groups']}, micro-batch {micro}: "
    f"{timing['images_per_s']:.3g} images/s"
    + (
      f" (sequential on all {len(devices)} devices: {timing['sequential_images_per_s']:.3g})"
      if compare_sequential
      else ""
    ),
    file=log or sys.stderr,
  )
  return result, timing
