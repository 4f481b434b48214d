"""Super-resolution with a trained U-Net: LR images → sampled HR images, one jitted call."""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from sr3_jax import diffusion, samplers, schedules
from sr3_jax.data import degrade
from sr3_jax.models import unet

Array = jax.Array


def sampler_config(config, **overrides) -> samplers.SamplerConfig:
  """A SamplerConfig from config.sampling and config.diffusion.target."""
  s = config.sampling
  cfg = samplers.SamplerConfig(
      name=s.sampler, target=config.diffusion.target, clip_x0=s.get("clip_x0", 1.0),
      dynamic_threshold=s.get("dynamic_threshold", None), variance=s.get("variance", "beta"),
      eta=s.get("eta", 0.0))
  return dataclasses.replace(cfg, **overrides)


def inference_gammas(config, num_steps: int | None = None) -> Array:
  """The inference grid: config.sampling.schedule, chosen independently of the training schedule."""
  return schedules.gamma_grid(config.sampling.schedule, num_steps or config.sampling.steps)


def make_super_resolve(config, model: unet.UNet, sampler: samplers.SamplerConfig | None = None):
  """Returns a jitted fn(params, lr, gammas, rng) → HR samples in [−1, 1], (B, H·f, W·f, C).

  `lr` is (B, h, w, C) in [−1, 1]. With a residual target the sample is added to bicubic(LR).
  Clipping of x̂0 applies only when the HR image itself is diffused.
  """
  factor = config.data.factor
  sampler = sampler or sampler_config(config)
  if config.diffusion.diffuse != "hr":
    sampler = dataclasses.replace(sampler, clip_x0=None, dynamic_threshold=None)

  def run(params: Any, lr: Array, gammas: Array, rng: Array) -> Array:
    lr_up = degrade.upsample(lr.astype(jnp.float32), factor, value_range=(-1.0, 1.0))
    denoise = lambda z, g: model.apply({"params": params}, z, g, lr_up, train=False)
    y0, _ = samplers.sample(denoise, lr_up.shape, gammas, rng, sampler)
    return jnp.clip(diffusion.image_from_target(y0, lr_up, config.diffusion), -1.0, 1.0)

  return jax.jit(run)
