"""SR3's degradations in JAX: bicubic resizing with anti-aliasing, as separable matrix products.

Resizing follows Pillow's `Image.resize(..., Image.BICUBIC)`: the cubic kernel with a = −0.5,
stretched by the scale factor when shrinking (that stretch is the anti-aliasing), output pixel
centres at (i + 0.5)·in/out, the window clipped at the borders and its weights renormalised.
Each axis becomes a small dense matrix built once in float64 numpy, so the resize is two
matmuls on device (MXU-friendly on TPU) and runs inside the jitted train or eval step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
  x = np.abs(x)
  near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
  far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
  return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


@functools.lru_cache(maxsize=64)
def resize_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out_size, in_size) float64 weights of Pillow-style bicubic resampling along one axis."""
  if in_size < 1 or out_size < 1:
    raise ValueError(f"cannot resize an axis of {in_size} pixels to {out_size}")
  scale = in_size / out_size
  filterscale = max(scale, 1.0)
  support = 2.0 * filterscale
  weights = np.zeros((out_size, in_size), np.float64)
  for i in range(out_size):
    center = (i + 0.5) * scale
    lo = max(int(center - support + 0.5), 0)
    hi = min(int(center + support + 0.5), in_size)
    taps = np.arange(lo, hi)
    w = _cubic((taps - center + 0.5) / filterscale)
    total = w.sum()
    weights[i, lo:hi] = w / total if total != 0.0 else w
  return weights


def resize(
  images: Array, height: int, width: int, value_range: tuple[float, float] | None = None
) -> Array:
  """Bicubic resize of NHWC or HWC float images to (height, width); anti-aliased when shrinking.

  Like Pillow, the width pass runs first; with `value_range` the cubic kernel's overshoot is
  clipped into that range after each pass, as Pillow does for 8-bit images.
  """
  images = jnp.asarray(images)
  h_axis = images.ndim - 3
  in_h, in_w = images.shape[h_axis], images.shape[h_axis + 1]
  dtype = images.dtype if jnp.issubdtype(images.dtype, jnp.floating) else jnp.float32
  x = images.astype(jnp.float32)
  hp = jax.lax.Precision.HIGHEST  # metrics depend on this; the default TPU matmul is bf16
  clip = (lambda v: jnp.clip(v, *value_range)) if value_range is not None else (lambda v: v)
  if in_w != width:
    ww = jnp.asarray(resize_matrix(in_w, width), jnp.float32)
    x = clip(jnp.einsum("pw,...hwc->...hpc", ww, x, precision=hp))
  if in_h != height:
    wh = jnp.asarray(resize_matrix(in_h, height), jnp.float32)
    x = clip(jnp.einsum("oh,...hwc->...owc", wh, x, precision=hp))
  return x.astype(dtype)


def _check_factor(size: int, factor: int, what: str) -> None:
  if factor < 1 or int(factor) != factor:
    raise ValueError(f"{what} factor must be a positive integer, got {factor}")
  if size % factor:
    raise ValueError(f"image side {size} is not divisible by the {what} factor {factor}")


def downsample(images: Array, factor: int, value_range: tuple[float, float] | None = None) -> Array:
  """Bicubic, anti-aliased downsampling by an integer factor (SR3's LR degradation); NHWC or HWC.

  `value_range` (e.g. (−1, 1) for model images, (0, 255) for 8-bit ones) clips the overshoot.
  """
  h, w = images.shape[-3], images.shape[-2]
  _check_factor(h, factor, "downsample")
  _check_factor(w, factor, "downsample")
  return resize(images, h // factor, w // factor, value_range)


def upsample(images: Array, factor: int, value_range: tuple[float, float] | None = None) -> Array:
  """Bicubic upsampling by an integer factor (SR3's conditioning input); NHWC or HWC."""
  if factor < 1 or int(factor) != factor:
    raise ValueError(f"upsample factor must be a positive integer, got {factor}")
  return resize(images, images.shape[-3] * factor, images.shape[-2] * factor, value_range)


def _reflect(idx: Array, n: int) -> Array:
  """Half-sample symmetric reflection of integer positions into [0, n): … c b a | a b c … ."""
  period = 2 * n
  idx = jnp.mod(idx, period)
  return jnp.where(idx < n, idx, period - 1 - idx)


def gaussian_blur_matrix(n: int, sigma: Array) -> Array:
  """(…, n, n) matrices that blur one axis of n pixels with a Gaussian of std `sigma` (…,),
  boundaries reflected (scipy.ndimage's mode='reflect'); σ ≤ 1e-3 gives the identity."""
  sigma = jnp.asarray(sigma, jnp.float32)[..., None, None]
  i = jnp.arange(n)[:, None]
  # Offsets reach across the image twice over so that reflected taps are all accounted for.
  offsets = jnp.arange(-2 * n + 1, 2 * n)[None, :]
  taps = _reflect(i + offsets, n)  # (n, 4n−1) source pixel of each tap
  w = jnp.exp(-0.5 * (offsets / jnp.maximum(sigma, 1e-3)) ** 2)  # (…, n, 4n−1)
  w = w / jnp.sum(w, axis=-1, keepdims=True)
  onehot = jax.nn.one_hot(taps, n, dtype=jnp.float32)  # (n, 4n−1, n)
  m = jnp.einsum("...it,itj->...ij", w, onehot, precision=jax.lax.Precision.HIGHEST)
  return jnp.where(sigma > 1e-3, m, jnp.eye(n, dtype=jnp.float32))


def gaussian_blur(images: Array, sigma: Array) -> Array:
  """Gaussian blur of NHWC (σ scalar or per example (B,)) or HWC images, jittable with traced σ.

  The blur is two dense matmuls with reflected boundaries, so σ can differ per example inside a
  jitted step (CDM's blur augmentation of the conditioning image) without changing any shape.
  """
  images = jnp.asarray(images)
  batched = images.ndim == 4
  x = images.astype(jnp.float32) if batched else images.astype(jnp.float32)[None]
  b, h, w, _ = x.shape
  sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (b,))
  hp = jax.lax.Precision.HIGHEST
  x = jnp.einsum("bij,bjwc->biwc", gaussian_blur_matrix(h, sigma), x, precision=hp)
  x = jnp.einsum("bij,bhjc->bhic", gaussian_blur_matrix(w, sigma), x, precision=hp)
  x = x.astype(images.dtype if jnp.issubdtype(images.dtype, jnp.floating) else jnp.float32)
  return x if batched else x[0]


def gaussian_noise(images: Array, rng: Array, sigma: Array) -> Array:
  """images + σ·ε, ε ~ N(0, I); σ scalar or per example (B,) for NHWC input."""
  images = jnp.asarray(images, jnp.float32)
  sigma = jnp.asarray(sigma, jnp.float32)
  if sigma.ndim == 1:
    sigma = sigma.reshape((-1,) + (1,) * (images.ndim - 1))
  return images + sigma * jax.random.normal(rng, images.shape, jnp.float32)
