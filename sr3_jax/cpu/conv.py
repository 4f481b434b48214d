"""Stride-1 'SAME' convolutions for the CPU: im2col weight gradients, Winograd, sub-pixel upsampling.

The model reaches this module only through `sr3_jax.models.unet.conv_factory("cpu")` (that is,
`model.conv_impl="cpu"`, or `auto` on a single CPU device). Each layer's algorithm is then chosen
by its shapes (the `auto` rules below); the per-layer switches (`weight_grad`, `winograd`,
`upsample_conv`) exist for tests and benchmarks.

The weight gradient of a k×k convolution is a sum over every position of the batch,
    ∂L/∂w[a, b, i, o] = Σ_{n,h,w} x_pad[n, h+a, w+b, i] · ∂L/∂y[n, h, w, o],
a contraction of tens of thousands of positions into a small (k·k·C_in, C_out) matrix. XLA's CPU
backend lowers it to a convolution whose input features are the batch (a handful) and whose kernel
is the whole image, and runs it at 25–45 GFLOP/s on 32–128-pixel feature maps where the forward
convolution reaches 180. `im2col_weight_grad` computes the same sum in a `lax.scan` over chunks of
image rows: each step gathers the k·k shifted windows of ~`CHUNK_POSITIONS` positions (a patch
matrix that stays in cache) and multiplies it by that chunk of ∂L/∂y — 2–2.5× faster on the CPU.
On TPU and GPU the native gradient convolution is the right one, and on a CPU mesh of several
devices too (a sharded batch would all-reduce every chunk's partial sum): there conv_impl is `xla`.

A 3×3 convolution, its input gradient and its weight gradient can all run as Winograd
F(4×4, 3×3) (sr3_jax/cpu/winograd.py): `winograd="auto"` picks it for
float32 maps of at most 32×32 with at least 256 channels in and out, 256 positions in the batch
and a transformed kernel of at most 113 MB, where XLA's CPU convolution leaves the most matmul
speed unused; elsewhere XLA's stays. For inference from kernels transformed once per sampler call
(`PREPARED`) it also takes 64×64 maps with at least 128 channels.

`Conv(upsample=True)` is the 3×3 convolution after a 2× nearest upsampling. `upsample_conv="auto"`
runs it at the low resolution as one 2×2 convolution of the four output
phases (sr3_jax/cpu/subpixel.py: 16 multiplies per pixel pair where the direct form has 36),
unless the upsampled map's convolution is Winograd's.

`Conv` has nn.Conv's parameters (`kernel` (k, k, C_in, C_out) and `bias`, float32, the same
initialisers), so params and checkpoints do not depend on which weight gradient is used.
"""

from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from sr3_jax.cpu import subpixel, winograd
from sr3_jax.models import conv as model_conv
from sr3_jax.models.conv import upsample_nearest

WEIGHT_GRADS = ("auto", "xla", "im2col")
WINOGRADS = ("auto", "off", "on")
UPSAMPLE_CONVS = ("auto", "direct", "subpixel")
# Where `winograd="auto"` uses F(4×4, 3×3): float32 maps of at most 32×32
# (on larger ones its memory-bound transforms dominate) with at least 256 channels in and out (with
# fewer there is too little matmul work to save), at least 256 positions in the batch (with fewer
# tiles the kernel transform costs as much as the convolution) and C_in·C_out of at most 1536·512,
# that is a transformed kernel (36·C_in·C_out float32, 4× the kernel) of at most 113 MB: the paper
# 16→128 model's 1024-channel layers, with few tiles at batch 1, ran it out of 24 GB without this
# bound. Measured: docs/cpu_performance.md.
WINOGRAD_MAX_MAP = 32 * 32
WINOGRAD_MIN_CHANNELS = 256
WINOGRAD_MIN_POSITIONS = 256
WINOGRAD_MAX_KERNEL = 1536 * 512  # C_in·C_out
# Inference (a convolution whose transformed kernel is prepared once per sampler call, `PREPARED`):
# with no kernel transform per call and no backward pass, Winograd pays on 64×64 maps with at least
# 128 channels as well (isolated, batch 4: 1.8–1.9× XLA's forward convolution there; 128×128 maps of
# 64 channels gained ~10% only, and 128→64 lost). The reference network's forward pass: 12% faster.
WINOGRAD_MAX_MAP_PREPARED = 64 * 64
WINOGRAD_MIN_CHANNELS_PREPARED = 128
DIMS = ("NHWC", "HWIO", "NHWC")
# The variable collection of Winograd kernels transformed ahead of inference (`Conv`; unet.prepare_inference).
PREPARED = "winograd_kernels"
# Positions per scan step: the (positions, k·k·C_in) patch matrix of a 64-channel layer is then
# about 1 MB, inside a core's L2 cache. Measured best of 512/1024/2048 on the 2-core dev CPU.
CHUNK_POSITIONS = 512


def _conv(x, w):
  if w.shape[:2] == (
    1,
    1,
  ):  # a matmul over channels (XLA's CPU 1×1 convolution: ~70 GFLOP/s, dot ~230)
    return lax.dot_general(x, w[0, 0], (((x.ndim - 1,), (0,)), ((), ())))
  return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DIMS)


def rows_per_chunk(batch: int, height: int, width: int, positions: int = CHUNK_POSITIONS) -> int:
  """The largest divisor of `height` whose rows × width × batch stays within `positions`."""
  rows = max(1, min(height, positions // max(1, batch * width)))
  while height % rows:
    rows -= 1
  return rows


def chunk_shape(
  batch: int, height: int, width: int, positions: int = CHUNK_POSITIONS
) -> tuple[int, int]:
  """(examples, rows) per scan step: `rows` image rows (a divisor of `height`) of one example when a
  map holds at least `positions` positions, else whole maps of as many examples (a divisor of
  `batch`) as fit in `positions`."""
  if height * width >= positions:
    return 1, rows_per_chunk(1, height, width, positions)
  examples = max(1, min(batch, positions // (height * width)))
  while batch % examples:
    examples -= 1
  return examples, height


def im2col_weight_grad(
  x: jax.Array,
  dy: jax.Array,
  kernel_size: int,
  rows: int | None = None,
  padding: tuple[int, int] | None = None,
) -> jax.Array:
  """∂L/∂w of a stride-1 k×k convolution (x (N,H,W,I), dy (N,H',W',O)) → (k, k, I, O).

  `padding` (before, after), on both spatial axes, is 'SAME''s when None (then H' = H); the output
  is whatever size dy has, H' = H + before + after - k + 1.

  A scan over chunks of ~`CHUNK_POSITIONS` positions (`chunk_shape`; `rows` forces chunks of that
  many rows of one example): each step gathers the chunk's (positions, k·k·I) patch matrix and
  adds ∂L/∂y's chunk, channel-major (O, positions), times it. Both operands of that matmul are in
  the row-major (M, K)·(K, N) form; contracting the patch matrix over its leading axis instead ran
  at half the speed on the CPU.
  """
  n, _, _, ci = x.shape
  _, h, w, co = dy.shape
  k = kernel_size
  lo, hi = ((k - 1) // 2, k - 1 - (k - 1) // 2) if padding is None else padding
  if x.shape[1] + lo + hi - k + 1 != h or x.shape[2] + lo + hi - k + 1 != w:
    raise ValueError(
      f"im2col_weight_grad: a {k}×{k} kernel with padding {(lo, hi)} maps {x.shape} "
      f"to another size than dy {dy.shape}"
    )
  examples, rows = (1, rows) if rows else chunk_shape(n, h, w)
  chunks = h // rows
  xp = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
  dy_t = dy.transpose(3, 0, 1, 2)  # (O, N, H, W)

  def step(acc, i):
    b, r = (i // chunks) * examples, (i % chunks) * rows
    window = lax.dynamic_slice(xp, (b, r, 0, 0), (examples, rows + k - 1, w + k - 1, ci))
    cols = jnp.concatenate(
      [window[:, a : a + rows, c : c + w, :] for a in range(k) for c in range(k)], axis=-1
    ).reshape(-1, k * k * ci)  # (positions, k·k·I)
    dy_rows = lax.dynamic_slice(dy_t, (0, b, r, 0), (co, examples, rows, w)).reshape(co, -1)
    return acc + jnp.dot(dy_rows, cols, preferred_element_type=jnp.float32), None

  acc, _ = lax.scan(
    step, jnp.zeros((co, k * k * ci), jnp.float32), jnp.arange(n // examples * chunks)
  )
  return acc.reshape(co, k, k, ci).transpose(1, 2, 3, 0).astype(x.dtype)


def use_im2col(weight_grad: str) -> bool:
  if weight_grad not in WEIGHT_GRADS:
    raise ValueError(f"Conv weight_grad={weight_grad!r}; choose one of {WEIGHT_GRADS}")
  return weight_grad in ("auto", "im2col")


def use_winograd(
  mode: str, x_shape, kernel_shape, dtype=jnp.float32, prepared: bool = False
) -> bool:
  """Whether `Conv` runs F(4×4, 3×3) Winograd for this input and kernel (module docstring);
  `prepared`: for inference, from a kernel transformed once per sampler call (larger maps then)."""
  if mode not in WINOGRADS:
    raise ValueError(f"Conv winograd={mode!r}; choose one of {WINOGRADS}")
  if mode == "off" or not winograd.supports(x_shape, kernel_shape):
    return False
  if mode == "auto":
    max_map, min_channels = (
      (WINOGRAD_MAX_MAP_PREPARED, WINOGRAD_MIN_CHANNELS_PREPARED)
      if prepared
      else (WINOGRAD_MAX_MAP, WINOGRAD_MIN_CHANNELS)
    )
    return (
      jnp.dtype(dtype) == jnp.float32  # its transforms need float32
      and x_shape[1] * x_shape[2] <= max_map
      and min(kernel_shape[2:]) >= min_channels
      and x_shape[0] * x_shape[1] * x_shape[2] >= WINOGRAD_MIN_POSITIONS
      and kernel_shape[2] * kernel_shape[3] <= WINOGRAD_MAX_KERNEL
    )
  return True


@jax.custom_vjp
def conv_im2col_grad(x: jax.Array, w: jax.Array) -> jax.Array:
  """A stride-1 'SAME' convolution (odd square kernel) whose weight gradient is `im2col_weight_grad`."""
  return _conv(x, w)


def _fwd(x, w):
  return _conv(x, w), (x, w)


def _bwd(res, dy):
  x, w = res
  dx = jax.vjp(lambda x: _conv(x, w), x)[1](dy)[0]  # XLA's input gradient is already fast
  return dx, im2col_weight_grad(x, dy, w.shape[0])


conv_im2col_grad.defvjp(_fwd, _bwd)


def use_subpixel(
  mode: str, winograd_mode: str, x_shape, kernel_shape, dtype=jnp.float32, prepared: bool = False
) -> bool:
  """Whether `Conv(upsample=True)` runs `subpixel.upsample_conv` on x rather than convolving the
  upsampled map. `auto`: for 3×3 kernels, unless the upsampled map's convolution would be Winograd
  (fewer multiplies still)."""
  if mode not in UPSAMPLE_CONVS:
    raise ValueError(f"Conv upsample_conv={mode!r}; choose one of {UPSAMPLE_CONVS}")
  if mode == "direct" or tuple(kernel_shape[:2]) != (3, 3):
    return False
  if mode == "auto":
    up_shape = (x_shape[0], 2 * x_shape[1], 2 * x_shape[2], x_shape[3])
    return not use_winograd(winograd_mode, up_shape, kernel_shape, dtype, prepared)
  return True


class Conv(model_conv.Conv):
  """nn.Conv(features, (k, k), padding='SAME') with a choice of algorithms (module docstring).

  A Winograd convolution applied with the `PREPARED` collection mutable stores its transformed
  kernel there ("kernel", (36, C_in, C_out)); applied with that collection given, it uses the
  stored transform instead of making it again. That is for inference, where one kernel serves every
  sampling step; gradients do not reach params through a stored transform.

  With `upsample=True` the layer is this convolution of `upsample_nearest(x)`; where
  `use_subpixel` says so it runs at x's resolution instead (`subpixel.upsample_conv`, same kernel).
  """

  weight_grad: str = "auto"
  winograd: str = "auto"
  upsample_conv: str = "auto"

  @nn.compact
  def __call__(self, x):
    x, kernel, bias = self.params_and_input(x)
    prepared = self.has_variable(PREPARED, "kernel") or self.is_mutable_collection(PREPARED)
    if self.upsample:
      if use_subpixel(self.upsample_conv, self.winograd, x.shape, kernel.shape, x.dtype, prepared):
        grad = im2col_weight_grad if use_im2col(self.weight_grad) else None
        return subpixel.upsample_conv(x, kernel, grad) + bias
      x = upsample_nearest(x)
    if use_winograd(self.winograd, x.shape, kernel.shape, x.dtype, prepared):
      if self.has_variable(PREPARED, "kernel"):
        y = winograd.conv_transformed(x, self.get_variable(PREPARED, "kernel"))
      elif self.is_mutable_collection(PREPARED):
        u = winograd.kernel_transform(kernel)
        self.put_variable(PREPARED, "kernel", u)
        y = winograd.conv_transformed(x, u)
      else:
        y = winograd.conv(x, kernel)
    elif use_im2col(self.weight_grad):
      y = conv_im2col_grad(x, kernel)
    else:
      y = _conv(x, kernel)
    return y + bias
