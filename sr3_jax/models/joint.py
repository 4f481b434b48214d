"""Several cascade stages' U-Nets as one trainable model (joint fine-tuning, sr3_jax/joint.py).

The params are {stage name: that stage's U-Net params}: one pytree, so the train state, its EMA,
optimizer, shardings and Orbax checkpoints are the ordinary ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from sr3_jax.models import unet

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class JointModel:
  names: tuple[str, ...]  # lowest stage first
  unets: tuple[unet.UNet, ...]

  def __getitem__(self, name: str) -> unet.UNet:
    return self.unets[self.names.index(name)]

  def init_params(self, rng: Array) -> dict[str, Any]:
    keys = jax.random.split(rng, len(self.names))
    return {n: unet.init_params(m, k) for n, m, k in zip(self.names, self.unets, keys)}


def is_joint(config) -> bool:
  return bool(config.get("joint") and config.joint.get("stages"))


def build(config, devices=None) -> unet.UNet | JointModel:
  """The model a training config trains: its U-Net, or for a joint config every member's."""
  if not is_joint(config):
    return unet.build(config.model, devices)
  j = config.joint
  return JointModel(
    names=tuple(j.stages), unets=tuple(unet.build(j.members[n].model, devices) for n in j.stages)
  )


def init_params(model: unet.UNet | JointModel, rng: Array) -> Any:
  return model.init_params(rng) if isinstance(model, JointModel) else unet.init_params(model, rng)


def count_params(config) -> int:
  """Parameters of the model a training config trains (every member's, for a joint config)."""
  if not is_joint(config):
    return unet.count_params(config.model)
  return sum(unet.count_params(config.joint.members[n].model) for n in config.joint.stages)
