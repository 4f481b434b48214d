"""Samplers: ancestral DDPM (SR3's refinement loop), DDIM and DPM-Solver++(2M).

Each walks a decreasing noise grid γ_0 > γ_1 > … > γ_N backwards, from y_N ~ N(0, I) to y_0, as
one `lax.scan` (nothing returns to Python per step), so a caller wraps the whole sampler in one
`jax.jit`. The grid is independent of the training schedule: the network sees γ, not a step index.

`denoise_fn(z, gamma) -> output` is the network with its params and conditioning closed over;
`target` says what it predicts (ε, x0 or v). Randomness comes from `fold_in(rng, step)`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sr3_jax import diffusion

Array = jax.Array
SAMPLERS = ("ddpm", "ddim", "dpmpp")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """How to sample; see `sample`."""

  name: str = "ddpm"
  target: str = "eps"
  clip_x0: float | None = 1.0  # clip x̂0 to [−c, c]; None: no clipping
  dynamic_threshold: float | None = None  # quantile p of |x̂0| (Imagen); overrides clip_x0
  variance: str = "beta"  # ddpm: "beta" (SR3's β_t) or "posterior" (β̃_t)
  eta: float = 0.0  # ddim: 0 deterministic, 1 ancestral-like
  return_every: int = 0  # keep every k-th intermediate y (0: none)
  # "x0": the last step returns x̂0. "z": it lands on y at the grid's γ_0 < 1 instead (truncated
  # sampling for a cascade's truncated conditioning augmentation; see `truncated_grid`).
  final: str = "x0"


def posterior(x0: Array, z_t: Array, gamma_t: Array, gamma_s: Array) -> tuple[Array, Array]:
  """Mean and variance of q(y_s | y_t, y_0) for γ_s > γ_t (DDPM eq. 6–7 for any pair of levels).

  With α_{t|s} = γ_t/γ_s:  var = (1−γ_s)(1−α_{t|s})/(1−γ_t),
  mean = √γ_s (1−α_{t|s})/(1−γ_t)·y_0 + √α_{t|s} (1−γ_s)/(1−γ_t)·y_t.
  """
  a_ts = gamma_t / gamma_s
  mean = (jnp.sqrt(gamma_s) * (1.0 - a_ts) / (1.0 - gamma_t)) * x0 + (
    jnp.sqrt(a_ts) * (1.0 - gamma_s) / (1.0 - gamma_t)
  ) * z_t
  var = (1.0 - gamma_s) * (1.0 - a_ts) / (1.0 - gamma_t)
  return mean, var


def _threshold(x0: Array, cfg: SamplerConfig) -> Array:
  if cfg.dynamic_threshold is not None:
    # Imagen's dynamic thresholding: s = max(1, quantile_p |x̂0|) per example, clip to [−s, s], divide by s.
    flat = jnp.abs(x0).reshape(x0.shape[0], -1)
    s = jnp.maximum(jnp.quantile(flat, cfg.dynamic_threshold, axis=1), 1.0)
    s = s.reshape((-1,) + (1,) * (x0.ndim - 1))
    return jnp.clip(x0, -s, s) / s
  if cfg.clip_x0 is not None:
    return jnp.clip(x0, -cfg.clip_x0, cfg.clip_x0)
  return x0


def _predict(denoise_fn, z: Array, gamma: Array, cfg: SamplerConfig) -> tuple[Array, Array]:
  """(x̂0, ε̂) at scalar level γ, with x̂0 thresholded and ε̂ made consistent with it."""
  g = jnp.full((z.shape[0],), gamma, jnp.float32)
  out = denoise_fn(z, g).astype(jnp.float32)
  x0, eps = diffusion.x0_eps_from_output(out, z, g, cfg.target)
  if cfg.clip_x0 is not None or cfg.dynamic_threshold is not None:
    x0 = _threshold(x0, cfg)
    eps = diffusion.eps_from_x0(z, g, x0)
  return x0, eps


def truncated_grid(gammas, gamma_stop: float):
  """The grid a truncated reverse process walks: γ_0 = gamma_stop, then every level of `gammas`
  noisier than it. Computed on the host (its length depends on the values)."""
  g = np.asarray(gammas, np.float64)
  below = g[g < gamma_stop - 1e-9]
  if below.size == 0:
    raise ValueError(
      f"no level of the sampling grid is noisier than the truncation level γ={gamma_stop:.4g}; "
      f"lower the next stage's aug_level or use more sampling steps"
    )
  return np.concatenate([[gamma_stop], below]).astype(np.float32)


def _ddpm_step(denoise_fn, cfg, z, gamma_t, gamma_s, key, is_last):
  """SR3 Algorithm 2: y_s = (y_t − (1−α)/√(1−γ_t)·ε̂)/√α + √var·noise, written through x̂0 so that
  clipping applies; unclipped, the posterior mean equals SR3's expression exactly."""
  x0, _ = _predict(denoise_fn, z, gamma_t, cfg)
  mean, post_var = posterior(x0, z, gamma_t, gamma_s)
  var = post_var if cfg.variance == "posterior" else 1.0 - gamma_t / gamma_s
  noise = jax.random.normal(key, z.shape, z.dtype)
  if cfg.final == "z":  # land on y_s ~ q(y_s | y_t, x̂0), which has exactly the forward marginal
    return jnp.where(is_last, mean + jnp.sqrt(post_var) * noise, mean + jnp.sqrt(var) * noise), x0
  return jnp.where(is_last, x0, mean + jnp.sqrt(var) * noise), x0


def _ddim_step(denoise_fn, cfg, z, gamma_t, gamma_s, key, is_last):
  """DDIM (Song et al. 2021, eq. 12): y_s = √γ_s x̂0 + √(1−γ_s−σ²) ε̂ + σ·noise."""
  x0, eps = _predict(denoise_fn, z, gamma_t, cfg)
  sigma = cfg.eta * jnp.sqrt((1.0 - gamma_s) / (1.0 - gamma_t) * (1.0 - gamma_t / gamma_s))
  noise = jax.random.normal(key, z.shape, z.dtype)
  z_s = (
    jnp.sqrt(gamma_s) * x0
    + jnp.sqrt(jnp.maximum(1.0 - gamma_s - sigma**2, 0.0)) * eps
    + sigma * noise
  )
  return (z_s if cfg.final == "z" else jnp.where(is_last, x0, z_s)), x0


def _half_logsnr(gamma):
  """DPM-Solver's λ = log(α/σ) = ½·log SNR."""
  return 0.5 * (jnp.log(gamma) - jnp.log1p(-gamma))


def sample(
  denoise_fn: Callable[[Array, Array], Array],
  shape: tuple[int, ...],
  gammas: Array,
  rng: Array,
  cfg: SamplerConfig = SamplerConfig(),
) -> tuple[Array, Array | None]:
  """Runs a sampler over the grid `gammas` (N+1,), decreasing, from noise to y_0.

  Returns (y_0, intermediates), intermediates (N // return_every, *shape) or None. Deterministic
  for a given `rng`. The final step returns x̂0 at γ_1 (the grid's γ_0 may be exactly 1), or,
  with cfg.final == "z", y at γ_0.
  """
  y, _, inter = sample_with_x0(denoise_fn, shape, gammas, rng, cfg)
  return y, inter


def sample_with_x0(denoise_fn, shape, gammas, rng, cfg: SamplerConfig = SamplerConfig()):
  """`sample`, also returning the last step's x̂0: (y, x̂0, intermediates)."""
  if cfg.name not in SAMPLERS:
    raise ValueError(f"sampler={cfg.name!r}; choose one of {SAMPLERS}")
  if cfg.final not in ("x0", "z"):
    raise ValueError(f"sampler final={cfg.final!r}; choose 'x0' or 'z'")
  if cfg.variance not in ("beta", "posterior"):
    raise ValueError(f"sampler variance={cfg.variance!r}; choose 'beta' or 'posterior'")
  gammas = jnp.asarray(gammas, jnp.float32)
  num_steps = gammas.shape[0] - 1
  if cfg.return_every and num_steps % cfg.return_every:
    raise ValueError(f"return_every={cfg.return_every} must divide the number of steps {num_steps}")
  init_key, loop_key = jax.random.split(rng)
  z = jax.random.normal(init_key, shape, jnp.float32)
  # Step i goes from level n = N − i to n − 1.
  idx = jnp.arange(num_steps)
  g_t = gammas[num_steps - idx]
  g_s = gammas[num_steps - idx - 1]
  is_last = idx == num_steps - 1

  if cfg.name in ("ddpm", "ddim"):
    step_fn = _ddpm_step if cfg.name == "ddpm" else _ddim_step

    def body(carry, xs):
      z, _ = carry
      i, gt, gs, last = xs
      z, x0 = step_fn(denoise_fn, cfg, z, gt, gs, jax.random.fold_in(loop_key, i), last)
      return (z, x0), z

    init = (z, jnp.zeros_like(z))
  else:

    def body(carry, xs):
      # DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), first order on the first and last step.
      z, x0_prev, h_prev = carry
      i, gt, gs, last = xs
      x0, _ = _predict(denoise_fn, z, gt, cfg)
      lam_t, lam_s = _half_logsnr(gt), _half_logsnr(gs)
      h = lam_s - lam_t
      r = h_prev / jnp.where(jnp.isfinite(h) & (h != 0), h, 1.0)
      second = (1.0 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
      d = jnp.where((i == 0) | last, x0, second)
      sigma_ratio = jnp.sqrt((1.0 - gs) / (1.0 - gt))
      z_s = sigma_ratio * z + jnp.sqrt(gs) * (-jnp.expm1(-h)) * d
      if cfg.final == "x0":
        z_s = jnp.where(last, d, z_s)
      return (z_s, x0, h), z_s

    init = (z, jnp.zeros_like(z), jnp.ones((), jnp.float32))

  xs = (idx, g_t, g_s, is_last)
  if cfg.return_every:
    k = cfg.return_every
    chunks = jax.tree_util.tree_map(lambda a: a.reshape((num_steps // k, k) + a.shape[1:]), xs)

    def outer(carry, chunk):
      carry, ys = jax.lax.scan(body, carry, chunk)
      return carry, ys[-1]

    final, inter = jax.lax.scan(outer, init, chunks)
  else:
    final, _ = jax.lax.scan(lambda c, x: (body(c, x)[0], None), init, xs)
    inter = None
  return final[0], final[1], inter
