"""Consistency with the LR input: a training loss term and a sampling-time projection.

D is the SR degradation as a linear operator (bicubic, anti-aliased, without clipping):
D x = D_h · x · D_wᵀ per channel. The loss term is λ·mean‖D(x̂0) − x_lr‖² (the total loss being
Σ L_stage + λ·L_consistency, `diffusion.consistency_weight`). The projection replaces x̂0 at every
sampler step by the nearest image consistent with the LR input,

    P(x) = x + D⁺(x_lr − D x),   D⁺ = D_h⁺ ⊗ D_w⁺ (Moore–Penrose, computed once in float64),

so that D(P(x)) = x_lr exactly (D has full row rank), switched on by `sampling.project_consistency`
(`inference.make_super_resolve` gives it to the samplers as their x̂0 correction).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sr3_jax.data import degrade

Array = jax.Array
HIGHEST = jax.lax.Precision.HIGHEST


@functools.lru_cache(maxsize=32)
def _operators(n: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
  d = degrade.resize_matrix(n, n // factor)  # (n/f, n) float64
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
