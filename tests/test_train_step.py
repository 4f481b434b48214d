"""One jitted SPMD train step: the loss falls on a fixed batch; non-finite steps are skipped."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sr3_jax import configs, sharding, train
from sr3_jax.data import loader
from sr3_jax.models import unet


@pytest.fixture(scope="module")
def setup():
  c = configs.load("experiments/configs/demo.py:runlocal")
  c.train.batch_size = 8
  c.optim.update(dict(lr=2e-3, warmup_steps=5))
  mesh = sharding.make_mesh(c)
  model = unet.build(c.model)
  local = next(iter(loader.make_dataset(c.data, "train", 8, seed=0)))
  batch = loader.global_batch(local, sharding.batch_sharding(mesh))
  chex.clear_trace_counter()
  step = train.make_train_step(c, model, mesh)  # compiled once for the module
  return c, mesh, model, batch, step


def test_loss_falls_on_a_fixed_batch(setup):
  c, mesh, model, batch, step = setup
  state = train.create_train_state(c, model, mesh)
  losses = []
  for _ in range(50):
    state, m = step(state, batch)
    losses.append(float(m["loss"]))
  assert step._cache_size() == 1  # compiled once
  first, last = np.mean(losses[:10]), np.mean(losses[-10:])
  assert last < 0.8 * first, (first, last)
  assert int(state.step) == 50 and int(state.skipped) == 0
  # The EMA moved away from init but lags the params.
  dist = lambda a, b: float(
    sum(
      jnp.sum((x - y) ** 2)
      for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    )
  )
  assert 0 < dist(state.ema_params, state.params)


def test_non_finite_batch_is_skipped(setup):
  c, mesh, model, batch, step = setup
  state = train.create_train_state(c, model, mesh)
  state, _ = step(state, batch)
  kept = lambda s: jax.tree_util.tree_map(np.asarray, (s.params, s.ema_params, s.opt_state))
  before = kept(state)
  bad = {"hr": batch["hr"].at[0, 0, 0, 0].set(jnp.nan)}
  state, m = step(state, bad)
  assert int(m["skipped"]) == 1 and int(m["consecutive_skips"]) == 1
  assert float(m["update_norm"]) == 0.0 and int(state.step) == 2
  jax.tree_util.tree_map(np.testing.assert_array_equal, before, kept(state))
  state, m = step(state, batch)
  assert int(m["skipped"]) == 1 and int(m["consecutive_skips"]) == 0


def test_learning_rate_warmup():
  o = configs.base_config().optim
  lr = train.learning_rate_schedule(o)
  assert float(lr(0)) == 0.0
  assert float(lr(5000)) == pytest.approx(0.5e-4)
  assert float(lr(10_000)) == pytest.approx(1e-4) and float(lr(500_000)) == pytest.approx(1e-4)
