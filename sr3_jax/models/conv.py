"""The U-Net's stride-1 'SAME' convolutions, and the one seam to the CPU kernels.

`Conv` is a plain convolution (XLA's), with an optional 2× nearest-neighbour upsampling of its
input first. `conv_factory(impl)` gives the class every U-Net block builds its convolutions with:
`xla` → `Conv`; `cpu` → `sr3_jax.cpu.conv.Conv` (Winograd, im2col weight gradients, sub-pixel
upsampling, each chosen by the layer's shapes). Both declare the same parameters (`kernel`
(k, k, C_in, C_out) and `bias`, float32, the same initialisers), so params and checkpoints do not
depend on the implementation. `resolve_conv_impl` decides `auto` once, from the devices a model
will run on (`unet.build`): `cpu` on a single CPU device, `xla` everywhere else.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from sr3_jax.cpu import conv as cpu_conv

CONV_IMPLS = ("auto", "xla", "cpu")
# The variable collection of kernels transformed ahead of inference (CPU Winograd only).
PREPARED = cpu_conv.PREPARED


def upsample_nearest(x: jax.Array) -> jax.Array:
  """2× nearest-neighbour upsampling by broadcast + reshape (no gather, no transposed conv)."""
  b, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
  return x.reshape(b, 2 * h, 2 * w, c)


class Conv(nn.Module):
  """A k×k stride-1 'SAME' convolution (k odd), of `upsample_nearest(x)` when `upsample`."""

  features: int
  kernel_size: int = 3
  dtype: Any = None
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros
  upsample: bool = False

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    if k % 2 != 1:
      raise ValueError(f"Conv: kernel_size={k} must be odd for 'SAME' padding")
    kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    if self.upsample:
      x = upsample_nearest(x)
    y = lax.conv_general_dilated(
      x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + bias


def resolve_conv_impl(impl: str, devices: Sequence[Any]) -> str:
  """`model.conv_impl` with `auto` decided by the devices: cpu on one CPU device, else xla."""
  if impl not in CONV_IMPLS:
    raise ValueError(f"model.conv_impl={impl!r}; choose one of {CONV_IMPLS}")
  if impl != "auto":
    return impl
  devices = list(devices)
  return "cpu" if len(devices) == 1 and devices[0].platform == "cpu" else "xla"


def conv_factory(impl: str):
  """The convolution class for a resolved implementation (an unresolved `auto` is `xla`)."""
  return cpu_conv.Conv if impl == "cpu" else Conv
