"""Forward processes behind one interface.

Every forward process sr3_jax trains is Gaussian and diagonal in an orthonormal basis B: with
u = B x, each coefficient follows its own scalar process

    u_ℓ = α(ℓ) ⊙ u_0 + σ(ℓ) ⊙ B ε,   ε ~ N(0, I),

at a noise level ℓ. `Gaussian` is SR3's process (B the identity, ℓ = γ the signal variance,
α = √γ, σ = √(1−γ)); `DCT` holds the blurring and band processes of sr3_jax/frequency.py (B the
orthonormal 2-D DCT, ℓ = t ∈ [0, 1], α and σ per frequency).

A process supplies only: its basis (`to_basis`, `from_basis`), `alpha_sigma(level, hw)`, the noise
level the network is conditioned on (`network_gamma`), how training draws levels and the grid
inference walks. The rest is written once here and in sr3_jax/samplers.py, for every process:
noising, converting a network output (ε, x0 or v) into (x̂0, ε̂) and back, the transition and
posterior a sampler needs, and the half log-SNR DPM-Solver++ steps in.

Per coefficient, with α_{t|s} = α_t/α_s and σ²_{t|s} = σ_t² − α²_{t|s}·σ_s² (s less noisy than t):
  q(u_t | u_s)      = N(α_{t|s} u_s, σ²_{t|s})
  q(u_s | u_t, u_0) = N(α_{t|s} σ_s²/σ_t² · u_t + α_s σ²_{t|s}/σ_t² · u_0,  σ²_{t|s} σ_s²/σ_t²)
and v = α ε − σ x0 inverts as x0 = (α u − σ v)/(α² + σ²), ε = (σ u + α v)/(α² + σ²) (the
denominator is 1 for a variance-preserving process, and is skipped there).

Levels are ordered by the network's γ: a level is noisier than another when its γ is smaller.
A grid (N+1,) lists levels from the cleanest (index 0) to the noisiest (index N).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sr3_jax import frequency, schedules

Array = jax.Array
NAMES = ("gaussian",) + frequency.KINDS
TARGETS = ("eps", "x0", "v")


def _bcast(level: Array, ndim: int = 4) -> Array:
  """(B,) → (B, 1, 1, 1); a scalar stays a scalar."""
  level = jnp.asarray(level, jnp.float32)
  return level.reshape(level.shape + (1,) * (ndim - level.ndim)) if level.ndim else level


class Process:
  """The shared part: everything follows from the basis and α, σ."""

  name: str = ""
  variance_preserving: bool = True  # α² + σ² = 1 for every coefficient and level

  # What a process defines. -------------------------------------------------------------------
  def to_basis(self, x: Array) -> Array:
    raise NotImplementedError

  def from_basis(self, u: Array) -> Array:
    raise NotImplementedError

  def alpha_sigma(self, level: Array, hw: tuple[int, int]) -> tuple[Array, Array]:
    """α(ℓ), σ(ℓ) for levels (B,) or a scalar, broadcastable against NHWC coefficients."""
    raise NotImplementedError

  def network_gamma(self, level: Array) -> Array:
    """The γ the network is conditioned on at `level`."""
    raise NotImplementedError

  def level_from_gamma(self, gamma: float) -> float:
    """The level whose network γ is `gamma` (inverse of `network_gamma`, on the host)."""
    raise NotImplementedError

  def train_levels(self, rng: Array, batch: int) -> Array:
    """Per-example levels (B,) for one training batch."""
    raise NotImplementedError

  def grid(self, num_steps: int) -> Array:
    """The inference grid (num_steps + 1,), cleanest first."""
    raise NotImplementedError

  # Written once for every process. -----------------------------------------------------------
  def q_sample(self, x0: Array, level: Array, noise: Array) -> Array:
    """z_ℓ = B⁻¹(α ⊙ B x0 + σ ⊙ B ε)."""
    a, s = self.alpha_sigma(level, x0.shape[-3:-1])
    return self.from_basis(a * self.to_basis(x0) + s * self.to_basis(noise))

  def eps_from_x0(self, z: Array, level: Array, x0: Array) -> Array:
    a, s = self.alpha_sigma(level, z.shape[-3:-1])
    return self.from_basis((self.to_basis(z) - a * self.to_basis(x0)) / s)

  def x0_from_eps(self, z: Array, level: Array, eps: Array) -> Array:
    a, s = self.alpha_sigma(level, z.shape[-3:-1])
    return self.from_basis((self.to_basis(z) - s * self.to_basis(eps)) / a)

  def x0_eps(self, output: Array, z: Array, level: Array, target: str) -> tuple[Array, Array]:
    """A network output in parameterisation `target` → (x̂0, ε̂), both in pixel space."""
    if target == "eps":
      return self.x0_from_eps(z, level, output), output
    if target == "x0":
      return output, self.eps_from_x0(z, level, output)
    if target == "v":
      a, s = self.alpha_sigma(level, z.shape[-3:-1])
      u, v = self.to_basis(z), self.to_basis(output)
      x0, eps = a * u - s * v, s * u + a * v
      if not self.variance_preserving:
        norm = a**2 + s**2
        x0, eps = x0 / norm, eps / norm
      return self.from_basis(x0), self.from_basis(eps)
    raise ValueError(f"diffusion.target={target!r}; choose one of {TARGETS}")

  def output(self, x0: Array, eps: Array, level: Array, target: str) -> Array:
    """(x0, ε) → what a network of parameterisation `target` predicts: the training target."""
    if target == "eps":
      return eps
    if target == "x0":
      return x0
    if target == "v":
      a, s = self.alpha_sigma(level, x0.shape[-3:-1])
      return self.from_basis(a * self.to_basis(eps) - s * self.to_basis(x0))
    raise ValueError(f"diffusion.target={target!r}; choose one of {TARGETS}")

  def transition(self, level_t: Array, level_s: Array, hw) -> dict[str, Array]:
    """Per-coefficient quantities of a step from level t to the less noisy level s."""
    a_t, s_t = self.alpha_sigma(level_t, hw)
    a_s, s_s = self.alpha_sigma(level_s, hw)
    a_ts = a_t / a_s
    var_ts = jnp.maximum(s_t**2 - a_ts**2 * s_s**2, 0.0)
    return dict(a_t=a_t, s_t=s_t, a_s=a_s, s_s=s_s, a_ts=a_ts, var_ts=var_ts)

  def posterior(self, u0: Array, u_t: Array, tr: dict[str, Array]) -> tuple[Array, Array]:
    """Mean and variance of q(u_s | u_t, u_0), in the basis."""
    s_t2, s_s2 = tr["s_t"] ** 2, tr["s_s"] ** 2
    mean = (tr["a_ts"] * s_s2 / s_t2) * u_t + (tr["a_s"] * tr["var_ts"] / s_t2) * u0
    return mean, tr["var_ts"] * s_s2 / s_t2

  def half_logsnr(self, level: Array, hw) -> Array:
    """λ = log(α/σ) per coefficient (DPM-Solver's time variable)."""
    a, s = self.alpha_sigma(level, hw)
    return jnp.log(a) - jnp.log(s)

  def noisier(self, levels, level: float) -> np.ndarray:
    """On the host: which of `levels` are noisier than `level`."""
    g = np.asarray(self.network_gamma(jnp.asarray(levels, jnp.float32)), np.float64)
    g0 = float(self.network_gamma(jnp.asarray(level, jnp.float32)))
    return g < g0 - 1e-9


class Gaussian(Process):
  """SR3's process: y_γ = √γ·y_0 + √(1−γ)·ε (SR3 eq. 4), level = γ.

  Training draws γ from `schedule` (SR3's p(γ) for a β schedule, or γ = sigmoid(λ(t)), t ~ U(0, 1));
  inference walks `sampling_schedule`'s γ grid. Either may be None for the pure math.
  """

  name = "gaussian"

  def __init__(self, schedule: Any = None, sampling_schedule: Any = None):
    self.schedule = schedule
    self.sampling_schedule = sampling_schedule
    # Built once, outside any trace: a β schedule's γ grid becomes a constant of the train step.
    self._train_levels = schedules.make_train_gamma_sampler(schedule) if schedule else None

  def to_basis(self, x):
    return x

  def from_basis(self, u):
    return u

  def alpha_sigma(self, level, hw=None):
    g = _bcast(level)
    return jnp.sqrt(g), jnp.sqrt(1.0 - g)

  def network_gamma(self, level):
    return jnp.asarray(level, jnp.float32)

  def level_from_gamma(self, gamma):
    return float(gamma)

  def train_levels(self, rng, batch):
    return self._train_levels(rng, batch)

  def grid(self, num_steps):
    return schedules.gamma_grid(self.sampling_schedule, num_steps)


class DCT(Process):
  """A process diagonal in the orthonormal 2-D DCT basis (sr3_jax/frequency.py): `blur` or `band`,
  level = t ∈ [0, 1]. Training draws t ~ U(0, 1); inference walks t uniformly from 1 to 0. The
  network sees the γ of the base cosine schedule."""

  def __init__(self, kind: str, fcfg):
    if kind not in frequency.KINDS:
      raise ValueError(f"diffusion.process={kind!r}; choose one of {NAMES}")
    self.name, self.fcfg = kind, fcfg
    self.variance_preserving = kind == "band"

  def to_basis(self, x):
    return frequency.dct2(x)

  def from_basis(self, u):
    return frequency.idct2(u)

  def alpha_sigma(self, level, hw):
    level = jnp.asarray(level, jnp.float32)
    a, s = frequency.alpha_sigma(level.reshape(-1), tuple(hw), self.name, self.fcfg)
    return (a, s) if level.ndim else (a[0], s[0])

  def network_gamma(self, level):
    return frequency.network_gamma(level, self.fcfg)

  def level_from_gamma(self, gamma):
    # Inverse of the base cosine schedule λ(t) = −2·log tan(t_min + t·(t_max − t_min)).
    lam = math.log(gamma) - math.log1p(-gamma)
    t_min = math.atan(math.exp(-0.5 * self.fcfg.logsnr_max))
    t_max = math.atan(math.exp(-0.5 * self.fcfg.logsnr_min))
    return (math.atan(math.exp(-0.5 * lam)) - t_min) / (t_max - t_min)

  def train_levels(self, rng, batch):
    return jax.random.uniform(rng, (batch,))

  def grid(self, num_steps):
    return jnp.linspace(1.0, 0.0, num_steps + 1)[::-1]


def from_config(config) -> Process:
  """The process a config trains and samples with (`diffusion.process`)."""
  name = config.diffusion.get("process", "gaussian")
  if name == "gaussian":
    return Gaussian(config.schedule, config.sampling.schedule)
  return DCT(name, config.frequency)


def validate(config) -> None:
  name = config.diffusion.get("process", "gaussian")
  if name not in NAMES:
    raise ValueError(f"diffusion.process={name!r}; choose one of {NAMES}")
  if name != "gaussian" and not config.frequency.get("width", 1.0) > 0.0:
    raise ValueError(f"frequency.width={config.frequency.width} must be positive")


GAUSSIAN = Gaussian()  # the math of SR3's process, without a configured schedule
