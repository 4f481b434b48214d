"""The U-Net's stride-1 'SAME' convolutions: XLA's own, and how `model.conv_impl` is decided.

`Conv` is a plain convolution with an optional 2× nearest-neighbour upsampling of its input first.
The CPU kernels (`sr3_jax.cpu.conv.Conv`: Winograd, im2col weight gradients, sub-pixel upsampling)
subclass it, so both declare the same parameters (`kernel` (k, k, C_in, C_out) and `bias`, float32,
the same initialisers) and params and checkpoints do not depend on the implementation;
`unet.conv_factory` picks one. `resolve_conv_impl` decides `auto` once, from the devices a model
will run on (`unet.build`): `cpu` on a single CPU device, `xla` everywhere else.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ("auto", "xla", "cpu")
DIMS = ("NHWC", "HWIO", "NHWC")


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

  def params_and_input(self, x):
    """(x, kernel, bias) in the compute dtype; declares the parameters (call inside __call__)."""
    k = self.kernel_size
    if k % 2 != 1:
      raise ValueError(f"Conv: kernel_size={k} must be odd for 'SAME' padding")
    kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
    return nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)

  @nn.compact
  def __call__(self, x):
    x, kernel, bias = self.params_and_input(x)
    if self.upsample:
      x = upsample_nearest(x)
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=DIMS) + bias


def resolve_conv_impl(impl: str, devices: Sequence[Any]) -> str:
  """`model.conv_impl` with `auto` decided by the devices: cpu on one CPU device, else xla."""
  if impl not in CONV_IMPLS:
    raise ValueError(f"model.conv_impl={impl!r}; choose one of {CONV_IMPLS}")
  if impl != "auto":
    return impl
  devices = list(devices)
  return "cpu" if len(devices) == 1 and devices[0].platform == "cpu" else "xla"
