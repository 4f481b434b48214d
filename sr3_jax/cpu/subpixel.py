"""2× nearest-neighbour upsampling followed by a 3×3 'SAME' convolution, computed at the low resolution.

After nearest upsampling, output pixel (2i+p, 2j+q) (phases p, q ∈ {0, 1}) reads upsampled rows
2i+p-1 … 2i+p+1, which are only two distinct low-resolution rows: {i-1, i} for p = 0 and {i, i+1}
for p = 1. The three kernel rows fold onto those two (`TAPS[p]`: for p = 0 row 0 alone, then rows
1 and 2 summed; for p = 1 rows 0 and 1 summed, then row 2), and the same holds for columns. So the
whole layer is one 2×2 convolution of the low-resolution map, zero-padded by one, with the four
phases' folded kernels side by side as 4·C_out output channels, and the (H+1, W+1) result's phases
put back in place. It costs 4·4 = 16 multiplies per (C_in, C_out) pair and low-resolution pixel
where the direct form costs 4·9 = 36, and never builds the upsampled input.

`upsample_conv(x, w)` has the parameters of the direct form, a (3, 3, C_in, C_out) kernel, and a
custom VJP: the input gradient is the 2×2 convolution's transpose (of the output gradient with its
phases taken apart; one matmul and a sum of shifted slices), and the weight gradient is the 2×2
kernel's, folded back onto the 3×3 taps by the adjoint of `TAPS`. XLA's CPU backend runs its own
weight gradient of this 2×2 convolution more than 100× slower than the forward pass, hence the
explicit one.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax

from sr3_jax.models.conv import upsample_nearest

DIMS = ("NHWC", "HWIO", "NHWC")
# TAPS[p, t, a]: the weight of kernel row a in window row t (low-res rows i-1+p+t) for output phase p.
TAPS = np.array([[[1, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]], np.float32)


def phase_kernel(w: jax.Array) -> jax.Array:
  """(3, 3, I, O) → (2, 2, I, 4·O): the four phases' folded 2×2 kernels, output channels (p, q, o)."""
  _, _, ci, co = w.shape
  k = jnp.einsum(
    "pta,qsb,abio->tsipqo",
    TAPS.astype(w.dtype),
    TAPS.astype(w.dtype),
    w,
    precision=lax.Precision.HIGHEST,
  )
  return k.reshape(2, 2, ci, 4 * co)


def fold_phase_gradient(dk: jax.Array) -> jax.Array:
  """Adjoint of `phase_kernel`: (2, 2, I, 4·O) → (3, 3, I, O)."""
  _, _, ci, co4 = dk.shape
  dk = dk.reshape(2, 2, ci, 2, 2, co4 // 4)
  return jnp.einsum(
    "pta,qsb,tsipqo->abio",
    TAPS.astype(dk.dtype),
    TAPS.astype(dk.dtype),
    dk,
    precision=lax.Precision.HIGHEST,
  )


def _valid(x, k):
  return lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=DIMS)


def interleave(out: jax.Array) -> jax.Array:
  """(N, H+1, W+1, 4·O) phase outputs → (N, 2H, 2W, O): pixel (2i+p, 2j+q) is out[i+p, j+q, (p, q)]."""
  n, h1, w1, co4 = out.shape
  h, w, co = h1 - 1, w1 - 1, co4 // 4
  out = out.reshape(n, h1, w1, 2, 2, co)
  rows = [
    jnp.stack([out[:, p : p + h, q : q + w, p, q] for q in range(2)], axis=3) for p in range(2)
  ]
  return jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, co)  # (N, H, p, W, q, O)


def deinterleave(dy: jax.Array) -> jax.Array:
  """Adjoint of `interleave`: (N, 2H, 2W, O) → (N, H+1, W+1, 4·O), each phase shifted by (p, q)."""
  n, h2, w2, co = dy.shape
  h, w = h2 // 2, w2 // 2
  dy = dy.reshape(n, h, 2, w, 2, co)
  phases = [
    jnp.pad(dy[:, :, p, :, q], ((0, 0), (p, 1 - p), (q, 1 - q), (0, 0)))
    for p in range(2)
    for q in range(2)
  ]
  return jnp.stack(phases, axis=3).reshape(n, h + 1, w + 1, 4 * co)


def _input_grad(dout, k):
  """The transpose of the VALID 2×2 convolution over x padded by one, cropped back to x:
  dx[i, j] = Σ_{t,s} dout[i+1-t, j+1-s] · k[t, s]ᵀ.

  One (positions, 4·O)·(4·O, 4·I) matmul gives every tap's term at every position, and a fused sum
  of four shifted slices adds them up. XLA's CPU convolution of dout with the flipped kernel (4·O
  input channels, I output ones) ran this at a third of the speed (docs/cpu_performance.md).
  """
  n, h1, w1, co4 = dout.shape
  ci = k.shape[2]
  kt = (
    jnp.flip(k, (0, 1)).transpose(3, 0, 1, 2).reshape(co4, 4 * ci)
  )  # columns (t, s, i), flipped taps
  terms = jnp.dot(dout.reshape(-1, co4), kt).reshape(n, h1, w1, 2, 2, ci)
  h, w = h1 - 1, w1 - 1
  return sum(terms[:, t : t + h, s : s + w, t, s] for t in range(2) for s in range(2))


def _forward(x, w):
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return interleave(_valid(xp, phase_kernel(w)))


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def upsample_conv(x: jax.Array, w: jax.Array, weight_grad: Callable | None = None) -> jax.Array:
  """conv3×3_SAME(upsample_nearest_2×(x), w) for x (N, H, W, I), w (3, 3, I, O) → (N, 2H, 2W, O).

  `weight_grad(x, dy, kernel_size, padding=(1, 1))` → (2, 2, I, 4·O), if given, computes the 2×2
  kernel's gradient (conv.im2col_weight_grad on the CPU); else XLA's gradient of the direct form.
  """
  _check(w.shape)
  return _forward(x, w)


def _check(w_shape):
  if tuple(w_shape[:2]) != (3, 3):
    raise ValueError(f"upsample_conv: needs a 3×3 kernel, got {w_shape}")


def _fwd(x, w, weight_grad):
  _check(w.shape)
  return _forward(x, w), (x, w)


def _bwd(weight_grad, res, dy):
  x, w = res
  dout = deinterleave(dy)  # (N, H+1, W+1, 4·O)
  dx = _input_grad(dout, phase_kernel(w))
  if weight_grad is not None:
    dw = fold_phase_gradient(weight_grad(x, dout, 2, padding=(1, 1)))
  else:
    up = upsample_nearest(x)
    dw = jax.vjp(
      lambda w: lax.conv_general_dilated(up, w, (1, 1), "SAME", dimension_numbers=DIMS), w
    )[1](dy)[0]
  return dx.astype(x.dtype), dw.astype(w.dtype)


upsample_conv.defvjp(_fwd, _bwd)
