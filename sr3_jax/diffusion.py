"""What the model diffuses and the training loss.

The forward process (SR3's y_γ = √γ·y_0 + √(1−γ)·ε, or the blur and band processes) is
sr3_jax/processes.py; the network predicts ε, x0 or v = α·ε − σ·x0 (Salimans & Ho 2022) of it.
The target y_0 is the HR image (SR3) or, by config, the residual HR − bicubic(LR) times a scale,
which starts every sample from bicubic quality.

The loss is built from three pieces, each reading one part of the config: the conditioning
(`make_conditioner`: the LR input, its augmentation and class labels), the forward process
(`processes.from_config`) and the objective (`make_objective`: the `diffusion` block).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from sr3_jax import augment, consistency, processes
from sr3_jax.data import degrade

Array = jax.Array
TARGETS = processes.TARGETS
LOSSES = ("l1", "l2")


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


def make_conditioner(config) -> Callable[..., tuple[Array | None, Array | None, dict]]:
  """condition(batch, hr, aug_key, label_key, lr=None) → (clean LR, bicubic-upsampled network LR,
  extra network inputs). Reads `data.factor`, the model's conditioning fields, the `augment` block
  and `diffusion.p_uncond`.

  The LR input is made from the HR batch on device (or is `lr`, e.g. the stage below's sample in
  joint fine-tuning, sr3_jax/joint.py) and, for cascade stages, augmented (sr3_jax/augment.py). A base stage (model.conditioning 'none') has no LR input; a
  class-conditional one reads `batch["label"]` and replaces a share `p_uncond` of the labels with
  the null class for classifier-free guidance.
  """
  factor = config.data.factor
  has_lr = config.model.conditioning != "none"
  acfg = config.get("augment")
  augmented = acfg is not None and (acfg.noise or acfg.blur_prob > 0)
  aug_embedding = config.model.get("aug_embedding", False)
  num_classes = config.model.get("num_classes", 0)
  p_uncond = config.diffusion.get("p_uncond", 0.0)

  def condition(batch, hr, aug_key, label_key, lr=None):
    extra = {}
    lr_clean = lr_up = None
    if has_lr:
      if lr is None:
        lr = degrade.downsample(hr, factor, value_range=(-1.0, 1.0))
      lr_clean = lr
      if augmented:
        lr, level = augment.augment_lr(lr, aug_key, acfg)
        if aug_embedding:
          extra["aug_level"] = level
      lr_up = degrade.upsample(lr, factor, value_range=(-1.0, 1.0))
    if num_classes:
      label = batch["label"].astype(jnp.int32)
      drop = jax.random.uniform(label_key, label.shape) < p_uncond
      extra["label"] = jnp.where(drop, num_classes, label)
    return lr_clean, lr_up, extra

  return condition


def make_objective(dcfg, proc: processes.Process, factor: int) -> Callable[..., Array]:
  """objective(out, y0, noise, z, level, lr_clean, lr_up) → per-example loss (B,), from the
  `diffusion` block: the target's parameterisation, L1 or L2, Min-SNR weighting, and
  `consistency_weight` λ, which adds λ·‖D(x̂0) − x_lr‖² (sr3_jax/consistency.py) against the clean
  LR input."""
  if dcfg.target not in TARGETS:
    raise ValueError(f"diffusion.target={dcfg.target!r}; choose one of {TARGETS}")
  if dcfg.loss not in LOSSES:
    raise ValueError(f"diffusion.loss={dcfg.loss!r}; choose one of {LOSSES}")
  cons_weight = float(dcfg.get("consistency_weight", 0.0))
  min_snr = dcfg.get("min_snr_gamma")

  def objective(out, y0, noise, z, level, lr_clean, lr_up):
    err = out - proc.output(y0, noise, level, dcfg.target)
    err = jnp.abs(err) if dcfg.loss == "l1" else jnp.square(err)
    per_example = jnp.mean(err, axis=tuple(range(1, err.ndim)))
    if min_snr:
      per_example = per_example * min_snr_weight(proc.network_gamma(level), dcfg.target, min_snr)
    if cons_weight:
      x0, _ = proc.x0_eps(out, z, level, dcfg.target)
      image = jnp.clip(image_from_target(x0, lr_up, dcfg), -1.0, 1.0)
      per_example = per_example + cons_weight * consistency.loss(image, lr_clean, factor)
    return per_example

  return objective


def make_loss_fn(
  apply_fn: Callable[..., Array], config, dropout_key_fn: Callable[[Array], Array] = lambda k: k
) -> Callable[..., tuple[Array, LossOutput]]:
  """Builds loss_fn(params, batch, rng, train=True, *, lr=None, noise=None) → (loss, LossOutput).

  `apply_fn(params, z, gamma, cond, train=..., rngs=..., **extra)` is the network (model.apply).
  `batch["hr"]` holds HR images (B, H, W, C) in [−1, 1]. Each example gets a level of the
  config's forward process (SR3's p(γ) for β schedules, λ(t) with t ~ U(0, 1) for log-SNR ones,
  t ~ U(0, 1) for blur and band) and is noised to it; the network sees that level's γ.
  `dropout_key_fn` turns the dropout key into the generator the train step chose
  (`train.dropout_key`); the default keeps Threefry. `lr` replaces the LR input made from the HR
  batch and `noise` the drawn ε (joint fine-tuning feeds a stage its lower stage's sample and, with
  shared hierarchical noise, noise derived from the stage above's).
  """
  proc = processes.from_config(config)
  condition = make_conditioner(config)
  objective = make_objective(config.diffusion, proc, config.data.factor)
  if config.diffusion.get("consistency_weight", 0.0) and config.model.conditioning == "none":
    raise ValueError("diffusion.consistency_weight needs an LR input; a base stage has none")

  def loss_fn(
    params: Any,
    batch: dict[str, Array],
    rng: Array,
    train: bool = True,
    *,
    lr: Array | None = None,
    noise: Array | None = None,
  ):
    hr = batch["hr"].astype(jnp.float32)
    level_key, noise_key, dropout_key, aug_key, label_key = jax.random.split(rng, 5)
    lr_clean, lr_up, extra = condition(batch, hr, aug_key, label_key, lr)
    y0 = make_target_image(hr, lr_up, config.diffusion)
    if noise is None:
      noise = jax.random.normal(noise_key, y0.shape, jnp.float32)
    level = proc.train_levels(level_key, hr.shape[0])
    z = proc.q_sample(y0, level, noise)
    gamma = proc.network_gamma(level)
    rngs = {"dropout": dropout_key_fn(dropout_key)}
    out = apply_fn(params, z, gamma, lr_up, train=train, rngs=rngs, **extra).astype(jnp.float32)
    per_example = objective(out, y0, noise, z, level, lr_clean, lr_up)
    loss = jnp.mean(per_example)
    return loss, LossOutput(loss=loss, loss_per_example=per_example, gamma=gamma)

  return loss_fn
