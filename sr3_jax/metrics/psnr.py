"""PSNR and SR3's consistency metric, jittable and batched (one value per image)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sr3_jax.data import degrade

Array = jax.Array


def rgb_to_y(images: Array, max_val: float = 1.0) -> Array:
  """ITU-R BT.601 luma of RGB images in [0, max_val], as SR papers compute it (16..235 range
  for 8-bit, scaled to max_val); (..., 3) → (..., 1)."""
  x = images / max_val * 255.0
  y = 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0
  return (y / 255.0 * max_val)[..., None]


def _prepare(a: Array, b: Array, max_val: float, crop_border: int, y_channel: bool):
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  if a.shape != b.shape:
    raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
  if a.ndim == 3:
    a, b = a[None], b[None]
  if y_channel:
    a, b = rgb_to_y(a, max_val), rgb_to_y(b, max_val)
  if crop_border:
    a = a[:, crop_border:-crop_border, crop_border:-crop_border]
    b = b[:, crop_border:-crop_border, crop_border:-crop_border]
  return a, b


def psnr(
  a: Array, b: Array, max_val: float = 1.0, crop_border: int = 0, y_channel: bool = False
) -> Array:
  """10·log10(max_val² / MSE) per image: (B,) for NHWC input, a scalar for HWC."""
  squeeze = jnp.ndim(a) == 3
  a, b = _prepare(a, b, max_val, crop_border, y_channel)
  mse = jnp.mean(jnp.square(a - b), axis=(1, 2, 3))
  out = 10.0 * jnp.log10(max_val**2 / mse)
  return out[0] if squeeze else out


def consistency(sr: Array, lr: Array, factor: int, max_val: float = 1.0) -> Array:
  """SR3's consistency: MSE between downsample(SR) and the LR input, on a [0, 1] scale, per image.

  The paper reports it ×1e-5 (2.68 for SR3 on faces 16→128).
  """
  squeeze = jnp.ndim(sr) == 3
  sr = jnp.asarray(sr, jnp.float32) / max_val
  lr = jnp.asarray(lr, jnp.float32) / max_val
  if squeeze:
    sr, lr = sr[None], lr[None]
  down = degrade.downsample(sr, factor, value_range=(0.0, 1.0))
  if down.shape != lr.shape:
    raise ValueError(f"downsampled SR {down.shape} does not match LR {lr.shape} at factor {factor}")
  out = jnp.mean(jnp.square(down - lr), axis=(1, 2, 3))
  return out[0] if squeeze else out
