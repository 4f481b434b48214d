"""Running a sampler written by `sr3 export`, with nothing of sr3_jax's training code: this module
imports only json, numpy and jax.

The file is an uncompressed NumPy archive (.npz): `meta` (JSON: shapes, factor, steps, sampler,
platforms, the checkpoint it came from), `program` (the serialized `jax.export` program: StableHLO
for each platform it was exported for) and `param_00000`, `param_00001`, … (the EMA parameters,
flattened in the order the program takes them). The program's inputs after the parameters are
an LR batch (B, h, w, 3) float32 in [−1, 1] and a PRNG key's data (uint32, as
`jax.random.key_data(jax.random.key(seed))`); its output is the HR batch (B, h·f, w·f, 3) float32
in [−1, 1].
"""

from __future__ import annotations

import json

import jax
import numpy as np

FORMAT = "sr3-exported/1"


class ExportedSampler:
  """A loaded export: call it with an LR batch and a key's data."""

  def __init__(self, path):
    self.path = str(path)
    try:
      with np.load(path, allow_pickle=False) as f:
        self.meta = json.loads(str(f["meta"]))
        program = bytearray(f["program"].tobytes())
        n = int(self.meta.get("num_params", -1))
        self.params = [f[f"param_{i:05d}"] for i in range(n)]
    except (OSError, ValueError, KeyError) as e:
      raise ValueError(
        f"{path} is not an sr3 export ({type(e).__name__}: {e}); write one with sr3 export"
      ) from None
    if self.meta.get("format") != FORMAT:
      raise ValueError(f"{path}: format {self.meta.get('format')!r}; this sr3_jax reads {FORMAT}")
    self.program = jax.export.deserialize(program)
    self.lr_shape = tuple(self.meta["lr_shape"])
    self.hr_shape = tuple(self.meta["hr_shape"])
    self.key_shape = tuple(self.meta["key_shape"])
    self.factor = int(self.meta["factor"])
    self.steps = int(self.meta["steps"])

  def __call__(self, lr, key_data) -> np.ndarray:
    """HR samples (B, h·f, w·f, 3) float32 in [−1, 1] for an LR batch of the exported shape."""
    lr, key_data = np.asarray(lr), np.asarray(key_data)
    if lr.shape != self.lr_shape or lr.dtype != np.float32:
      raise ValueError(
        f"{self.path} takes LR batches of shape {self.lr_shape} float32 in [-1, 1]; got "
        f"{lr.shape} {lr.dtype}: pad or batch the input to that shape, or export another with "
        f"sr3 export --lr-size {self.lr_shape[1]},{self.lr_shape[2]} --batch N"
      )
    if key_data.shape != self.key_shape or key_data.dtype != np.uint32:
      raise ValueError(
        f"{self.path} takes a PRNG key's data of shape {self.key_shape} uint32 "
        f"(jax.random.key_data(jax.random.key(seed))); got {key_data.shape} {key_data.dtype}"
      )
    return np.asarray(self.program.call(*self.params, lr, key_data))
