"""The train state and one SPMD update step over a device mesh.

The step is a single `jax.jit` over a `Mesh` with a `data` axis: the batch is sharded over
`data`, the state is replicated (FSDP rules come with the training-at-scale work), the state is
donated, and nothing returns to the host inside the step. Randomness is
`fold_in(key(seed), step)`. EMA parameters live in the state and are updated inside the step.
A step whose loss or gradients are not finite leaves the state unchanged and is counted.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sr3_jax import diffusion
from sr3_jax.models import unet

Array = jax.Array


@flax.struct.dataclass
class TrainState:
  step: Array
  params: Any
  ema_params: Any
  opt_state: Any
  skipped: Array          # steps skipped so far for non-finite loss or gradients
  consecutive_skips: Array


def learning_rate_schedule(ocfg) -> optax.Schedule:
  """Linear warmup from 0 to `lr` over `warmup_steps`, then constant (SR3: 10k steps, 1e-4)."""
  if ocfg.warmup_steps <= 0:
    return optax.constant_schedule(ocfg.lr)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, ocfg.lr, ocfg.warmup_steps), optax.constant_schedule(ocfg.lr)],
      [ocfg.warmup_steps])


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


def make_mesh(config, devices=None) -> Mesh:
  """A ('data', 'fsdp') mesh from config.mesh; data = -1 takes every device not used by fsdp."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  fsdp = int(config.mesh.get("fsdp", 1))
  data = int(config.mesh.get("data", -1))
  if data == -1:
    if devices.size % fsdp:
      raise ValueError(f"mesh.fsdp={fsdp} does not divide the {devices.size} devices")
    data = devices.size // fsdp
  if data * fsdp != devices.size:
    raise ValueError(f"mesh.data={data} × mesh.fsdp={fsdp} != {devices.size} devices")
  return Mesh(devices.reshape(data, fsdp), ("data", "fsdp"))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches are split over every device: the leading axis over ('data', 'fsdp')."""
  return NamedSharding(mesh, P(("data", "fsdp")))


def apply_fn_for(model: unet.UNet) -> Callable[..., Array]:
  """model.apply in the (params, z, γ, cond, train, rngs) form the loss and samplers use."""
  def apply_fn(params, z, gamma, cond, train=False, rngs=None):
    return model.apply({"params": params}, z, gamma, cond, train=train, rngs=rngs)
  return apply_fn


def init_state(config, model: unet.UNet, rng: Array) -> TrainState:
  params = unet.init_params(model, rng)
  opt_state = make_optimizer(config.optim).init(params)
  zero = jnp.zeros((), jnp.int32)
  return TrainState(step=zero, params=params, ema_params=params, opt_state=opt_state,
                    skipped=zero, consecutive_skips=zero)


def create_train_state(config, model: unet.UNet, mesh: Mesh) -> TrainState:
  """Abstract state first (jax.eval_shape), then the real one initialised already placed."""
  rng = jax.random.key(config.seed)
  abstract = jax.eval_shape(functools.partial(init_state, config, model), rng)
  replicated = NamedSharding(mesh, P())
  shardings = jax.tree_util.tree_map(lambda _: replicated, abstract)
  return jax.jit(functools.partial(init_state, config, model), out_shardings=shardings)(rng)


def _tree_where(pred: Array, a: Any, b: Any) -> Any:
  return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


def make_train_step(config, model: unet.UNet, mesh: Mesh):
  """Returns the jitted step(state, batch) → (state, metrics); the state is donated."""
  loss_fn = diffusion.make_loss_fn(apply_fn_for(model), config)
  optimizer = make_optimizer(config.optim)
  lr_fn = learning_rate_schedule(config.optim)
  base_key = jax.random.key(config.seed)

  def step_fn(state: TrainState, batch: dict[str, Array]):
    rng = jax.random.fold_in(base_key, state.step)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng)
    grad_norm = optax.tree.norm(grads)
    updates, new_opt = optimizer.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    decay = ema_decay(config.optim, state.step)
    new_ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, new_params)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = TrainState(
        step=state.step + 1,
        params=_tree_where(finite, new_params, state.params),
        ema_params=_tree_where(finite, new_ema, state.ema_params),
        opt_state=_tree_where(finite, new_opt, state.opt_state),
        skipped=state.skipped + (~finite).astype(jnp.int32),
        consecutive_skips=jnp.where(finite, 0, state.consecutive_skips + 1),
    )
    metrics = {
        "loss": loss,
        "grad_norm": grad_norm,
        "param_norm": optax.tree.norm(new_state.params),
        "update_norm": optax.tree.norm(updates),
        "learning_rate": lr_fn(state.step),
        "skipped": new_state.skipped,
        "consecutive_skips": new_state.consecutive_skips,
    }
    return new_state, metrics

  return jax.jit(step_fn, in_shardings=(None, batch_sharding(mesh)), donate_argnums=(0,))
