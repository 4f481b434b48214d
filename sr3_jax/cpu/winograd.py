"""Winograd F(4×4, 3×3): a stride-1 'SAME' 3×3 convolution as 36 batched matmuls.

Lavin & Gray's minimal filtering: each 6×6 input tile d and 3×3 kernel g give a 4×4 output tile
    Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A,
so a tile costs 36 multiplies per (C_in, C_out) pair where the direct sum costs 144. Over channels
the elementwise product becomes, for each of the 36 tile positions, a matmul
(tiles, C_in) × (C_in, C_out). The input transform is sums of shifted slices with small integer
coefficients that XLA fuses into loops; the output-side ones are one small (16 × 36) or (36 × 16)
matmul over each tile's entries. Their cost is memory traffic, so the scheme pays
on small feature maps with many channels (the 32×32 and 16×16 levels of an SR3 U-Net), where the
matmuls dominate. Float32 error grows to ~2e-5 relative (the direct convolution: ~1e-6).

`conv(x, w)` has a custom VJP made of the same pieces: the input gradient is the forward transform
with the kernel flipped and its channels swapped, and the weight gradient contracts the input's
transform (kept from the forward pass) with a transform of the output gradient over tiles.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax

TILE = 4  # output tile side; input tiles are TILE + 2 = 6
# Input, kernel and output transforms of F(4, 3), interpolation points 0, ±1, ±2, ∞.
B_T = np.array(
  [
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
  ],
  np.float64,
)
G = np.array(
  [
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
  ],
  np.float64,
)
A_T = np.array(
  [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float64
)


def supports(x_shape, kernel_shape) -> bool:
  """A 3×3 kernel over an NHWC map whose height and width are multiples of the tile."""
  return tuple(kernel_shape[:2]) == (3, 3) and x_shape[1] % TILE == 0 and x_shape[2] % TILE == 0


def _combine(matrix: np.ndarray, parts: list) -> list:
  """[Σ_j matrix[k, j] · parts[j] for each row k], skipping zero terms (XLA fuses the sums)."""
  out = []
  for row in matrix:
    acc = None
    for c, p in zip(row, parts):
      if c == 0:
        continue
      term = p if c == 1 else -p if c == -1 else p * np.asarray(c, p.dtype)
      acc = term if acc is None else acc + term
    out.append(acc)
  return out


def _leading_matmul(matrix: np.ndarray, t: jax.Array) -> jax.Array:
  """matrix (R, K) applied over the leading axis of t (K, ...): one (R, K)·(K, rest) matmul."""
  y = lax.dot_general(
    jnp.asarray(matrix.astype(t.dtype)),
    t.reshape(t.shape[0], -1),
    (((1,), (0,)), ((), ())),
    precision=lax.Precision.HIGHEST,
  )
  return y.reshape(matrix.shape[0], *t.shape[1:])


def kernel_transform(w: jax.Array, flip: bool = False) -> jax.Array:
  """(3, 3, I, O) → (36, I, O): U[(k,l)] = Σ_{a,b} G[k,a] G[l,b] w[a,b] (`flip`: w[2-a, 2-b])."""
  g = G[:, ::-1] if flip else G
  return _leading_matmul(
    np.kron(g, g), w.reshape(9, *w.shape[2:])
  )  # (36, 9): row (k, l), column (a, b)


def input_transform(x: jax.Array) -> jax.Array:
  """(N, H, W, C) → (36, N·H/4·W/4, C): Bᵀ d B for every 6×6 tile of the zero-padded map."""
  n, h, w, c = x.shape
  th, tw = h // TILE, w // TILE
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  rows = _combine(B_T, [xp[:, i : i + TILE * th : TILE] for i in range(6)])  # 6 × (N, th, W+2, C)
  tiles = [
    t for r in rows for t in _combine(B_T, [r[:, :, j : j + TILE * tw : TILE] for j in range(6)])
  ]
  return jnp.stack(tiles).reshape(36, n * th * tw, c)


# Both output-side transforms act on a tile's 36 (or 16) entries at once through the Kronecker
# product of the 1-D matrix with itself: one small matmul per layer. Written as sums of shifted
# slices instead, XLA's CPU backend made each slice its own copy (6–36 per layer), and the train
# step ran ~6% slower (docs/cpu_performance.md).
A_T_2D = np.kron(A_T, A_T)  # (16, 36): row (p, q), column (k, l)
A_2D = np.kron(A_T.T, A_T.T)  # (36, 16): row (k, l), column (p, q)


def output_transform(m: jax.Array, n: int, th: int, tw: int) -> jax.Array:
  """(36, N·th·tw, O) → (N, 4·th, 4·tw, O): Aᵀ M A for every tile, tiles put back in place."""
  o = m.shape[-1]
  y = _leading_matmul(A_T_2D, m).reshape(TILE, TILE, n, th, tw, o)
  return y.transpose(2, 3, 0, 4, 1, 5).reshape(n, TILE * th, TILE * tw, o)


def output_gradient_transform(dy: jax.Array) -> jax.Array:
  """(N, H, W, O) → (36, N·H/4·W/4, O): A dY Aᵀ for every 4×4 tile of an output gradient."""
  n, h, w, o = dy.shape
  th, tw = h // TILE, w // TILE
  t = (
    dy.reshape(n, th, TILE, tw, TILE, o)
    .transpose(2, 4, 0, 1, 3, 5)
    .reshape(TILE * TILE, n * th * tw, o)
  )
  return _leading_matmul(A_2D, t)


def _tiles_matmul(v, u, contract_out: bool):
  # v (36, P, K) · u (36, K, O) → (36, P, O); contract_out: u is (36, O, K) and K is its last axis.
  return lax.dot_general(v, u, (((2,), (2 if contract_out else 1,)), ((0,), (0,))))


def _check(x_shape, w_shape):
  if not supports(x_shape, w_shape):
    raise ValueError(
      f"winograd_conv: needs a 3×3 kernel and H, W divisible by {TILE}; "
      f"got input {x_shape}, kernel {w_shape}"
    )


def _forward(v, u, x_shape):
  n, h, wd, _ = x_shape
  return output_transform(_tiles_matmul(v, u, contract_out=False), n, h // TILE, wd // TILE)


def winograd_conv(x: jax.Array, w: jax.Array) -> jax.Array:
  """y[n,h,w,o] = Σ_{a,b,i} x_pad[n, h+a, w+b, i] · w[a, b, i, o] (stride 1, 'SAME'), via F(4×4, 3×3)."""
  _check(x.shape, w.shape)
  return _forward(input_transform(x), kernel_transform(w), x.shape)


def conv_transformed(x: jax.Array, u: jax.Array) -> jax.Array:
  """`winograd_conv` with the kernel given already transformed, u = kernel_transform(w) (36, I, O).

  For inference, where the same kernel serves every sampling step: its transform (4× the kernel's
  size, a memory-bound pass over it) is then made once per sampler call instead of once per step.
  Training keeps `conv`, whose custom gradients reuse the input's transform.
  """
  if u.shape[0] != 36 or u.shape[1] != x.shape[-1] or x.shape[1] % TILE or x.shape[2] % TILE:
    raise ValueError(
      f"winograd.conv_transformed: needs u (36, {x.shape[-1]}, O) and H, W divisible by "
      f"{TILE}; got input {x.shape}, u {u.shape}"
    )
  return _forward(input_transform(x), u, x.shape)


def input_grad(dy: jax.Array, w: jax.Array) -> jax.Array:
  """∂L/∂x = the 'SAME' convolution of dy with w flipped and its channel axes swapped."""
  n, h, wd, _ = dy.shape
  m = _tiles_matmul(input_transform(dy), kernel_transform(w, flip=True), contract_out=True)
  return output_transform(m, n, h // TILE, wd // TILE)


def weight_grad(v: jax.Array, dy: jax.Array) -> jax.Array:
  """∂L/∂w from the input's transform v = input_transform(x): Σ_tiles Gᵀ[(Bᵀ d B) ⊙ (A dY Aᵀ)]G.

  y is linear in g through Aᵀ diag(Bᵀ d) G, so ∂L/∂g = Gᵀ diag(Bᵀ d) A ∂L/∂y: per tile position, a
  matmul over tiles (36, P, I)ᵀ · (36, P, O), then the (9 × 36) map Gᵀ · G back to the 3×3 taps.
  """
  m = lax.dot_general(v, output_gradient_transform(dy), (((1,), (1,)), ((0,), (0,))))  # (36, I, O)
  return _leading_matmul(np.kron(G, G).T, m).reshape(3, 3, *m.shape[1:])  # (9, 36) map


@jax.custom_vjp
def conv(x: jax.Array, w: jax.Array) -> jax.Array:
  """`winograd_conv` whose input and weight gradients are Winograd transforms too (the input's
  transform, 2.25× the input's size, is kept from the forward pass for the weight gradient)."""
  return winograd_conv(x, w)


def _conv_fwd(x, w):
  _check(x.shape, w.shape)
  v = input_transform(x)
  return _forward(v, kernel_transform(w), x.shape), (v, w)


def _conv_bwd(res, dy):
  v, w = res
  return input_grad(dy, w), weight_grad(v, dy)


conv.defvjp(_conv_fwd, _conv_bwd)
