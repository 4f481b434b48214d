"""Schedules against closed forms computed in float64 numpy."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sr3_jax import schedules


def np_gammas(betas):
  return np.concatenate([[1.0], np.cumprod(1.0 - np.asarray(betas, np.float64))])


@pytest.mark.parametrize("name", sorted(schedules.BETA_SCHEDULES))
def test_gammas_monotone_in_unit_interval(name):
  g = np.asarray(schedules.gammas_from_betas(schedules.make_betas(name, 2000)))
  assert g.shape == (2001,)
  assert g[0] == 1.0
  assert np.all(np.diff(g) < 0)
  assert np.all((g > 0) & (g <= 1))


def test_linear_and_quadratic_betas_match_numpy():
  np.testing.assert_allclose(
    schedules.linear_betas(2000), np.linspace(1e-6, 1e-2, 2000), rtol=1e-5, atol=1e-9
  )
  want = np.linspace(math.sqrt(1e-4), math.sqrt(2e-2), 1000) ** 2
  np.testing.assert_allclose(schedules.quadratic_betas(1000, 1e-4, 2e-2), want, rtol=1e-5)
  w = np.asarray(schedules.warmup_linear_betas(100, 1e-4, 0.02, 0.1))
  np.testing.assert_allclose(w[:10], np.linspace(1e-4, 0.02, 10), rtol=1e-5)
  np.testing.assert_allclose(w[10:], 0.02)


def test_gammas_match_float64_cumprod():
  betas = np.linspace(1e-6, 1e-2, 2000)
  np.testing.assert_allclose(
    schedules.gammas_from_betas(jnp.asarray(betas)), np_gammas(betas), rtol=2e-5
  )


def test_cosine_betas_follow_nichol_dhariwal():
  T, s = 1000, 0.008
  f = np.cos(((np.arange(T + 1) / T) + s) / (1 + s) * np.pi / 2) ** 2
  abar = f / f[0]
  want = np.clip(1 - abar[1:] / abar[:-1], 0, 0.999)
  np.testing.assert_allclose(schedules.cosine_betas(T), want, rtol=1e-4, atol=1e-6)


def test_logsnr_gamma_round_trip():
  # float32 holds 1 − γ to ~6e-8 absolute, so λ near +12 (1 − γ ≈ 6e-6) keeps only ~1% there.
  lam = jnp.linspace(-12.0, 9.0, 85)
  np.testing.assert_allclose(
    schedules.logsnr_from_gamma(schedules.gamma_from_logsnr(lam)), lam, atol=2e-3
  )
  g = jnp.linspace(0.01, 0.99, 50)
  np.testing.assert_allclose(
    schedules.gamma_from_logsnr(schedules.logsnr_from_gamma(g)), g, rtol=1e-5
  )


def test_cosine_logsnr_closed_form_and_ends():
  t = np.linspace(0, 1, 11)
  t_min, t_max = math.atan(math.exp(-7.5)), math.atan(math.exp(7.5))
  want = -2 * np.log(np.tan(t_min + t * (t_max - t_min)))
  got = np.asarray(schedules.cosine_logsnr(jnp.asarray(t, jnp.float32)))
  np.testing.assert_allclose(got, want, atol=2e-3)
  assert got[0] == pytest.approx(15.0, abs=1e-2) and got[-1] == pytest.approx(-15.0, abs=1e-2)
  assert np.all(np.diff(got) < 0)


def test_resolution_shift():
  t = jnp.linspace(0.05, 0.95, 7)
  np.testing.assert_allclose(
    schedules.shifted_cosine_logsnr(t, 64), schedules.cosine_logsnr(t), atol=1e-6
  )
  np.testing.assert_allclose(
    schedules.shifted_cosine_logsnr(t, 256),
    np.asarray(schedules.cosine_logsnr(t)) + 2 * np.log(64 / 256),
    atol=1e-5,
  )
  interp = schedules.interpolated_shifted_cosine_logsnr(t, 32, 256)
  lo, hi = schedules.shifted_cosine_logsnr(t, 32), schedules.shifted_cosine_logsnr(t, 256)
  np.testing.assert_allclose(interp, np.asarray(t) * lo + (1 - np.asarray(t)) * hi, atol=1e-5)
  ends = schedules.interpolated_shifted_cosine_logsnr(jnp.array([0.0, 1.0]), 32, 256)
  assert float(ends[0]) == pytest.approx(
    float(schedules.shifted_cosine_logsnr(jnp.array(0.0), 256)), abs=1e-4
  )
  assert float(ends[1]) == pytest.approx(
    float(schedules.shifted_cosine_logsnr(jnp.array(1.0), 32)), abs=1e-4
  )


def test_sigmoid_schedule_decreasing():
  lam = np.asarray(schedules.sigmoid_logsnr(jnp.linspace(0, 1, 50)))
  assert np.all(np.diff(lam) < 0)


def test_sr3_gamma_sampling_is_per_example_and_in_its_interval():
  gammas = schedules.gammas_from_betas(schedules.linear_betas(2000))
  gamma, t = jax.jit(schedules.sample_sr3_gamma, static_argnums=2)(jax.random.key(0), gammas, 4096)
  gamma, t, g = np.asarray(gamma), np.asarray(t), np.asarray(gammas)
  assert t.min() >= 1 and t.max() <= 2000
  assert len(np.unique(t)) > 1000  # one t per example, not one for the batch
  assert np.all(gamma <= g[t - 1] + 1e-7) and np.all(gamma >= g[t] - 1e-7)
  # Within its interval, γ is uniform: the mean position is ½.
  frac = (gamma - g[t]) / (g[t - 1] - g[t])
  assert abs(frac.mean() - 0.5) < 0.03


def test_inference_grid_independent_of_training():
  cfg = ml_collections.ConfigDict(
    dict(kind="beta", name="linear", num_steps=2000, start=1e-4, end=0.1)
  )
  grid = np.asarray(schedules.gamma_grid(cfg, 100))
  np.testing.assert_allclose(grid, np_gammas(np.linspace(1e-4, 0.1, 100)), rtol=1e-4)
  cont = ml_collections.ConfigDict(
    dict(kind="logsnr", name="shifted_cosine", image_size=128, num_steps=50)
  )
  g = np.asarray(schedules.gamma_grid(cont))
  assert g.shape == (51,) and np.all(np.diff(g) < 0)


def test_logsnr_training_sampler():
  cfg = ml_collections.ConfigDict(dict(kind="logsnr", name="cosine", num_steps=1000))
  gamma = np.asarray(schedules.make_train_gamma_sampler(cfg)(jax.random.key(1), 2048))
  # Cosine schedule: γ(t) ≈ cos²(πt/2), so E[γ] ≈ ½ for t ~ U(0, 1).
  assert abs(gamma.mean() - 0.5) < 0.03


def test_unknown_schedule_names_are_errors():
  with pytest.raises(ValueError, match="unknown beta schedule"):
    schedules.make_betas("nope", 10)
  with pytest.raises(ValueError, match="schedule.kind"):
    schedules.gamma_grid(ml_collections.ConfigDict(dict(kind="x", num_steps=3)))
