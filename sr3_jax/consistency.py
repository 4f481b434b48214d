"""Consistency with the LR input: a training loss term and a sampling-time projection.

D is the SR degradation as a linear operator (bicubic, anti-aliased, without clipping):
D x = D_h · x · D_wᵀ per channel. The loss term is λ·mean‖D(x̂0) − x_lr‖² (the total loss being
Σ L_stage + λ·L_consistency, `diffusion.consistency_weight`). The projection replaces x̂0 at every
sampler step by the nearest image consistent with the LR input,

    P(x) = x + D⁺(x_lr − D x),   D⁺ = D_h⁺ ⊗ D_w⁺ (Moore–Penrose, computed once in float64),

so that D(P(x)) = x_lr exactly (D has full row rank), switched on by `sampling.project_consistency`.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sr3_jax import diffusion
from sr3_jax.data import degrade

Array = jax.Array
HIGHEST = jax.lax.Precision.HIGHEST


@functools.lru_cache(maxsize=32)
def _operators(n: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
  d = degrade.resize_matrix(n, n // factor)         # (n/f, n) float64
  return d.astype(np.float32), np.linalg.pinv(d).astype(np.float32)


def degrade_linear(x: Array, factor: int) -> Array:
  """D x for NHWC images: the bicubic downsampling without clipping (linear)."""
  dh, _ = _operators(x.shape[-3], factor)
  dw, _ = _operators(x.shape[-2], factor)
  return jnp.einsum("ih,bhwc,jw->bijc", dh, x, dw, precision=HIGHEST)


def project(x: Array, lr: Array, factor: int) -> Array:
  """P(x) = x + D⁺(lr − D x): the image nearest to x (in L2) whose degradation is `lr`."""
  _, ph = _operators(x.shape[-3], factor)
  _, pw = _operators(x.shape[-2], factor)
  r = lr - degrade_linear(x, factor)
  return x + jnp.einsum("hi,bijc,wj->bhwc", ph, r, pw, precision=HIGHEST)


def loss(x0_image: Array, lr: Array, factor: int) -> Array:
  """Per-example mean ‖D(x̂0) − x_lr‖² (B,)."""
  return jnp.mean(jnp.square(degrade_linear(x0_image, factor) - lr), axis=(1, 2, 3))


def image_space_denoiser(denoise_fn: Callable[[Array, Array], Array], target: str, lr: Array, lr_up: Array,
                         factor: int, dcfg, consistent: bool = True, clip: float | None = 1.0
                         ) -> Callable[[Array, Array], Array]:
  """Wraps a Gaussian-diffusion denoiser so that its x̂0, read as an HR image, is clipped to
  [−clip, clip] and (with `consistent`) projected onto the images consistent with `lr`; the output is
  re-expressed in the model's parameterisation, so every sampler uses the corrected x̂0 unchanged.

  For a residual target this is where x̂0 gets clipped at all: a bound on the residual itself
  would not keep bicubic(LR) + residual inside the image range.
  """
  def fn(z, g):
    out = denoise_fn(z, g).astype(jnp.float32)
    x0, _ = diffusion.x0_eps_from_output(out, z, g, target)
    x0 = project_target(x0, lr, lr_up, factor, dcfg, consistent, clip)
    return diffusion.target_from_x0_eps(x0, diffusion.eps_from_x0(z, g, x0), g, target)
  return fn


def project_target(y0: Array, lr: Array, lr_up: Array, factor: int, dcfg, consistent: bool = True,
                   clip: float | None = 1.0) -> Array:
  """A diffused-target x̂0 (HR, or the scaled residual) corrected through image space: clipped to
  [−clip, clip] (so that a projection after it stays exact) and optionally projected."""
  image = diffusion.image_from_target(y0, lr_up, dcfg)
  if clip is not None:
    image = jnp.clip(image, -clip, clip)
  if consistent:
    image = project(image, lr, factor)
  return diffusion.make_target_image(image, lr_up, dcfg)
