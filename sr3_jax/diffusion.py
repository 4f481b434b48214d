"""Forward process, prediction targets and the training loss.

Notation (SR3): y_0 is the clean target image, γ ∈ (0, 1) the signal variance, and
  y_γ = √γ·y_0 + √(1−γ)·ε,   ε ~ N(0, I)                    (SR3 eq. 4)
Writing α = √γ and σ = √(1−γ) (so α² + σ² = 1), the three targets a network may predict are
  ε,   x0 = y_0,   v = α·ε − σ·x0                              (Salimans & Ho 2022)
and each converts exactly into the others given (y_γ, γ).

The target y_0 is the HR image (SR3) or, by config, the residual HR − bicubic(LR) times a scale,
which starts every sample from bicubic quality.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from sr3_jax import augment, consistency, frequency, schedules
from sr3_jax.data import degrade

Array = jax.Array
TARGETS = ("eps", "x0", "v")
LOSSES = ("l1", "l2")


def _bcast(gamma: Array, x: Array) -> Array:
  """(B,) → (B, 1, 1, 1) so that a per-example γ scales an NHWC batch."""
  gamma = jnp.asarray(gamma, jnp.float32)
  return gamma.reshape(gamma.shape + (1,) * (x.ndim - gamma.ndim))


def q_sample(y0: Array, gamma: Array, noise: Array) -> Array:
  """y_γ = √γ·y_0 + √(1−γ)·ε (SR3 eq. 4); γ has shape (B,) or broadcasts."""
  g = _bcast(gamma, y0)
  return jnp.sqrt(g) * y0 + jnp.sqrt(1.0 - g) * noise


def eps_from_x0(z: Array, gamma: Array, x0: Array) -> Array:
  g = _bcast(gamma, z)
  return (z - jnp.sqrt(g) * x0) / jnp.sqrt(1.0 - g)


def x0_from_eps(z: Array, gamma: Array, eps: Array) -> Array:
  g = _bcast(gamma, z)
  return (z - jnp.sqrt(1.0 - g) * eps) / jnp.sqrt(g)


def v_from_x0_eps(gamma: Array, x0: Array, eps: Array) -> Array:
  """v = α·ε − σ·x0."""
  g = _bcast(gamma, x0)
  return jnp.sqrt(g) * eps - jnp.sqrt(1.0 - g) * x0


def x0_eps_from_v(z: Array, gamma: Array, v: Array) -> tuple[Array, Array]:
  """x0 = α·z − σ·v and ε = σ·z + α·v (exact, since α² + σ² = 1)."""
  g = _bcast(gamma, z)
  a, s = jnp.sqrt(g), jnp.sqrt(1.0 - g)
  return a * z - s * v, s * z + a * v


def x0_eps_from_output(output: Array, z: Array, gamma: Array, target: str) -> tuple[Array, Array]:
  """Turns a network output of the given parameterisation into (x̂0, ε̂)."""
  if target == "eps":
    return x0_from_eps(z, gamma, output), output
  if target == "x0":
    return output, eps_from_x0(z, gamma, output)
  if target == "v":
    return x0_eps_from_v(z, gamma, output)
  raise ValueError(f"diffusion.target={target!r}; choose one of {TARGETS}")


def target_from_x0_eps(x0: Array, eps: Array, gamma: Array, target: str) -> Array:
  if target == "eps":
    return eps
  if target == "x0":
    return x0
  if target == "v":
    return v_from_x0_eps(gamma, x0, eps)
  raise ValueError(f"diffusion.target={target!r}; choose one of {TARGETS}")


def min_snr_weight(gamma: Array, target: str, k: float) -> Array:
  """Min-SNR-k weighting (Hang et al. 2023) expressed for each parameterisation's own loss.

  The x0-space weight is min(SNR, k); dividing by the factor that maps the target's error to the
  x0 error gives min(SNR, k)/SNR for ε, min(SNR, k) for x0 and min(SNR, k)/(SNR + 1) for v.
  """
  snr = gamma / (1.0 - gamma)
  clipped = jnp.minimum(snr, k)
  if target == "eps":
    return clipped / snr
  if target == "x0":
    return clipped
  return clipped / (snr + 1.0)


# ---------------------------------------------------------------------------------------------
# What the model diffuses: the HR image or a scaled residual over bicubic.


def make_target_image(hr: Array, lr_up: Array, cfg) -> Array:
  """y_0 for training: HR itself, or (HR − bicubic(LR))·residual_scale."""
  if cfg.diffuse == "hr":
    return hr
  if cfg.diffuse == "residual":
    return (hr - lr_up) * cfg.residual_scale
  raise ValueError(f"diffusion.diffuse={cfg.diffuse!r}; choose 'hr' or 'residual'")


def image_from_target(y0: Array, lr_up: Array, cfg) -> Array:
  """Inverse of make_target_image: a sampled y_0 back to an HR image in [−1, 1]."""
  if cfg.diffuse == "hr":
    return y0
  return lr_up + y0 / cfg.residual_scale


# ---------------------------------------------------------------------------------------------
# The loss.


@dataclasses.dataclass(frozen=True)
class LossOutput:
  """What one loss evaluation reports besides the scalar it returns."""

  loss: Array  # scalar, the weighted mean
  loss_per_example: Array  # (B,)
  gamma: Array  # (B,) the sampled noise levels


jax.tree_util.register_dataclass(
  LossOutput, data_fields=["loss", "loss_per_example", "gamma"], meta_fields=[]
)


def make_loss_fn(
  apply_fn: Callable[..., Array], config, dropout_key_fn: Callable[[Array], Array] = lambda k: k
) -> Callable[..., tuple[Array, LossOutput]]:
  """Builds loss_fn(params, batch, rng, train=True) → (loss, LossOutput).

  `apply_fn(params, z, gamma, cond, train=..., rngs=..., **extra)` is the network (model.apply).
  `batch["hr"]` holds HR images (B, H, W, C) in [−1, 1]; the LR input is made from it on device
  and, for cascade stages, augmented (sr3_jax/augment.py). A base stage (model.conditioning
  'none') has no LR input; a class-conditional one reads `batch["label"]` and replaces a share
  `diffusion.p_uncond` of the labels with the null class for classifier-free guidance.
  Noise levels come from SR3's p(γ) per example (β schedules) or from λ(t), t ~ U(0, 1); with
  `diffusion.process` 'blur' or 'band' the forward process is the DCT-diagonal one of
  sr3_jax/frequency.py at t ~ U(0, 1). `diffusion.consistency_weight` λ adds λ·‖D(x̂0) − x_lr‖²
  (sr3_jax/consistency.py) against the clean LR input. `dropout_key_fn` turns the dropout key into
  the generator the train step chose (`train.dropout_key`); the default keeps Threefry.
  """
  dcfg = config.diffusion
  factor = config.data.factor
  sample_gamma = schedules.make_train_gamma_sampler(config.schedule)
  if dcfg.target not in TARGETS:
    raise ValueError(f"diffusion.target={dcfg.target!r}; choose one of {TARGETS}")
  if dcfg.loss not in LOSSES:
    raise ValueError(f"diffusion.loss={dcfg.loss!r}; choose one of {LOSSES}")

  has_lr = config.model.conditioning != "none"
  acfg = config.get("augment")
  augmented = acfg is not None and (acfg.noise or acfg.blur_prob > 0)
  num_classes = config.model.get("num_classes", 0)
  process = dcfg.get("process", "gaussian")
  fcfg = config.get("frequency")
  cons_weight = float(dcfg.get("consistency_weight", 0.0))
  if cons_weight and not has_lr:
    raise ValueError("diffusion.consistency_weight needs an LR input; a base stage has none")

  def loss_fn(params: Any, batch: dict[str, Array], rng: Array, train: bool = True):
    hr = batch["hr"].astype(jnp.float32)
    gamma_key, noise_key, dropout_key, aug_key, label_key = jax.random.split(rng, 5)
    dropout_key = dropout_key_fn(dropout_key)
    extra = {}
    lr_up = None
    if has_lr:
      lr = lr_clean = degrade.downsample(hr, factor, value_range=(-1.0, 1.0))
      if augmented:
        lr, level = augment.augment_lr(lr, aug_key, acfg)
        if config.model.get("aug_embedding", False):
          extra["aug_level"] = level
      lr_up = degrade.upsample(lr, factor, value_range=(-1.0, 1.0))
    if num_classes:
      label = batch["label"].astype(jnp.int32)
      drop = jax.random.uniform(label_key, label.shape) < dcfg.get("p_uncond", 0.0)
      extra["label"] = jnp.where(drop, num_classes, label)
    y0 = make_target_image(hr, lr_up, dcfg)
    noise = jax.random.normal(noise_key, y0.shape, jnp.float32)
    if process == "gaussian":
      gamma = sample_gamma(gamma_key, hr.shape[0])
      z = q_sample(y0, gamma, noise)
    else:
      t = jax.random.uniform(gamma_key, (hr.shape[0],))
      z = frequency.q_sample(y0, t, noise, process, fcfg)
      gamma = frequency.network_gamma(t, fcfg)
    out = apply_fn(params, z, gamma, lr_up, train=train, rngs={"dropout": dropout_key}, **extra)
    out = out.astype(jnp.float32)
    target = (
      target_from_x0_eps(y0, noise, gamma, dcfg.target)
      if process == "gaussian"
      else (noise if dcfg.target == "eps" else y0)
    )
    err = out - target
    err = jnp.abs(err) if dcfg.loss == "l1" else jnp.square(err)
    per_example = jnp.mean(err, axis=tuple(range(1, err.ndim)))
    if dcfg.get("min_snr_gamma"):
      per_example = per_example * min_snr_weight(gamma, dcfg.target, dcfg.min_snr_gamma)
    if cons_weight:
      if process == "gaussian":
        x0, _ = x0_eps_from_output(out, z, gamma, dcfg.target)
      elif dcfg.target == "x0":
        x0 = out
      else:  # x̂0 per DCT coefficient: (u_t − σ_t ε̂)/α_t
        a, s_ = frequency.alpha_sigma(t, z.shape[1:3], process, fcfg)
        x0 = frequency.idct2((frequency.dct2(z) - s_ * frequency.dct2(out)) / a)
      image = jnp.clip(image_from_target(x0, lr_up, dcfg), -1.0, 1.0)
      per_example = per_example + cons_weight * consistency.loss(image, lr_clean, factor)
    loss = jnp.mean(per_example)
    return loss, LossOutput(loss=loss, loss_per_example=per_example, gamma=gamma)

  return loss_fn
