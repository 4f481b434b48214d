"""DCT-diagonal forward processes against float64 numpy: the DCT (scipy), marginals (Monte Carlo),
the posterior (brute-force Gaussian conditioning in pixel space), the reduction to standard
diffusion, and every sampler (DDPM, DDIM, DPM-Solver++, truncated) on Gaussian data with the
exact denoiser."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft

from sr3_jax import frequency, processes, samplers

H, W = 4, 3


def fcfg(**kw):
  c = frequency.default_config()
  c.update(kw)
  return c


def alpha_sigma64(t, kind, c, h=H, w=W):
  """α_t(ω), σ_t(ω) (h, w) from the formulas of Hoogeboom & Salimans and the band blend, float64."""
  a0, b0 = math.atan(math.exp(-c.logsnr_max / 2)), math.atan(math.exp(-c.logsnr_min / 2))
  lam = -2.0 * math.log(math.tan(a0 + t * (b0 - a0)))
  sig = lambda v: 1.0 / (1.0 + np.exp(-v))
  i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  if kind == "blur":
    big = (np.pi * i / h) ** 2 + (np.pi * j / w) ** 2
    tau = (c.blur_sigma_max * math.sin(math.pi * t / 2) ** 2) ** 2 / 2
    d = (1 - c.d_min) * np.exp(-big * tau) + c.d_min
    return math.sqrt(sig(lam)) * d, np.full((h, w), math.sqrt(sig(-lam)))
  r = np.sqrt((i / h) ** 2 + (j / w) ** 2)
  wl = sig((c.cutoff - r) / c.width)
  lw = wl * (lam + c.low_shift) + (1 - wl) * (lam + c.high_shift)
  return np.sqrt(sig(lw)), np.sqrt(sig(-lw))


def dct_basis(h=H, w=W):
  """M (hw, hw): pixel vector → orthonormal DCT-II coefficients, built from scipy."""
  eye = np.eye(h * w).reshape(h * w, h, w)
  return np.stack([scipy.fft.dctn(e, norm="ortho").ravel() for e in eye], axis=1)


def test_dct_is_orthonormal_and_matches_scipy():
  x = np.random.default_rng(0).normal(size=(2, 8, 6, 3)).astype(np.float32)
  u = np.asarray(frequency.dct2(jnp.asarray(x)))
  np.testing.assert_allclose(
    u, scipy.fft.dctn(x.astype(np.float64), axes=(1, 2), norm="ortho"), atol=1e-5
  )
  np.testing.assert_allclose(np.asarray(frequency.idct2(jnp.asarray(u))), x, atol=1e-5)
  c = frequency.dct_matrix(7).astype(np.float64)
  np.testing.assert_allclose(c @ c.T, np.eye(7), atol=1e-6)


@pytest.mark.parametrize(
  "kind,cfg",
  [
    ("blur", dict(blur_sigma_max=3.0)),
    ("band", dict(cutoff=0.4, width=0.1, low_shift=3.0, high_shift=-2.0)),
  ],
)
def test_coefficients_marginals_and_posterior(kind, cfg):
  c = fcfg(**cfg)
  x0 = np.random.default_rng(1).uniform(-1, 1, (H, W))
  # α, σ per coefficient against the closed forms.
  for t in (0.2, 0.7):
    a, s = frequency.alpha_sigma(jnp.array([t]), (H, W), kind, c)
    a64, s64 = alpha_sigma64(t, kind, c)
    np.testing.assert_allclose(np.asarray(a)[0, ..., 0], a64, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(s)[0, ..., 0], s64, rtol=2e-5, atol=1e-7)
  m = dct_basis()
  cov = lambda diag: m.T @ np.diag(diag.ravel()) @ m
  t, s = 0.6, 0.35
  at, st = alpha_sigma64(t, kind, c)
  as_, ss = alpha_sigma64(s, kind, c)
  mean_t, mean_s = m.T @ (at.ravel() * (m @ x0.ravel())), m.T @ (as_.ravel() * (m @ x0.ravel()))
  # Monte-Carlo marginal of z_t: mean and full pixel covariance.
  n = 40000
  noise = jax.random.normal(jax.random.key(0), (n, H, W, 1))
  proc = processes.DCT(kind, c)
  z = proc.q_sample(
    jnp.broadcast_to(jnp.asarray(x0, jnp.float32)[None, ..., None], noise.shape),
    jnp.full((n,), t),
    noise,
  )
  zf = np.asarray(z, np.float64).reshape(n, -1)
  np.testing.assert_allclose(zf.mean(0), mean_t, atol=0.03)
  np.testing.assert_allclose(np.cov(zf.T), cov(st**2), atol=0.03)
  # Posterior q(z_s | z_t, x0): brute-force conditioning of the joint Gaussian of (z_s, z_t).
  c_ss, c_tt, c_st = cov(ss**2), cov(st**2), cov(at / as_ * ss**2)
  z_t = mean_t + np.linalg.cholesky(c_tt) @ np.random.default_rng(2).normal(size=H * W)
  k = c_st @ np.linalg.inv(c_tt)
  ref_mean, ref_cov = mean_s + k @ (z_t - mean_t), c_ss - k @ c_st.T
  f32 = lambda v: jnp.asarray(v, jnp.float32).reshape(1, H, W, 1)
  mean_u, var_u = proc.posterior(
    frequency.dct2(f32(x0)), frequency.dct2(f32(z_t)), proc.transition(t, s, (H, W))
  )
  np.testing.assert_allclose(np.asarray(frequency.idct2(mean_u)).ravel(), ref_mean, atol=2e-4)
  np.testing.assert_allclose(cov(np.asarray(var_u, np.float64)), ref_cov, atol=2e-5)


@pytest.mark.parametrize(
  "kind,cfg", [("blur", dict(blur_sigma_max=0.0)), ("band", dict(low_shift=0.0, high_shift=0.0))]
)
def test_reduces_to_standard_diffusion(kind, cfg):
  """Blur off / equal bands: z_t and the posterior are those of Gaussian diffusion at γ = sigmoid(λ(t))."""
  c = fcfg(**cfg)
  x0 = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3), minval=-1, maxval=1)
  noise = jax.random.normal(jax.random.key(2), x0.shape)
  t = jnp.array([0.3, 0.8])
  g = frequency.network_gamma(t, c)
  proc, gauss = processes.DCT(kind, c), processes.GAUSSIAN
  np.testing.assert_allclose(
    np.asarray(proc.q_sample(x0, t, noise)), np.asarray(gauss.q_sample(x0, g, noise)), atol=2e-5
  )
  z_t = gauss.q_sample(x0, g, noise)
  g_s = frequency.network_gamma(t / 2, c)
  for b in range(2):
    mean_u, var_u = proc.posterior(
      frequency.dct2(x0[b]), frequency.dct2(z_t[b]), proc.transition(t[b], t[b] / 2, (8, 8))
    )
    ref_mean, ref_var = gauss.posterior(x0[b], z_t[b], gauss.transition(g[b], g_s[b], None))
    np.testing.assert_allclose(np.asarray(frequency.idct2(mean_u)), np.asarray(ref_mean), atol=2e-5)
    np.testing.assert_allclose(np.asarray(var_u), float(ref_var), rtol=1e-4)


PROCESSES = [
  ("blur", dict(blur_sigma_max=2.0)),
  ("band", dict(cutoff=0.4, width=0.1, low_shift=3.0, high_shift=-2.0)),
]


def exact_denoiser(proc, s2, hw):
  """Data N(0, s²I): E[u0 | u_t] = α s² u_t / (α² s² + σ²) per coefficient, returned as x0.
  The level t is recovered from the network's γ through the base cosine schedule."""
  c = proc.fcfg

  def denoise(z, g):
    lam = jnp.log(g) - jnp.log1p(-g)
    a0, b0 = math.atan(math.exp(-c.logsnr_max / 2)), math.atan(math.exp(-c.logsnr_min / 2))
    t = (jnp.arctan(jnp.exp(-lam / 2)) - a0) / (b0 - a0)
    a, s = frequency.alpha_sigma(t, hw, proc.name, c)
    return frequency.idct2(a * s2 / (a**2 * s2 + s**2) * frequency.dct2(z))

  return denoise


@pytest.mark.parametrize("kind,cfg", PROCESSES)
@pytest.mark.parametrize("sampler,steps", [("ddpm", 1000), ("ddim", 500), ("dpmpp", 25)])
def test_sampling_gaussian_data_with_the_exact_denoiser(kind, cfg, sampler, steps):
  """Every sampler on blur and band reproduces the data's variance s² in every pixel."""
  proc, s2, shape = processes.DCT(kind, fcfg(**cfg)), 0.25, (4000, 4, 4, 1)
  levels = jnp.linspace(0.0, 0.999, steps + 1)
  out, _ = jax.jit(
    lambda key: samplers.sample(
      exact_denoiser(proc, s2, shape[1:3]),
      shape,
      levels,
      key,
      samplers.SamplerConfig(name=sampler, target="x0", clip_x0=None, variance="posterior"),
      proc,
    )
  )(jax.random.key(0))
  var = np.asarray(out, np.float64).var(axis=0)
  np.testing.assert_allclose(var, s2, rtol=0.12)
  assert abs(var.mean() / s2 - 1.0) < 0.04


@pytest.mark.parametrize("kind,cfg", PROCESSES)
def test_truncated_sampling_lands_on_the_marginal(kind, cfg):
  """final='z' stops at the grid's first level: coefficient variances α²s² + σ² there."""
  proc, s2, shape = processes.DCT(kind, fcfg(**cfg)), 0.25, (4000, 4, 4, 1)
  stop = 0.4
  levels = samplers.truncated_grid(np.linspace(0.0, 0.999, 101), stop, proc)
  assert levels[0] == np.float32(stop) and np.all(levels[1:] > stop)
  cfg_s = samplers.SamplerConfig(target="x0", clip_x0=None, variance="posterior", final="z")
  out, _ = samplers.sample(
    exact_denoiser(proc, s2, shape[1:3]), shape, levels, jax.random.key(1), cfg_s, proc
  )
  var_u = np.asarray(frequency.dct2(out), np.float64).var(axis=0)[..., 0]
  a, s = alpha_sigma64(stop, kind, proc.fcfg, 4, 4)
  np.testing.assert_allclose(var_u, a**2 * s2 + s**2, rtol=0.12)


def test_levels_map_to_and_from_the_network_gamma():
  proc = processes.DCT("blur", fcfg())
  for t in (0.1, 0.5, 0.93):
    g = float(proc.network_gamma(jnp.float32(t)))
    assert proc.level_from_gamma(g) == pytest.approx(t, abs=1e-4)
  np.testing.assert_array_equal(proc.noisier([0.2, 0.5, 0.8], 0.5), [False, False, True])
  np.testing.assert_array_equal(
    processes.GAUSSIAN.noisier([0.9, 0.5, 0.1], 0.5), [False, False, True]
  )


@pytest.mark.parametrize("kind,cfg", PROCESSES)
@pytest.mark.parametrize("target", processes.TARGETS)
def test_targets_convert_exactly_per_coefficient(kind, cfg, target):
  """ε, x0 and v = α ε − σ x0 (per DCT coefficient, float64) round-trip through (z, t)."""
  proc = processes.DCT(kind, fcfg(**cfg))
  rng = np.random.default_rng(3)
  x0, eps = rng.uniform(-1, 1, (2, H, W, 1)), rng.normal(size=(2, H, W, 1))
  t = np.array([0.3, 0.7])
  f32 = lambda v: jnp.asarray(v, jnp.float32)
  z = proc.q_sample(f32(x0), f32(t), f32(eps))
  out = proc.output(f32(x0), f32(eps), f32(t), target)
  if target == "v":
    m = dct_basis()
    for b in range(2):
      a, s = alpha_sigma64(t[b], kind, proc.fcfg)
      v = a.ravel() * (m @ eps[b].ravel()) - s.ravel() * (m @ x0[b].ravel())
      np.testing.assert_allclose(np.asarray(out[b]).ravel(), m.T @ v, atol=1e-5)
  x0_hat, eps_hat = proc.x0_eps(out, z, f32(t), target)
  np.testing.assert_allclose(np.asarray(x0_hat), x0, atol=2e-3)
  np.testing.assert_allclose(np.asarray(eps_hat), eps, atol=2e-3)
