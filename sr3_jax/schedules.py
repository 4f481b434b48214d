"""Noise schedules as pure functions of arrays.

Two families describe how much signal survives at each noise level:

* discrete β grids (DDPM / SR3): β_1..β_T and γ_t = ∏_{i≤t} (1 − β_i), with γ_0 = 1;
* continuous log-SNR schedules λ(t) for t ∈ [0, 1], with γ = sigmoid(λ).

γ is the signal variance of the forward process y_t = √γ·y_0 + √(1−γ)·ε (SR3 eq. 4), so
γ/(1−γ) is the SNR and λ = log SNR. Every function here is jittable and holds no state; the
network is conditioned on γ (or λ), never on a step index, so inference may use any grid.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

# ---------------------------------------------------------------------------------------------
# Discrete β schedules.


def linear_betas(
  num_steps: int, start: float = 1e-6, end: float = 1e-2, dtype=jnp.float32
) -> Array:
  """β_t evenly spaced from `start` to `end` (SR3's default: 1e-6 → 1e-2 over T = 2000)."""
  return jnp.linspace(start, end, num_steps, dtype=jnp.float32).astype(dtype)


def warmup_linear_betas(
  num_steps: int,
  start: float = 1e-6,
  end: float = 1e-2,
  warmup_fraction: float = 0.1,
  dtype=jnp.float32,
) -> Array:
  """β rises linearly over the first `warmup_fraction` of the steps, then stays at `end`."""
  warmup = max(1, int(num_steps * warmup_fraction))
  ramp = jnp.linspace(start, end, warmup, dtype=jnp.float32)
  rest = jnp.full((num_steps - warmup,), end, jnp.float32)
  return jnp.concatenate([ramp, rest]).astype(dtype)


def quadratic_betas(
  num_steps: int, start: float = 1e-6, end: float = 1e-2, dtype=jnp.float32
) -> Array:
  """√β evenly spaced from √start to √end."""
  return (jnp.linspace(math.sqrt(start), math.sqrt(end), num_steps, dtype=jnp.float32) ** 2).astype(
    dtype
  )


def cosine_betas(
  num_steps: int, s: float = 0.008, max_beta: float = 0.999, dtype=jnp.float32
) -> Array:
  """Nichol & Dhariwal (2021): γ(t) = f(t)/f(0), f(t) = cos²(((t/T + s)/(1 + s))·π/2).

  β_t = 1 − γ(t)/γ(t−1), clipped to `max_beta` to avoid the singularity at t = T.
  """
  t = jnp.arange(num_steps + 1, dtype=jnp.float32) / num_steps
  f = jnp.cos((t + s) / (1.0 + s) * (jnp.pi / 2.0)) ** 2
  gam = f / f[0]
  return jnp.clip(1.0 - gam[1:] / gam[:-1], 0.0, max_beta).astype(dtype)


BETA_SCHEDULES: dict[str, Callable[..., Array]] = {
  "linear": linear_betas,
  "warmup_linear": warmup_linear_betas,
  "quadratic": quadratic_betas,
  "cosine": cosine_betas,
}


def make_betas(name: str, num_steps: int, start: float = 1e-6, end: float = 1e-2) -> Array:
  """Looks up a β schedule by name; `start`/`end` are ignored by the cosine schedule."""
  if name not in BETA_SCHEDULES:
    raise ValueError(f"unknown beta schedule {name!r}; choose one of {sorted(BETA_SCHEDULES)}")
  if num_steps < 1:
    raise ValueError(f"a beta schedule needs at least one step, got num_steps={num_steps}")
  if name == "cosine":
    return cosine_betas(num_steps)
  return BETA_SCHEDULES[name](num_steps, start, end)


def gammas_from_betas(betas: Array) -> Array:
  """γ_0..γ_T with γ_0 = 1 and γ_t = ∏_{i≤t}(1 − β_i); shape (T+1,), strictly decreasing."""
  # Accumulate in log space: 2000 products of numbers near 1 lose less precision that way.
  log_gamma = jnp.cumsum(jnp.log1p(-betas.astype(jnp.float32)))
  return jnp.concatenate([jnp.ones((1,), jnp.float32), jnp.exp(log_gamma)])


# ---------------------------------------------------------------------------------------------
# Continuous log-SNR schedules, t ∈ [0, 1]; t = 0 is (almost) clean, t = 1 (almost) pure noise.


def gamma_from_logsnr(logsnr: Array) -> Array:
  """γ = sigmoid(λ): the signal variance for log-SNR λ."""
  return jax.nn.sigmoid(logsnr)


def logsnr_from_gamma(gamma: Array) -> Array:
  """λ = log(γ / (1 − γ))."""
  return jnp.log(gamma) - jnp.log1p(-gamma)


def cosine_logsnr(t: Array, logsnr_min: float = -15.0, logsnr_max: float = 15.0) -> Array:
  """λ(t) = −2·log tan(t_min + t·(t_max − t_min)), clipped to [logsnr_min, logsnr_max] at the ends.

  t_min = atan(exp(−λ_max/2)), t_max = atan(exp(−λ_min/2)), so λ(0) = λ_max and λ(1) = λ_min.
  """
  t_min = math.atan(math.exp(-0.5 * logsnr_max))
  t_max = math.atan(math.exp(-0.5 * logsnr_min))
  return -2.0 * jnp.log(jnp.tan(t_min + t * (t_max - t_min)))


def shifted_cosine_logsnr(
  t: Array, image_size: int, base: int = 64, logsnr_min: float = -15.0, logsnr_max: float = 15.0
) -> Array:
  """Simple diffusion's resolution shift: λ_d(t) = λ_cos(t) + 2·log(base / d); identity at d = base."""
  return cosine_logsnr(t, logsnr_min, logsnr_max) + 2.0 * math.log(base / image_size)


def interpolated_shifted_cosine_logsnr(
  t: Array,
  low_size: int,
  high_size: int,
  base: int = 64,
  logsnr_min: float = -15.0,
  logsnr_max: float = 15.0,
) -> Array:
  """λ(t) = t·λ_shift(d_low)(t) + (1 − t)·λ_shift(d_high)(t): high-resolution shift near the
  clean end, low-resolution shift near the noisy end."""
  lo = shifted_cosine_logsnr(t, low_size, base, logsnr_min, logsnr_max)
  hi = shifted_cosine_logsnr(t, high_size, base, logsnr_min, logsnr_max)
  return t * lo + (1.0 - t) * hi


def sigmoid_logsnr(
  t: Array, start: float = -3.0, end: float = 3.0, tau: float = 1.0, clip_min: float = 1e-9
) -> Array:
  """Chen (2023) sigmoid schedule: γ(t) = (σ(end/τ) − σ((t(end−start)+start)/τ)) / (σ(end/τ) − σ(start/τ)),
  returned as λ = logit(γ), with γ clipped into [clip_min, 1 − clip_min]."""
  v_start = jax.nn.sigmoid(start / tau)
  v_end = jax.nn.sigmoid(end / tau)
  out = jax.nn.sigmoid((t * (end - start) + start) / tau)
  gamma = jnp.clip((v_end - out) / (v_end - v_start), clip_min, 1.0 - clip_min)
  return logsnr_from_gamma(gamma)


LOGSNR_SCHEDULES = ("cosine", "shifted_cosine", "interpolated_shifted_cosine", "sigmoid")


# ---------------------------------------------------------------------------------------------
# Configured schedules: what training and sampling use.


def logsnr_fn(cfg) -> Callable[[Array], Array]:
  """λ(t) for a config block with `name` and the schedule's own fields (see experiments/configs)."""
  name = cfg.name
  lmin, lmax = cfg.get("logsnr_min", -15.0), cfg.get("logsnr_max", 15.0)
  if name == "cosine":
    return lambda t: cosine_logsnr(t, lmin, lmax)
  if name == "shifted_cosine":
    return lambda t: shifted_cosine_logsnr(t, cfg.image_size, cfg.get("base", 64), lmin, lmax)
  if name == "interpolated_shifted_cosine":
    return lambda t: interpolated_shifted_cosine_logsnr(
      t, cfg.low_size, cfg.image_size, cfg.get("base", 64), lmin, lmax
    )
  if name == "sigmoid":
    return lambda t: sigmoid_logsnr(
      t, cfg.get("start", -3.0), cfg.get("end", 3.0), cfg.get("tau", 1.0)
    )
  raise ValueError(
    f"schedule.name={name!r} is not a log-SNR schedule; choose one of {LOGSNR_SCHEDULES}"
  )


def gamma_grid(cfg, num_steps: int | None = None) -> Array:
  """The decreasing grid γ_0 > γ_1 > … > γ_N that a sampler walks backwards, shape (N+1,).

  `cfg.kind == "beta"`: γ from the β schedule (γ_0 = 1). `cfg.kind == "logsnr"`: γ_n = sigmoid(λ(n/N)).
  `num_steps` overrides cfg.num_steps, which is how an inference grid differs from the training one.
  """
  n = int(num_steps or cfg.num_steps)
  if cfg.kind == "beta":
    return gammas_from_betas(make_betas(cfg.name, n, cfg.get("start", 1e-6), cfg.get("end", 1e-2)))
  if cfg.kind == "logsnr":
    return gamma_from_logsnr(logsnr_fn(cfg)(jnp.linspace(0.0, 1.0, n + 1)))
  raise ValueError(f"schedule.kind={cfg.kind!r}; expected 'beta' or 'logsnr'")


def sample_sr3_gamma(rng: Array, gammas: Array, batch_size: int) -> tuple[Array, Array]:
  """SR3's continuous noise level, one per example: t ~ U{1..T}, then γ ~ U(γ_t, γ_{t−1}).

  This draws from p(γ) = Σ_t (1/T)·U(γ_{t−1}, γ_t) (SR3 §2.4, Algorithm 1). Returns (γ, t), each (B,).
  """
  t_key, u_key = jax.random.split(rng)
  num_steps = gammas.shape[0] - 1
  t = jax.random.randint(t_key, (batch_size,), 1, num_steps + 1)
  u = jax.random.uniform(u_key, (batch_size,), jnp.float32)
  hi, lo = gammas[t - 1], gammas[t]
  return lo + u * (hi - lo), t


def make_train_gamma_sampler(cfg) -> Callable[[Array, int], Array]:
  """rng, batch_size → per-example γ for training, following the configured schedule."""
  if cfg.kind == "beta":
    gammas = gamma_grid(cfg)
    return lambda rng, b: sample_sr3_gamma(rng, gammas, b)[0]
  if cfg.kind == "logsnr":
    fn = logsnr_fn(cfg)
    return lambda rng, b: gamma_from_logsnr(fn(jax.random.uniform(rng, (b,), jnp.float32)))
  raise ValueError(f"schedule.kind={cfg.kind!r}; expected 'beta' or 'logsnr'")
