import functools

import pytest

from sr3_jax.cpu import conv as cpu_conv
from sr3_jax.models import conv as model_conv
from sr3_jax.models import unet


@pytest.fixture
def force_cpu_kernels(monkeypatch):
  """force(**switches): a U-Net with conv_impl="cpu" then builds every convolution as the CPU Conv
  with these per-layer switches (e.g. winograd="on"), whatever the layer's shape; conv_impl="xla"
  stays XLA's convolution."""

  def force(**switches):
    cls = functools.partial(cpu_conv.Conv, **switches)
    monkeypatch.setattr(
      unet, "conv_factory", lambda impl: cls if impl == "cpu" else model_conv.Conv
    )

  return force
