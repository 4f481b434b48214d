"""Forward process, target conversions and the loss."""

import functools
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sr3_jax import configs, diffusion, processes
from sr3_jax.models import unet


@pytest.fixture(scope="module")
def xs():
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  x0 = jax.random.uniform(k1, (6, 8, 8, 3), minval=-1, maxval=1)
  eps = jax.random.normal(k2, x0.shape)
  gamma = jax.random.uniform(k3, (6,), minval=0.01, maxval=0.99)
  return x0, eps, gamma


def test_q_sample_closed_form(xs):
  x0, eps, gamma = xs
  z = processes.GAUSSIAN.q_sample(x0, gamma, eps)
  g = np.asarray(gamma, np.float64)[:, None, None, None]
  want = np.sqrt(g) * np.asarray(x0, np.float64) + np.sqrt(1 - g) * np.asarray(eps, np.float64)
  np.testing.assert_allclose(z, want, atol=1e-6)


@pytest.mark.parametrize("target", diffusion.TARGETS)
def test_targets_convert_exactly(xs, target):
  x0, eps, gamma = xs
  z = processes.GAUSSIAN.q_sample(x0, gamma, eps)
  out = processes.GAUSSIAN.output(x0, eps, gamma, target)
  x0_hat, eps_hat = processes.GAUSSIAN.x0_eps(out, z, gamma, target)
  np.testing.assert_allclose(x0_hat, x0, atol=2e-4)
  np.testing.assert_allclose(eps_hat, eps, atol=2e-4)


def test_v_definition(xs):
  x0, eps, gamma = xs
  g = np.asarray(gamma, np.float64)[:, None, None, None]
  want = np.sqrt(g) * np.asarray(eps) - np.sqrt(1 - g) * np.asarray(x0)
  np.testing.assert_allclose(processes.GAUSSIAN.output(x0, eps, gamma, "v"), want, atol=1e-6)


def test_min_snr_weights():
  g = jnp.array([0.1, 0.5, 0.9, 0.999])
  snr = np.asarray(g, np.float64) / (1 - np.asarray(g, np.float64))
  k = 5.0
  np.testing.assert_allclose(
    diffusion.min_snr_weight(g, "eps", k), np.minimum(snr, k) / snr, rtol=1e-4
  )
  np.testing.assert_allclose(diffusion.min_snr_weight(g, "x0", k), np.minimum(snr, k), rtol=1e-4)
  np.testing.assert_allclose(
    diffusion.min_snr_weight(g, "v", k), np.minimum(snr, k) / (snr + 1), rtol=1e-4
  )


def test_residual_target_round_trip(xs):
  x0, eps, _ = xs
  cfg = configs.base_config().diffusion
  cfg.diffuse, cfg.residual_scale = "residual", 4.0
  y0 = diffusion.make_target_image(x0, eps, cfg)
  np.testing.assert_allclose(y0, 4.0 * (np.asarray(x0) - np.asarray(eps)), atol=1e-6)
  np.testing.assert_allclose(diffusion.image_from_target(y0, eps, cfg), x0, atol=1e-6)


def test_loss_fn_is_finite_and_per_example():
  c = configs.load("experiments/configs/demo.py:runlocal")
  c.diffusion.min_snr_gamma = 5.0
  model = unet.build(c.model)
  params = unet.init_params(model, jax.random.key(0))
  apply_fn = lambda p, z, g, cond, train=False, rngs=None: model.apply(
    {"params": p}, z, g, cond, train=train, rngs=rngs
  )
  loss_fn = diffusion.make_loss_fn(apply_fn, c)
  hr = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3), minval=-1, maxval=1)
  (loss, out), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
    params, {"hr": hr}, jax.random.key(2)
  )
  assert np.isfinite(float(loss))
  assert out.loss_per_example.shape == (4,)
  assert len(np.unique(np.asarray(out.gamma))) == 4
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))


def test_auto_dropout_rng_is_hash_on_cpu_and_tpu_meshes_and_threefry_on_gpu():
  from sr3_jax import train

  class Device:
    def __init__(self, platform):
      self.platform = platform

  assert train.resolve_dropout_rng("auto", [Device("cpu")] * 8) == "hash"
  assert train.resolve_dropout_rng("auto", [Device("tpu")] * 4) == "hash"
  assert train.resolve_dropout_rng("auto", [Device("gpu")]) == "threefry"
  assert train.resolve_dropout_rng("rbg", [Device("cpu")]) == "rbg"


def test_other_dropout_rngs_are_deterministic_and_differ_from_threefry():
  """train.dropout_rng='rbg' (XLA's RngBitGenerator) or 'hash' (hash_prng): same key, same loss."""
  from sr3_jax import train

  c = configs.load("experiments/configs/demo.py:runlocal")
  c.model.update(dict(dropout=0.5, channels=8, channel_mult=(1,), num_groups=4))
  model = unet.build(c.model)
  params = unet.init_params(model, jax.random.key(0))
  params = jax.tree_util.tree_map(
    lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape), params
  )
  hr = jax.random.uniform(jax.random.key(2), (2, 32, 32, 3), minval=-1, maxval=1)
  losses = {}
  for impl in ("threefry", "rbg", "hash"):
    key_fn = functools.partial(train.dropout_key, impl=impl)
    f = jax.jit(
      lambda p: diffusion.make_loss_fn(train.apply_fn_for(model), c, key_fn)(
        p, {"hr": hr}, jax.random.key(3)
      )[0]
    )
    losses[impl] = (float(f(params)), float(f(params)))
  for impl in ("rbg", "hash"):
    assert losses[impl][0] == losses[impl][1] and losses["threefry"][0] != losses[impl][0]
  c.train.dropout_rng = "mersenne"
  with pytest.raises(ValueError, match="train.dropout_rng"):
    configs.validate(c)
