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
import json
import pathlib
import sys
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


class Cascade:
  """Compiled samplers for `stages` on `mesh` (default: all local devices on one 'data' axis)."""

  def __init__(self, stages: list[Stage], mesh: Mesh | None = None):
    validate(stages)
    self.stages = stages
    self.mesh = mesh or Mesh(np.asarray(jax.local_devices()), ("data",))
    self.batch_sharding = NamedSharding(self.mesh, P(self.mesh.axis_names))
    replicated = NamedSharding(self.mesh, P())
    self.params, self.fns, self.grids, self.truncates = [], [], [], []
    for i, s in enumerate(stages):
      model = unet.build(s.config.model, self.mesh.devices.flat)
      nxt = stages[i + 1] if i + 1 < len(stages) else None
      truncate = nxt is not None and nxt.truncated
      sampler = inference.sampler_config(s.config)
      sampler = dataclasses.replace(
        sampler, name=s.sampler or sampler.name, final="z" if truncate else "x0"
      )
      make = inference.make_generate if s.is_base else inference.make_super_resolve
      self.fns.append(make(s.config, model, sampler))
      grid = np.asarray(inference.inference_grid(s.config, s.steps))
      if truncate:
        # The previous stage stops where its network γ equals the next stage's augmentation γ.
        proc = processes.from_config(s.config)
        gamma = float(augment.level_gamma(nxt.aug_level, nxt.config.augment))
        grid = samplers.truncated_grid(grid, proc.level_from_gamma(gamma), proc)
      self.grids.append(jnp.asarray(grid))
      self.truncates.append(truncate)
      self.params.append(jax.device_put(s.params, replicated))

  def _shard(self, x: np.ndarray) -> Array:
    return jax.device_put(np.asarray(x), self.batch_sharding)

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
      cond = carry_z  # the previous reverse process stopped at this level
    elif level:
      noise_key = jax.random.fold_in(key, 1_000_003)
      cond = augment.noise_to_level(
        self._shard(carry), level, jax.random.normal(noise_key, carry.shape), s.config.augment
      )
    else:
      cond = self._shard(carry)
    return self.fns[i](self.params[i], cond, self.grids[i], key, jnp.float32(level))

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
    ndev = self.mesh.size
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
    names, images, consistency = [], [], {}
    carry = carry_z = None
    if lr is not None:
      carry = np.concatenate([lr, np.repeat(lr[-1:], pad, axis=0)]).astype(np.float32)
    for i in range(first, len(stages)):
      s = stages[i]
      key = jax.random.fold_in(rng, i)
      if s.is_base:
        lab = np.zeros(n, np.int32) if labels is None else np.asarray(labels, np.int32).reshape(n)
        lab = np.concatenate([lab, np.repeat(lab[-1:], pad)])
        out = self.fns[i](
          self.params[i], self._shard(lab), self.grids[i], key, guidance=float(s.guidance)
        )
      else:
        out = self.super_resolve(i, carry, key, carry_z)
      if self.truncates[i]:
        carry_z, image = out
      else:
        carry_z, image = None, out
      image = np.asarray(image, np.float32)
      if not s.is_base:
        to01 = lambda x: (np.asarray(x) + 1.0) / 2.0
        consistency[s.name] = float(
          np.mean(np.asarray(metrics.consistency(to01(image[:n]), to01(carry[:n]), s.factor)))
        )
      carry = image
      names.append(s.name)
      images.append(image[:n])
      print(
        f"cascade: stage {s.name} → {image.shape[1]}×{image.shape[2]}"
        + (f", consistency {consistency[s.name]:.3e}" if s.name in consistency else ""),
        file=log,
      )
    start = images[0] if lr is None else lr
    total = images[-1].shape[1] // start.shape[1]
    overall = None
    if len(images) > 1 or lr is not None:
      overall = float(
        np.mean(np.asarray(metrics.consistency((images[-1] + 1) / 2, (start + 1) / 2, total)))
      )
    return Result(names=names, images=images, consistency=consistency, cascade_consistency=overall)


# ---------------------------------------------------------------------------------------------
# Cascade configs and the `sr3 cascade` command.


def stage_from_config(scfg, root: str | None = None) -> Stage:
  """A Stage from a cascade config's entry: its workdir (`checkpoint`, default ROOT/NAME) holds
  the trained stage; sampling settings come from the entry."""
  path = paths.resolve(scfg.get("checkpoint") or str(epath.Path(root or ".") / scfg.name))
  try:
    config, _, params, _ = load_for_inference(path)
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
  result = Cascade(stages).run(jax.random.key(seed), num=num, labels=labels, lr=lr, log=log)
  scores = (
    stage_scores(result, refs, inception_score, fid_weights, is_weights, log)
    if refs or inception_score
    else None
  )
  return write_outputs(result, pathlib.Path(paths.resolve(output)), lr, scores)
