"""SSIM with the standard Gaussian window (Wang et al. 2004), jittable and batched.

Window 11×11, σ = 1.5, K1 = 0.01, K2 = 0.03, population (not sample) covariances, local statistics
over the valid region only — what `tf.image.ssim` and scikit-image's
`structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)` compute.
Channels are averaged. The window is applied as two banded matrix products (one per image axis).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sr3_jax.metrics.psnr import _prepare

Array = jax.Array


@functools.lru_cache(maxsize=32)
def _window_matrix(n: int, size: int = 11, sigma: float = 1.5) -> np.ndarray:
  """(n − size + 1, n): row i holds the normalised 1-D Gaussian taps at positions i..i+size−1."""
  if n < size:
    raise ValueError(
      f"SSIM needs images of at least {size}×{size} pixels (after any border crop), got {n}"
    )
  x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  g = np.exp(-0.5 * (x / sigma) ** 2)
  g /= g.sum()
  m = np.zeros((n - size + 1, n))
  for i in range(n - size + 1):
    m[i, i : i + size] = g
  return m


def _filter(x: Array, wh: Array, ww: Array) -> Array:
  hp = jax.lax.Precision.HIGHEST
  x = jnp.einsum("oh,bhwc->bowc", wh, x, precision=hp)
  return jnp.einsum("pw,bowc->bopc", ww, x, precision=hp)


def ssim(
  a: Array, b: Array, max_val: float = 1.0, crop_border: int = 0, y_channel: bool = False
) -> Array:
  """Mean SSIM per image: (B,) for NHWC input, a scalar for HWC; images in [0, max_val]."""
  squeeze = jnp.ndim(a) == 3
  a, b = _prepare(a, b, max_val, crop_border, y_channel)
  wh = jnp.asarray(_window_matrix(a.shape[1]), jnp.float32)
  ww = jnp.asarray(_window_matrix(a.shape[2]), jnp.float32)
  c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
  mu_a, mu_b = _filter(a, wh, ww), _filter(b, wh, ww)
  s_aa = _filter(a * a, wh, ww) - mu_a**2
  s_bb = _filter(b * b, wh, ww) - mu_b**2
  s_ab = _filter(a * b, wh, ww) - mu_a * mu_b
  num = (2.0 * mu_a * mu_b + c1) * (2.0 * s_ab + c2)
  den = (mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2)
  out = jnp.mean(num / den, axis=(1, 2, 3))
  return out[0] if squeeze else out
