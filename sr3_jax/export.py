"""`sr3 export`: a checkpoint's whole sampler (U-Net, N steps, bicubic upsampling, the residual and
clipping) as one serialized `jax.export` program, written with its parameters to one file that
`sr3_jax.exported` (or twenty lines of plain JAX) runs without the training code.

The program is exported for fixed shapes (batch, LR height and width) and for the platforms
asked (default: this machine's); one file may hold the program for cpu, cuda and tpu at once.
Exported for the CPU alone it keeps the CPU convolutions a one-CPU-device checkpoint would use;
for any other platform the convolutions are XLA's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from sr3_jax import exported, inference
from sr3_jax.checkpoint import load_for_inference
from sr3_jax.models import unet

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def export(
  checkpoint: str,
  output: str,
  steps: int | None = None,
  lr_size: tuple[int, int] = (16, 16),
  batch: int = 1,
  dtype: str | None = None,
  sampler: str | None = None,
  platforms: tuple[str, ...] | None = None,
) -> dict:
  """Writes the export to `output`; returns its meta."""
  platforms = tuple(platforms or (jax.default_backend(),))
  bad = [p for p in platforms if p not in PLATFORMS]
  if bad:
    raise ValueError(f"--platforms {','.join(bad)}: choose from {', '.join(PLATFORMS)}")
  if batch < 1:
    raise ValueError(f"--batch {batch}: give at least 1")
  config, model, params, step = load_for_inference(checkpoint)
  factor = int(config.data.factor)
  h, w = (int(v) for v in lr_size)
  down = 2 ** (len(config.model.channel_mult) - 1)
  multiple = down // math.gcd(down, factor)
  if h < 1 or w < 1 or h % multiple or w % multiple:
    raise ValueError(
      f"--lr-size {h},{w}: the U-Net takes HR sizes that are multiples of {down}, so LR sizes "
      f"that are multiples of {multiple} (×{factor} upsampling); use e.g. "
      f"--lr-size {max(multiple, h // multiple * multiple)},{max(multiple, w // multiple * multiple)}"
    )
  if sampler:
    config.sampling.sampler = sampler
  steps = int(steps or config.sampling.steps)
  if dtype:
    config.model.dtype = dtype
  conv = model.config.conv_impl if platforms == ("cpu",) else "xla"
  model = unet.UNet(dataclasses.replace(model.config, dtype=config.model.dtype, conv_impl=conv))
  sr_fn = inference.make_super_resolve(config, model)
  levels = np.asarray(inference.inference_grid(config, steps))
  leaves, treedef = jax.tree.flatten(jax.device_get(params))
  leaves = [np.asarray(x) for x in leaves]

  def program(*args):
    *flat, lr, key_data = args
    tree = jax.tree.unflatten(treedef, flat)
    return sr_fn(tree, lr, jnp.asarray(levels), jax.random.wrap_key_data(key_data))

  key_data = jax.random.key_data(jax.random.key(0))
  specs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves]
  specs += [
    jax.ShapeDtypeStruct((batch, h, w, 3), jnp.float32),
    jax.ShapeDtypeStruct(key_data.shape, key_data.dtype),
  ]
  exp = jax.export.export(jax.jit(program), platforms=platforms)(*specs)
  meta = {
    "format": exported.FORMAT,
    "checkpoint": str(checkpoint),
    "step": int(step),
    "factor": factor,
    "steps": steps,
    "sampler": config.sampling.sampler,
    "target": config.diffusion.target,
    "dtype": config.model.dtype,
    "conv_impl": conv,
    "platforms": list(platforms),
    "lr_shape": [batch, h, w, 3],
    "hr_shape": [batch, h * factor, w * factor, 3],
    "key_shape": list(key_data.shape),
    "num_params": len(leaves),
    "jax_version": jax.__version__,
  }
  arrays = {f"param_{i:05d}": x for i, x in enumerate(leaves)}
  out = pathlib.Path(output)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_name(out.name + ".partial")
  with open(tmp, "wb") as f:  # a file object: np.savez adds no suffix
    np.savez(
      f,
      meta=np.asarray(json.dumps(meta)),
      program=np.frombuffer(exp.serialize(), np.uint8),
      **arrays,
    )
  tmp.replace(out)
  return meta
