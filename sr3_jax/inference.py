"""Super-resolution with a trained U-Net: LR images → sampled HR images, one jitted call."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from sr3_jax import consistency, diffusion, processes, samplers
from sr3_jax.data import degrade
from sr3_jax.models import unet

Array = jax.Array


def sampler_config(config, **overrides) -> samplers.SamplerConfig:
  """A SamplerConfig from config.sampling and config.diffusion.target."""
  s = config.sampling
  cfg = samplers.SamplerConfig(
    name=s.sampler,
    target=config.diffusion.target,
    clip_x0=s.get("clip_x0", 1.0),
    dynamic_threshold=s.get("dynamic_threshold", None),
    variance=s.get("variance", "beta"),
    eta=s.get("eta", 0.0),
  )
  return dataclasses.replace(cfg, **overrides)


def inference_grid(config, num_steps: int | None = None) -> Array:
  """The levels a sampler walks (cleanest first): for the Gaussian process the γ grid of
  config.sampling.schedule, chosen independently of the training schedule; for blur and band,
  t uniform in [0, 1]."""
  return processes.from_config(config).grid(num_steps or config.sampling.steps)


def guided(denoise_fn, label: Array, null_label: int, scale: float):
  """Classifier-free guidance (Ho & Salimans 2022): out_u + w·(out_c − out_u), one batched call.

  `denoise_fn(z, γ, label)`; w = 1 is the plain conditional model and w = 0 the unconditional one.
  Outputs are combined as predicted (ε, x0 or v are all affine in the score, so the rule holds).
  """
  if scale == 1.0:
    return lambda z, g: denoise_fn(z, g, label)
  null = jnp.full_like(label, null_label)

  def fn(z, g):
    b = z.shape[0]
    out = denoise_fn(
      jnp.concatenate([z, z]), jnp.concatenate([g, g]), jnp.concatenate([label, null])
    )
    cond, uncond = out[:b], out[b:]
    return uncond + scale * (cond - uncond)

  return fn


def make_super_resolve(config, model: unet.UNet, sampler: samplers.SamplerConfig | None = None):
  """Returns a jitted fn(params, lr, levels, rng, aug_level=0) → HR samples in [−1, 1],
  (B, H·f, W·f, C), for the config's forward process (`levels` from `inference_grid`).

  `lr` is (B, h, w, C) in [−1, 1] (for a cascade stage with conditioning augmentation, already
  noised to `aug_level`). With a residual target the sample is added to bicubic(LR). Clipping of
  x̂0 applies only when the HR image itself is diffused. With `sampler.final == "z"` (truncated
  sampling) it returns (y at the grid's ℓ_0, x̂0 of the last step) instead, unclipped.
  """
  factor = config.data.factor
  sampler = sampler or sampler_config(config)
  proc = processes.from_config(config)
  aug = model.config.aug_embedding
  project = bool(config.sampling.get("project_consistency", False))
  # x̂0 is clipped as an image: by the sampler when the HR image itself is diffused, else (residual
  # target, or a projection that must come after the clip) by `project_target`, the sampler's x0_fn.
  clip = sampler.clip_x0
  image_space = project or (config.diffusion.diffuse != "hr" and clip is not None)
  if image_space:
    sampler = dataclasses.replace(sampler, clip_x0=None, dynamic_threshold=None)

  def run(params: Any, lr: Array, levels: Array, rng: Array, aug_level: Array | float = 0.0):
    lr = lr.astype(jnp.float32)
    lr_up = degrade.upsample(lr, factor, value_range=(-1.0, 1.0))
    extra = {"aug_level": jnp.full((lr.shape[0],), aug_level, jnp.float32)} if aug else {}
    variables = unet.prepare_inference(
      model, params, lr_up, jnp.zeros(lr.shape[:1]), lr_up, **extra
    )
    denoise = lambda z, g: model.apply(variables, z, g, lr_up, train=False, **extra)
    x0_fn = (
      (lambda y0: project_target(y0, lr, lr_up, factor, config.diffusion, project, clip))
      if image_space
      else None
    )
    y, x0, _ = samplers.sample_with_x0(denoise, lr_up.shape, levels, rng, sampler, proc, x0_fn)
    if sampler.final == "z":
      return y, jnp.clip(x0, -1.0, 1.0)
    return jnp.clip(diffusion.image_from_target(y, lr_up, config.diffusion), -1.0, 1.0)

  return jax.jit(run)


def make_generate(config, model: unet.UNet, sampler: samplers.SamplerConfig | None = None):
  """A base stage (no LR input): jitted fn(params, labels (B,) int, levels, rng, guidance=1.0)
  → images (B, S, S, C) in [−1, 1]. `labels` are ignored by an unconditional model. With
  `sampler.final == "z"` it returns (y at γ_0, x̂0) as `make_super_resolve` does."""
  sampler = sampler or sampler_config(config)
  proc = processes.from_config(config)
  size = config.data.image_size
  channels = model.config.out_channels
  num_classes = model.config.num_classes

  def run(params: Any, labels: Array, levels: Array, rng: Array, guidance: float = 1.0):
    shape = (labels.shape[0], size, size, channels)
    # The shapes the denoiser is called with: guidance batches the conditional and null passes.
    calls = labels.shape[0] * (2 if num_classes and guidance != 1.0 else 1)
    label_kw = lambda y: {"label": y} if num_classes else {}
    variables = unet.prepare_inference(
      model,
      params,
      jnp.zeros((calls, *shape[1:])),
      jnp.zeros((calls,)),
      None,
      **label_kw(jnp.zeros((calls,), jnp.int32)),
    )
    apply = lambda z, g, y: model.apply(variables, z, g, None, train=False, **label_kw(y))
    denoise = (
      guided(apply, labels, num_classes, guidance)
      if num_classes
      else (lambda z, g: apply(z, g, None))
    )
    y, x0, _ = samplers.sample_with_x0(denoise, shape, levels, rng, sampler, proc)
    if sampler.final == "z":
      return y, jnp.clip(x0, -1.0, 1.0)
    return jnp.clip(y, -1.0, 1.0)

  return jax.jit(run, static_argnames=("guidance",))


def project_target(
  y0: Array,
  lr: Array,
  lr_up: Array,
  factor: int,
  dcfg,
  consistent: bool = True,
  clip: float | None = 1.0,
) -> Array:
  """A diffused-target x̂0 (HR, or the scaled residual) corrected through image space: clipped to
  [−clip, clip] (so that a projection after it stays exact) and optionally projected."""
  image = diffusion.image_from_target(y0, lr_up, dcfg)
  if clip is not None:
    image = jnp.clip(image, -clip, clip)
  if consistent:
    image = consistency.project(image, lr, factor)
  return diffusion.make_target_image(image, lr_up, dcfg)
