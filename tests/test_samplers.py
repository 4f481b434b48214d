"""Samplers: posterior against brute-force Gaussian conditioning, exactness on Gaussian data,
determinism and a single compile."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sr3_jax import processes, samplers, schedules

G = processes.GAUSSIAN


def posterior(x0, z, gamma_t, gamma_s):
  return G.posterior(x0, z, G.transition(gamma_t, gamma_s, None))


def brute_force_posterior(x0, z_t, gamma_t, gamma_s):
  """q(y_s | y_t, y_0) by conditioning the joint Gaussian of (y_s, y_t) given y_0, in float64."""
  a_ts = gamma_t / gamma_s
  # y_s = √γ_s x0 + √(1−γ_s) e1;  y_t = √a_ts y_s + √(1−a_ts) e2.
  mu_s, mu_t = np.sqrt(gamma_s) * x0, np.sqrt(gamma_t) * x0
  var_s = 1.0 - gamma_s
  cov_st = np.sqrt(a_ts) * var_s
  var_t = a_ts * var_s + (1.0 - a_ts)
  mean = mu_s + cov_st / var_t * (z_t - mu_t)
  var = var_s - cov_st**2 / var_t
  return mean, var


@pytest.mark.parametrize("gamma_t,gamma_s", [(0.3, 0.31), (0.05, 0.9), (1e-3, 0.5), (0.9, 0.99999)])
def test_posterior_matches_gaussian_conditioning(gamma_t, gamma_s):
  rng = np.random.default_rng(0)
  x0, z = rng.normal(size=(2, 5)), rng.normal(size=(2, 5))
  mean, var = posterior(
    jnp.asarray(x0, jnp.float32),
    jnp.asarray(z, jnp.float32),
    jnp.float32(gamma_t),
    jnp.float32(gamma_s),
  )
  want_mean, want_var = brute_force_posterior(x0, z, gamma_t, gamma_s)
  np.testing.assert_allclose(mean, want_mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(var, want_var, rtol=1e-4, atol=1e-7)


def test_ddpm_mean_equals_sr3_update():
  """SR3 Alg. 2: μ = (y_t − (1−α_t)/√(1−γ_t)·ε̂)/√α_t equals the posterior mean through x̂0."""
  rng = np.random.default_rng(1)
  z, eps = rng.normal(size=(2, 7))
  g_t, g_s = 0.4, 0.45
  alpha = g_t / g_s
  sr3 = (z - (1 - alpha) / np.sqrt(1 - g_t) * eps) / np.sqrt(alpha)
  x0 = (z - np.sqrt(1 - g_t) * eps) / np.sqrt(g_t)
  mean, _ = posterior(jnp.asarray(x0, jnp.float32), jnp.asarray(z, jnp.float32), g_t, g_s)
  np.testing.assert_allclose(mean, sr3, rtol=1e-4, atol=1e-5)


# Data ~ N(0, s²) per pixel: the exact denoiser is E[x0 | z] = √γ s² z / (γ s² + 1 − γ), so a
# correct sampler reproduces variance s² (closed form, independent of the code under test).
S2 = 0.25


def gaussian_denoiser(target):
  def fn(z, gamma):
    g = gamma.reshape((-1,) + (1,) * (z.ndim - 1))
    x0 = jnp.sqrt(g) * S2 * z / (g * S2 + 1.0 - g)
    eps = (z - jnp.sqrt(g) * x0) / jnp.sqrt(1.0 - g)
    return G.output(x0, eps, g, target)

  return fn


@pytest.mark.parametrize(
  "name,steps,target,extra",
  [
    ("ddpm", 1000, "eps", {}),
    ("ddpm", 1000, "v", {"variance": "posterior"}),
    ("ddim", 100, "x0", {"eta": 0.0}),
    ("ddim", 1000, "eps", {"eta": 1.0}),
    ("dpmpp", 20, "eps", {}),
  ],
)
def test_samplers_reproduce_gaussian_data(name, steps, target, extra):
  if name == "dpmpp":  # few steps, uniform in log-SNR
    grid = schedules.gamma_from_logsnr(schedules.cosine_logsnr(jnp.linspace(0.0, 1.0, steps + 1)))
  else:
    grid = schedules.gammas_from_betas(schedules.linear_betas(steps, 1e-4, 0.02 * 1000 / steps))
  cfg = samplers.SamplerConfig(name=name, target=target, clip_x0=None, **extra)
  fn = jax.jit(
    lambda k: samplers.sample(gaussian_denoiser(target), (8192, 1, 1, 1), grid, k, cfg)[0]
  )
  x = np.asarray(fn(jax.random.key(0)), np.float64).ravel()
  assert abs(x.mean()) < 0.02
  assert x.var() == pytest.approx(S2, rel=0.06)


def test_ancestral_ddim_is_ddpm_with_the_posterior_variance():
  """DDIM with η = 1 (Song et al. 2021, eq. 16) is DDPM's ancestral step with variance β̃: the same
  samples for the same key, whatever the denoiser (a distilled student samples this way)."""
  grid = schedules.gamma_from_logsnr(schedules.cosine_logsnr(jnp.linspace(0.0, 1.0, 9)))
  denoise = lambda z, g: jnp.tanh(0.7 * z) + 0.1 * g.reshape(-1, 1, 1, 1)
  run = lambda cfg: samplers.sample(denoise, (2, 4, 4, 3), grid, jax.random.key(5), cfg)[0]
  ddim = run(samplers.SamplerConfig(name="ddim", eta=1.0, target="v"))
  ddpm = run(samplers.SamplerConfig(name="ddpm", variance="posterior", target="v"))
  np.testing.assert_allclose(ddim, ddpm, atol=1e-5)
  assert not np.allclose(ddim, run(samplers.SamplerConfig(name="ddim", eta=0.0, target="v")))


def test_point_mass_is_recovered_exactly():
  """If the denoiser knows x0 exactly, every sampler must end on x0."""
  x_star = jnp.linspace(-0.9, 0.9, 12).reshape(1, 2, 2, 3)

  def denoise(z, gamma):
    return G.eps_from_x0(z, gamma, jnp.broadcast_to(x_star, z.shape))

  grid = schedules.gammas_from_betas(schedules.linear_betas(50, 1e-4, 0.2))
  for name in samplers.SAMPLERS:
    out, _ = samplers.sample(
      denoise,
      (3, 2, 2, 3),
      grid,
      jax.random.key(3),
      samplers.SamplerConfig(name=name, clip_x0=None),
    )
    np.testing.assert_allclose(out, jnp.broadcast_to(x_star, out.shape), atol=1e-4, err_msg=name)


@pytest.mark.parametrize("name", samplers.SAMPLERS)
def test_deterministic_shapes_single_compile(name):
  grid = schedules.gammas_from_betas(schedules.linear_betas(20, 1e-4, 0.1))
  cfg = samplers.SamplerConfig(name=name, return_every=5, eta=0.5)
  denoise = lambda z, g: 0.1 * z
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(key):
    return samplers.sample(denoise, (2, 4, 4, 3), grid, key, cfg)

  a, inter = run(jax.random.key(0))
  b, _ = run(jax.random.key(0))
  c, _ = run(jax.random.key(1))
  assert a.shape == (2, 4, 4, 3) and inter.shape == (4, 2, 4, 4, 3)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  np.testing.assert_array_equal(inter[-1], a)


def test_clipping_and_dynamic_thresholding():
  x0 = jnp.array([[-3.0, 0.5, 2.0, 0.1]]).reshape(1, 2, 2, 1)
  clipped = samplers._threshold(x0, samplers.SamplerConfig(clip_x0=1.0))
  np.testing.assert_allclose(clipped.ravel(), [-1.0, 0.5, 1.0, 0.1])
  dyn = samplers._threshold(x0, samplers.SamplerConfig(dynamic_threshold=1.0))
  np.testing.assert_allclose(dyn.ravel(), np.array([-3.0, 0.5, 2.0, 0.1]) / 3.0, rtol=1e-6)


def test_bad_sampler_arguments():
  grid = jnp.array([1.0, 0.5, 0.1])
  with pytest.raises(ValueError, match="sampler="):
    samplers.sample(
      lambda z, g: z, (1, 1), grid, jax.random.key(0), samplers.SamplerConfig(name="x")
    )
  with pytest.raises(ValueError, match="return_every"):
    samplers.sample(
      lambda z, g: z, (1, 1), grid, jax.random.key(0), samplers.SamplerConfig(return_every=3)
    )
