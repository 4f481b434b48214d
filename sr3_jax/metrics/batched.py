"""A metric network's jitted function over the local devices in fixed-size batches.

The weights are replicated on a one-axis mesh of the local devices and the images split over it;
every call has the same batch shape (the last batch is padded and its padding dropped), so the
program compiles once per image size.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


class Batched:
  """fn(params, *images) → per-image outputs, run in batches of `batch` (rounded up to a multiple
  of the local device count)."""

  def __init__(self, fn: Callable, params: Any, batch: int = 32):
    devices = jax.local_devices()
    self.mesh = Mesh(np.asarray(devices), ("data",))
    self.batch = -(-batch // len(devices)) * len(devices)
    self.sharding = NamedSharding(self.mesh, P("data"))
    self.params = jax.device_put(params, NamedSharding(self.mesh, P()))
    self.fn = jax.jit(fn)

  def __call__(self, *arrays: np.ndarray) -> np.ndarray:
    """Outputs for all N images, as float64 numpy, in order."""
    arrays = [np.asarray(a, np.float32) for a in arrays]
    out = []
    for i in range(0, len(arrays[0]), self.batch):
      parts = [a[i : i + self.batch] for a in arrays]
      n = len(parts[0])
      pad = [(0, self.batch - n)] + [(0, 0)] * (parts[0].ndim - 1)
      parts = [jax.device_put(np.pad(p, pad), self.sharding) for p in parts]
      out.append(np.asarray(self.fn(self.params, *parts), np.float64)[:n])
    return np.concatenate(out) if out else np.zeros((0,))
