"""Samplers: ancestral DDPM (SR3's refinement loop), DDIM and DPM-Solver++(2M), for every forward
process of sr3_jax/processes.py.

Each walks a grid of noise levels ℓ_0 (cleanest) … ℓ_N (noisiest) backwards, from noise to y_0, as
one `lax.scan` (nothing returns to Python per step), so a caller wraps the whole sampler in one
`jax.jit`. The grid is independent of the training schedule: the network sees the process's γ,
not a step index. Every update is written per coefficient of the process's basis (pixels for the
Gaussian process, DCT coefficients for blur and band), from that process's α and σ.

`denoise_fn(z, gamma) -> output` is the network with its params and conditioning closed over;
`target` says what it predicts (ε, x0 or v). Randomness comes from `fold_in(rng, step)`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sr3_jax import processes

Array = jax.Array
SAMPLERS = ("ddpm", "ddim", "dpmpp")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """How to sample; see `sample`."""

  name: str = "ddpm"
  target: str = "eps"
  clip_x0: float | None = 1.0  # clip x̂0 to [−c, c]; None: no clipping
  dynamic_threshold: float | None = None  # quantile p of |x̂0| (Imagen); overrides clip_x0
  # ddpm: "beta", the transition variance σ²_{t|s} (SR3's β_t for the Gaussian process), or
  # "posterior", that of q(y_s | y_t, y_0) (DDPM's β̃_t).
  variance: str = "beta"
  eta: float = 0.0  # ddim: 0 deterministic, 1 ancestral-like
  return_every: int = 0  # keep every k-th intermediate y (0: none)
  # "x0": the last step returns x̂0. "z": it lands on y at the grid's ℓ_0 instead (truncated
  # sampling for a cascade's truncated conditioning augmentation; see `truncated_grid`).
  final: str = "x0"


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


def _predict(proc, denoise_fn, z: Array, level: Array, cfg: SamplerConfig, x0_fn=None):
  """(x̂0 in pixels, ε̂ in the process's basis) at scalar level ℓ, with x̂0 thresholded, then
  corrected by `x0_fn`, and ε̂ made consistent with it."""
  lv = jnp.full((z.shape[0],), level, jnp.float32)
  out = denoise_fn(z, proc.network_gamma(lv)).astype(jnp.float32)
  x0, eps = proc.x0_eps(out, z, lv, cfg.target)
  if cfg.clip_x0 is None and cfg.dynamic_threshold is None and x0_fn is None:
    return x0, proc.to_basis(eps)
  x0 = _threshold(x0, cfg)
  if x0_fn is not None:
    x0 = x0_fn(x0)
  a, s = proc.alpha_sigma(lv, z.shape[-3:-1])
  return x0, (proc.to_basis(z) - a * proc.to_basis(x0)) / s


def truncated_grid(levels, stop: float, proc: processes.Process = processes.GAUSSIAN):
  """The grid a truncated reverse process walks: ℓ_0 = `stop`, then every level of `levels`
  noisier than it. Computed on the host (its length depends on the values)."""
  g = np.asarray(levels, np.float64)
  below = g[proc.noisier(g, stop)]
  if below.size == 0:
    raise ValueError(
      f"no level of the sampling grid is noisier than the truncation level "
      f"γ={float(proc.network_gamma(jnp.asarray(stop, jnp.float32))):.4g}; "
      f"lower the next stage's aug_level or use more sampling steps"
    )
  return np.concatenate([[stop], below]).astype(np.float32)


def _ddpm_step(proc, denoise_fn, cfg, x0_fn, z, l_t, l_s, key, is_last):
  """SR3 Algorithm 2 per coefficient: y_s ~ N(posterior mean from x̂0, var), var the transition
  (`beta`) or posterior variance. Written through x̂0 so that clipping applies; unclipped, the
  posterior mean equals SR3's ε-form exactly."""
  x0, _ = _predict(proc, denoise_fn, z, l_t, cfg, x0_fn)
  tr = proc.transition(l_t, l_s, z.shape[-3:-1])
  mean, post_var = proc.posterior(proc.to_basis(x0), proc.to_basis(z), tr)
  var = post_var if cfg.variance == "posterior" else tr["var_ts"]
  noise = jax.random.normal(key, z.shape, z.dtype)
  if cfg.final == "z":  # land on y_s ~ q(y_s | y_t, x̂0), which has exactly the forward marginal
    u_s = jnp.where(is_last, mean + jnp.sqrt(post_var) * noise, mean + jnp.sqrt(var) * noise)
    return proc.from_basis(u_s), x0
  return jnp.where(is_last, x0, proc.from_basis(mean + jnp.sqrt(var) * noise)), x0


def _ddim_step(proc, denoise_fn, cfg, x0_fn, z, l_t, l_s, key, is_last):
  """DDIM (Song et al. 2021, eq. 12) per coefficient: u_s = α_s x̂0 + √(σ_s² − σ²) ε̂ + σ·noise,
  σ = η·(the posterior standard deviation)."""
  x0, eps_u = _predict(proc, denoise_fn, z, l_t, cfg, x0_fn)
  tr = proc.transition(l_t, l_s, z.shape[-3:-1])
  x0_u = proc.to_basis(x0)
  if cfg.eta:
    sigma = cfg.eta * jnp.sqrt(tr["var_ts"] * tr["s_s"] ** 2 / tr["s_t"] ** 2)
    noise = jax.random.normal(key, z.shape, z.dtype)
    u_s = tr["a_s"] * x0_u + jnp.sqrt(jnp.maximum(tr["s_s"] ** 2 - sigma**2, 0.0)) * eps_u
    u_s = u_s + sigma * noise
  else:
    u_s = tr["a_s"] * x0_u + tr["s_s"] * eps_u
  z_s = proc.from_basis(u_s)
  return (z_s if cfg.final == "z" else jnp.where(is_last, x0, z_s)), x0


def sample(
  denoise_fn: Callable[[Array, Array], Array],
  shape: tuple[int, ...],
  levels: Array,
  rng: Array,
  cfg: SamplerConfig = SamplerConfig(),
  proc: processes.Process = processes.GAUSSIAN,
  x0_fn: Callable[[Array], Array] | None = None,
) -> tuple[Array, Array | None]:
  """Runs a sampler over the grid `levels` (N+1,) of process `proc`, cleanest first, from noise
  to y_0 (for the Gaussian process the levels are γ, decreasing).

  Returns (y_0, intermediates), intermediates (N // return_every, *shape) or None. Deterministic
  for a given `rng`. The final step returns x̂0 at ℓ_1 (the grid's ℓ_0 may be exactly clean), or,
  with cfg.final == "z", y at ℓ_0. `x0_fn`, if given, corrects every x̂0 (after thresholding) before
  the step uses it, e.g. a projection onto the images consistent with an LR input.
  """
  y, _, inter = sample_with_x0(denoise_fn, shape, levels, rng, cfg, proc, x0_fn)
  return y, inter


def sample_with_x0(
  denoise_fn,
  shape,
  levels,
  rng,
  cfg: SamplerConfig = SamplerConfig(),
  proc: processes.Process = processes.GAUSSIAN,
  x0_fn: Callable[[Array], Array] | None = None,
):
  """`sample`, also returning the last step's x̂0: (y, x̂0, intermediates)."""
  if cfg.name not in SAMPLERS:
    raise ValueError(f"sampler={cfg.name!r}; choose one of {SAMPLERS}")
  if cfg.final not in ("x0", "z"):
    raise ValueError(f"sampler final={cfg.final!r}; choose 'x0' or 'z'")
  if cfg.variance not in ("beta", "posterior"):
    raise ValueError(f"sampler variance={cfg.variance!r}; choose 'beta' or 'posterior'")
  levels = jnp.asarray(levels, jnp.float32)
  num_steps = levels.shape[0] - 1
  if cfg.return_every and num_steps % cfg.return_every:
    raise ValueError(f"return_every={cfg.return_every} must divide the number of steps {num_steps}")
  init_key, loop_key = jax.random.split(rng)
  z = jax.random.normal(init_key, shape, jnp.float32)
  hw = tuple(shape[-3:-1])
  # Step i goes from level n = N − i to n − 1.
  idx = jnp.arange(num_steps)
  l_t = levels[num_steps - idx]
  l_s = levels[num_steps - idx - 1]
  is_last = idx == num_steps - 1

  if cfg.name in ("ddpm", "ddim"):
    step_fn = _ddpm_step if cfg.name == "ddpm" else _ddim_step

    def body(carry, xs):
      z, _ = carry
      i, lt, ls, last = xs
      z, x0 = step_fn(
        proc, denoise_fn, cfg, x0_fn, z, lt, ls, jax.random.fold_in(loop_key, i), last
      )
      return (z, x0), z

    init = (z, jnp.zeros_like(z))
  else:

    def body(carry, xs):
      # DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) per coefficient, with λ = log(α/σ) of each;
      # first order on the first and last step. x̂0 is carried in the process's basis.
      z, x0_prev, h_prev = carry
      i, lt, ls, last = xs
      x0, _ = _predict(proc, denoise_fn, z, lt, cfg, x0_fn)
      x0_u = proc.to_basis(x0)
      h = proc.half_logsnr(ls, hw) - proc.half_logsnr(lt, hw)
      r = h_prev / jnp.where(jnp.isfinite(h) & (h != 0), h, 1.0)
      second = (1.0 + 0.5 / r) * x0_u - (0.5 / r) * x0_prev
      d = jnp.where((i == 0) | last, x0_u, second)
      tr = proc.transition(lt, ls, hw)
      z_s = proc.from_basis(
        (tr["s_s"] / tr["s_t"]) * proc.to_basis(z) + tr["a_s"] * (-jnp.expm1(-h)) * d
      )
      if cfg.final == "x0":
        z_s = jnp.where(last, proc.from_basis(d), z_s)
      return (z_s, x0_u, h), z_s

    h0 = proc.half_logsnr(levels[0], hw)
    init = (z, jnp.zeros_like(z), jnp.ones(jnp.shape(h0), jnp.float32))

  xs = (idx, l_t, l_s, is_last)
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
  x0_last = final[1] if cfg.name != "dpmpp" else proc.from_basis(final[1])
  return final[0], x0_last, inter
