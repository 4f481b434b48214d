"""The train state: params, their EMA and the optimizer state, created abstract first, then placed.

`TrainState` is a pytree; `abstract_train_state` gives its shapes and shardings without allocating
(what Orbax restores into), and `create_train_state` initialises it already sharded over the mesh.
EMA parameters live in the state and are updated inside the train step.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from sr3_jax import sharding
from sr3_jax.models import joint, unet

Array = jax.Array


@flax.struct.dataclass
class TrainState:
  step: Array
  params: Any
  ema_params: Any
  opt_state: Any
  skipped: Array  # steps skipped so far for non-finite loss or gradients
  consecutive_skips: Array


def learning_rate_schedule(ocfg) -> optax.Schedule:
  """Linear warmup from 0 to `lr` over `warmup_steps`, then constant (SR3: 10k steps, 1e-4)."""
  if ocfg.warmup_steps <= 0:
    return optax.constant_schedule(ocfg.lr)
  return optax.join_schedules(
    [optax.linear_schedule(0.0, ocfg.lr, ocfg.warmup_steps), optax.constant_schedule(ocfg.lr)],
    [ocfg.warmup_steps],
  )


def make_optimizer(ocfg) -> optax.GradientTransformation:
  lr = learning_rate_schedule(ocfg)
  if ocfg.name == "adam":
    opt = optax.adam(lr, b1=ocfg.b1, b2=ocfg.b2, eps=ocfg.eps)
  elif ocfg.name == "adamw":
    opt = optax.adamw(lr, b1=ocfg.b1, b2=ocfg.b2, eps=ocfg.eps, weight_decay=ocfg.weight_decay)
  else:
    raise ValueError(f"optim.name={ocfg.name!r}; choose 'adam' or 'adamw'")
  if ocfg.grad_clip:
    opt = optax.chain(optax.clip_by_global_norm(ocfg.grad_clip), opt)
  return opt


def ema_decay(ocfg, step: Array) -> Array:
  """EMA decay with warm-up: min(decay, (1 + step)/(10 + step)), so early averages are not stuck at init."""
  step = step.astype(jnp.float32)
  return jnp.minimum(ocfg.ema_decay, (1.0 + step) / (10.0 + step))


def init_state(config, model: unet.UNet | joint.JointModel, rng: Array) -> TrainState:
  params = joint.init_params(model, rng)
  opt_state = make_optimizer(config.optim).init(params)
  zero = jnp.zeros((), jnp.int32)
  return TrainState(
    step=zero,
    params=params,
    ema_params=params,
    opt_state=opt_state,
    skipped=zero,
    consecutive_skips=zero,
  )


def abstract_train_state(config, model: unet.UNet, mesh: Mesh) -> tuple[TrainState, Any]:
  """(abstract state with shardings attached, the shardings) — nothing is allocated."""
  return sharding.abstract_state(
    functools.partial(init_state, config, model),
    jax.random.key(config.seed),
    mesh,
    sharding.sharding_rules(config),
  )


def create_train_state(config, model: unet.UNet, mesh: Mesh) -> TrainState:
  """Abstract state first (jax.eval_shape), then the real one initialised already placed."""
  _, shardings = abstract_train_state(config, model, mesh)
  rng = jax.random.key(config.seed)
  return jax.jit(functools.partial(init_state, config, model), out_shardings=shardings)(rng)
