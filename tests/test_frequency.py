"""DCT-diagonal forward processes against float64 numpy: the DCT (scipy), marginals (Monte Carlo),
the posterior (brute-force Gaussian conditioning in pixel space), the reduction to standard
diffusion, and sampling Gaussian data with the exact denoiser."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft

from sr3_jax import diffusion, frequency, samplers

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
  z = frequency.q_sample(
    jnp.broadcast_to(jnp.asarray(x0, jnp.float32)[None, ..., None], noise.shape),
    jnp.full((n,), t),
    noise,
    kind,
    c,
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
  mean_u, var_u = frequency.posterior(
    frequency.dct2(f32(x0)), frequency.dct2(f32(z_t)), f32(at), f32(st), f32(as_), f32(ss)
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
  np.testing.assert_allclose(
    np.asarray(frequency.q_sample(x0, t, noise, kind, c)),
    np.asarray(diffusion.q_sample(x0, g, noise)),
    atol=2e-5,
  )
  a_t, s_t = frequency.alpha_sigma(t, (8, 8), kind, c)
  a_s, s_s = frequency.alpha_sigma(t / 2, (8, 8), kind, c)
  z_t = diffusion.q_sample(x0, g, noise)
  mean_u, var_u = frequency.posterior(frequency.dct2(x0), frequency.dct2(z_t), a_t, s_t, a_s, s_s)
  g_s = frequency.network_gamma(t / 2, c)
  for b in range(2):
    ref_mean, ref_var = samplers.posterior(x0[b], z_t[b], g[b], g_s[b])
    np.testing.assert_allclose(
      np.asarray(frequency.idct2(mean_u))[b], np.asarray(ref_mean), atol=2e-5
    )
    np.testing.assert_allclose(np.asarray(var_u)[b], float(ref_var), rtol=1e-4)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sampling_gaussian_data_with_the_exact_denoiser(sampler):
  """Data N(0, s²I): E[u0 | u_t] = α s² u_t / (α² s² + σ²) per coefficient; samples get variance s²."""
  c = fcfg(blur_sigma_max=2.0)
  s2 = 0.25
  shape = (4000, 4, 4, 1)

  def denoise(z, g):  # predicts x0 exactly; t recovered from γ of the base schedule
    lam = jnp.log(g) - jnp.log1p(-g)
    a0, b0 = math.atan(math.exp(-c.logsnr_max / 2)), math.atan(math.exp(-c.logsnr_min / 2))
    t = (jnp.arctan(jnp.exp(-lam / 2)) - a0) / (b0 - a0)
    a, s = frequency.alpha_sigma(t, shape[1:3], "blur", c)
    return frequency.idct2(a * s2 / (a**2 * s2 + s**2) * frequency.dct2(z))

  out = frequency.sample(
    denoise, shape, 200, jax.random.key(0), "blur", c, target="x0", sampler=sampler, t_max=0.999
  )
  var = np.asarray(out, np.float64).var(axis=0)
  np.testing.assert_allclose(var, s2, rtol=0.12)
