"""Conditioning augmentation (Cascaded Diffusion Models, Ho et al. 2021, §3.2) of an SR stage's LR input.

Noise: the LR image x is replaced by the forward process's z_s = √γ(s)·x + √(1−γ(s))·ε at a level
s ∈ [0, 1] (s ~ U(0, max_level) per example in training, a fixed level at sampling), with γ(s)
from the `augment.schedule` log-SNR schedule; s reaches the U-Net through its own embedding
(`model.aug_embedding`). Training is the same for both CDM variants; they differ at sampling:

- non-truncated: the previous stage samples its image to the end, which is then noised to z_s;
- truncated: the previous stage's reverse process stops at γ(s) and its z_s is passed on as is.

Blur: a fraction `blur_prob` of the LR inputs is blurred with a Gaussian of σ ~ U(blur_sigma)
before the noise (CDM: half of the examples at 128² and 256²). At sampling nothing is blurred.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from sr3_jax import schedules
from sr3_jax.data import degrade

Array = jax.Array


def default_config() -> ml_collections.ConfigDict:
  """The `augment` block of a stage's config: off by default."""
  return ml_collections.ConfigDict(
    dict(
      noise=False,
      max_level=0.5,
      truncated=False,
      blur_prob=0.0,
      blur_sigma=(0.4, 0.6),
      schedule=dict(kind="logsnr", name="cosine", logsnr_min=-15.0, logsnr_max=15.0),
    )
  )


def level_gamma(level: Array, acfg) -> Array:
  """γ(s) of the augmentation schedule for levels s ∈ [0, 1]; γ(0) ≈ 1 (no noise)."""
  return schedules.gamma_from_logsnr(
    schedules.logsnr_fn(acfg.schedule)(jnp.asarray(level, jnp.float32))
  )


def noise_to_level(x: Array, level: Array, noise: Array, acfg) -> Array:
  """z_s = √γ(s)·x + √(1−γ(s))·noise, level (B,) or scalar; level 0 returns x exactly."""
  level = jnp.broadcast_to(jnp.asarray(level, jnp.float32), (x.shape[0],))
  g = level_gamma(level, acfg).reshape((-1,) + (1,) * (x.ndim - 1))
  z = jnp.sqrt(g) * x + jnp.sqrt(1.0 - g) * noise
  return jnp.where((level > 0).reshape(g.shape), z, x)


def augment_lr(lr: Array, rng: Array, acfg) -> tuple[Array, Array]:
  """Training-time augmentation of LR inputs (B, h, w, C) → (augmented LR, level s (B,))."""
  b = lr.shape[0]
  blur_key, pick_key, level_key, noise_key = jax.random.split(rng, 4)
  if acfg.blur_prob > 0:
    lo, hi = acfg.blur_sigma
    sigma = jax.random.uniform(blur_key, (b,), minval=lo, maxval=hi)
    pick = jax.random.uniform(pick_key, (b,)) < acfg.blur_prob
    lr = jnp.where(pick[:, None, None, None], degrade.gaussian_blur(lr, sigma), lr)
  level = jnp.zeros((b,), jnp.float32)
  if acfg.noise:
    level = jax.random.uniform(level_key, (b,), maxval=acfg.max_level)
    lr = noise_to_level(lr, level, jax.random.normal(noise_key, lr.shape, jnp.float32), acfg)
  return lr, level


def validate(config) -> None:
  """The augmentation, the model's embeddings and what is diffused must agree."""
  acfg = config.get("augment")
  if acfg is None:
    return
  if acfg.noise and not config.model.get("aug_embedding", False):
    raise ValueError(
      "augment.noise=True needs model.aug_embedding=True (the level s is fed to the U-Net)"
    )
  if acfg.noise and config.diffusion.diffuse != "hr":
    raise ValueError(
      "augment.noise=True needs diffusion.diffuse='hr': a residual over a noised "
      "bicubic(LR) would carry the augmentation noise"
    )
  if not 0.0 <= acfg.max_level <= 1.0:
    raise ValueError(f"augment.max_level={acfg.max_level} must lie in [0, 1]")
  if not 0.0 <= acfg.blur_prob <= 1.0:
    raise ValueError(f"augment.blur_prob={acfg.blur_prob} must lie in [0, 1]")
  if (acfg.noise or acfg.blur_prob) and config.model.conditioning == "none":
    raise ValueError(
      "augment.* applies to the LR input; a base stage (model.conditioning='none') has none"
    )
