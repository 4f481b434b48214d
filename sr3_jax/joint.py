"""Joint fine-tuning of adjacent cascade stages, with the inter-stage consistency term.

A joint run is an ordinary `sr3 train` run (the same train state, mesh, Orbax checkpoints,
preemption handling and exact resume) whose config (`configs.joint_config`; a cascade file's
`FILE.py:joint=sr32+sr64`) lists adjacent SR stages, lowest first. Its params are
{stage: U-Net params} (sr3_jax/models/joint.py), initialised from each stage's independent run
(the EMA params of INIT_ROOT/NAME). One step takes a batch of HR images at the top stage's size;
each stage's HR image is that batch downsampled to its size (SR3's bicubic degradation), and:

- the lowest stage trains on its usual pairs (its HR image and that downsampled by its factor);
- stage k, below the top, samples x_k from its input with `joint.sample_steps` steps of
  `joint.sampler` (inference mode, its input not augmented), and x_k is stage k+1's LR input:
  stage k+1 learns to super-resolve what the cascade gives it, with its own conditioning
  augmentation on top, against the true HR image;
- stage k+1's loss adds the inter-stage term λ·‖D(x̂_{k+1}) − x_k‖² (`joint.weight`; x̂_{k+1} is
  its x̂0 at the training level, clipped, D its bicubic degradation; sr3_jax/consistency.py).

The loss is the sum of the stages' losses. `joint.grad`:
- `stop` (default): x_k is data (stop_gradient). Each stage's gradient is its own loss's, memory
  is one forward pass per sampler step with no activations kept, and the lower stage keeps
  learning to match the truth, which is what the cascade's other users of it need.
- `unroll`: stage k+1's loss (its own and the inter-stage term) also backpropagates through the
  sample_steps sampler steps into stage k, which then learns to produce what stage k+1 handles
  best; it keeps sample_steps forward activations of stage k per step.

`joint.shared_noise`: stage k's diffusion noise is the top stage's box-downsampled by the factor F
between them and multiplied by F (a mean of F² independent unit normals has variance 1/F², so the
result is again i.i.d. unit normal): the stages see correlated noise. Only training noise is
shared. `joint.feed=False` with `joint.weight=0` trains every stage on the truth alone:
independent fine-tuning under the same schedule, the control for a joint result.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from etils import epath

from sr3_jax import checkpoint, diffusion, distill, inference, paths
from sr3_jax.data import degrade
from sr3_jax.models.joint import JointModel, is_joint  # noqa: F401  (public here too)

Array = jax.Array
GRADS = ("stop", "unroll")
# Fields a member must share with the run it starts from.
SAME = ("model", "data.image_size", "data.factor", "diffusion.diffuse", "diffusion.residual_scale",
        "diffusion.target", "diffusion.process", "augment")  # fmt: skip


def member_config(config, name: str) -> ml_collections.ConfigDict:
  """Stage `name`'s own training config inside a joint config."""
  if name not in config.joint.stages:
    raise ValueError(
      f"the joint run holds stages {list(config.joint.stages)}, not {name!r}; point stage "
      f"{name!r} at its own workdir"
    )
  return ml_collections.ConfigDict(config.joint.members[name].to_dict())


def factors_above(config) -> list[int]:
  """Per member: the factor from the top stage's size down to that member's output size."""
  f = [int(config.joint.members[n].data.factor) for n in config.joint.stages]
  return [math.prod(f[k + 1 :]) for k in range(len(f))]


def validate(config) -> None:
  """A joint config's own checks: one error naming the value and the fix."""
  j = config.joint
  names = list(j.stages)
  if len(names) < 2:
    raise ValueError(f"joint.stages={names}: joint fine-tuning needs two or more adjacent stages")
  members = [j.members[n] for n in names]
  for n, m in zip(names, members):
    if m.model.conditioning == "none":
      raise ValueError(
        f"joint stage {n!r} is a base stage: its samples have no HR truth for the stage above "
        "to train against; fine-tune SR stages only"
      )
  for (a, ma), (b, mb) in zip(zip(names, members), zip(names[1:], members[1:])):
    if ma.data.image_size * mb.data.factor != mb.data.image_size:
      raise ValueError(
        f"joint stages do not chain: {a!r} outputs {ma.data.image_size}² but {b!r} takes "
        f"{mb.data.image_size // mb.data.factor}² inputs; list adjacent stages, lowest first"
      )
  if config.data.image_size != members[-1].data.image_size:
    raise ValueError(
      f"data.image_size={config.data.image_size} but the top joint stage {names[-1]!r} outputs "
      f"{members[-1].data.image_size}²; the batch is the top stage's HR images"
    )
  if j.grad not in GRADS:
    raise ValueError(f"joint.grad={j.grad!r}; choose one of {GRADS}")
  if int(j.sample_steps) < 1:
    raise ValueError(f"joint.sample_steps={j.sample_steps} must be ≥ 1")
  if float(j.weight) < 0:
    raise ValueError(f"joint.weight={j.weight} must be ≥ 0")
  if config.train.get("sample_every"):
    raise ValueError(
      "train.sample_every: a joint run has no single sampler; set it to 0 and evaluate with "
      "`sr3 cascade --propagation`"
    )
  if distill.is_distillation(config):
    raise ValueError("a joint run cannot also distill; set distill.teacher=''")


def load_init(config) -> dict[str, Any]:
  """{stage: EMA params of INIT_ROOT/stage} on the local devices, each checked against its
  member config."""
  out = {}
  for name in config.joint.stages:
    path = str(epath.Path(paths.resolve(config.joint.init_root)) / name)
    try:
      saved, _, params, _ = checkpoint.load_for_inference(path)
    except FileNotFoundError as e:
      raise FileNotFoundError(
        f"joint stage {name!r} starts from its own run: {e}. Train it first (sr3 train --config "
        f"CASCADE.py:stage={name} --workdir {path}) or set joint.init_root"
      ) from None
    normal = lambda c: json.loads(json.dumps(c.to_dict()))
    diff = distill.difference(normal(member_config(config, name)), normal(saved), SAME)
    if diff:
      field, mine, theirs = diff
      raise ValueError(
        f"joint stage {name!r}: {path} is a run of another config ({field} is {theirs!r} there "
        f"and {mine!r} here); point joint.init_root at the cascade's stage runs"
      )
    out[name] = params
  return out


def _box_down(x: Array, f: int) -> Array:
  if f == 1:
    return x
  b, h, w, c = x.shape
  return x.reshape(b, h // f, f, w // f, f, c).mean(axis=(2, 4))


def make_loss_fn(
  model: JointModel, config, dropout_key_fn: Callable[[Array], Array] = lambda k: k
) -> Callable[..., tuple[Array, diffusion.LossOutput]]:
  """loss_fn(params, batch, rng, train=True) → (Σ stage losses, LossOutput summed per example)."""
  validate(config)
  j = config.joint
  names = list(j.stages)
  members = [member_config(config, n) for n in names]
  feed, unroll, shared = bool(j.feed), j.grad == "unroll", bool(j.shared_noise)
  losses, samplers_, grids = [], [], []
  for k, (m, net) in enumerate(zip(members, model.unets)):
    if k and feed:  # the inter-stage term, against the sample the stage is fed
      m.diffusion.consistency_weight = float(j.weight)
    apply_fn = lambda p, z, g, c, train=False, rngs=None, _net=net, **kw: _net.apply(
      {"params": p}, z, g, c, train=train, rngs=rngs, **kw
    )
    losses.append(diffusion.make_loss_fn(apply_fn, m, dropout_key_fn))
    if feed and k + 1 < len(names):
      sampler = inference.sampler_config(m, name=j.sampler)
      samplers_.append(inference.make_super_resolve(m, net, sampler))
      grids.append(inference.inference_grid(m, int(j.sample_steps)))
  above = factors_above(config)

  def loss_fn(params, batch: dict[str, Array], rng: Array, train: bool = True):
    hr = batch["hr"].astype(jnp.float32)
    keys = jax.random.split(rng, 2 * len(names) + 1)
    top_noise = jax.random.normal(keys[-1], hr.shape, jnp.float32) if shared else None
    total, per_example, lr, out = 0.0, 0.0, None, None
    for k, name in enumerate(names):
      f = above[k]
      hr_k = hr if f == 1 else degrade.downsample(hr, f, value_range=(-1.0, 1.0))
      noise = None if top_noise is None else f * _box_down(top_noise, f)
      loss_k, out = losses[k](
        params[name], {**batch, "hr": hr_k}, keys[2 * k], train, lr=lr, noise=noise
      )
      total = total + loss_k
      per_example = per_example + out.loss_per_example
      if feed and k + 1 < len(names):
        given = lr
        if given is None:
          given = degrade.downsample(hr_k, int(members[k].data.factor), value_range=(-1.0, 1.0))
        p = params[name] if unroll else jax.lax.stop_gradient(params[name])
        x = samplers_[k](p, given, grids[k], keys[2 * k + 1])
        lr = x if unroll else jax.lax.stop_gradient(x)
    return total, diffusion.LossOutput(loss=total, loss_per_example=per_example, gamma=out.gamma)

  return loss_fn
