"""Progressive distillation (Salimans & Ho 2022): a student that takes half its teacher's steps.

A distillation run is an ordinary `sr3 train` run whose config names a teacher
(`distill.teacher`, a workdir or step folder, and `distill.teacher_steps` N): the student starts
from the teacher's EMA params and trains with the same train state, mesh, Orbax checkpoints,
preemption handling and exact resume as any run; only the loss differs. For each example a
student step index i ∈ {1 … N/2} is drawn; on the teacher's N-step grid (cleanest first) the
student's step goes from level a = ℓ_2i to c = ℓ_2i−2, the teacher's two DDIM steps a → b = ℓ_2i−1
→ c. From z_a = α_a·y0 + σ_a·ε, the teacher's two steps give z_c, and the student's target is the
y0 that makes one DDIM step from z_a land on z_c:

  ỹ = (z_c − r·z_a) / (α_c − r·α_a),  r = σ_c / σ_a,

with ε̃ = (z_a − α_a·ỹ) / σ_a. The student is trained on its own parameterisation of (ỹ, ε̃) (ε, x0
or v, `diffusion.target`) with a squared error: for v this is the paper's SNR + 1 weighting in
x-space; ε students (SR3's default) are allowed, though the paper found ε unstable at one or two
steps. The teacher runs in inference mode (no dropout) and its x̂0 is clipped to [−1, 1] when the
HR image itself is diffused, as the samplers do.

Grids must nest (the student's N/2-step grid is every other level of the teacher's), which a
log-SNR sampling schedule does: γ_n = sigmoid(λ(n/N)). `sr3 distill` gives a β-schedule teacher a
cosine log-SNR sampling grid spanning the levels it was trained on.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sr3_jax import checkpoint, diffusion, paths, processes, schedules

Array = jax.Array
# Fields a student must share with its teacher (the network and what it predicts).
SAME = ("model", "data.image_size", "data.factor", "diffusion.diffuse", "diffusion.residual_scale",
        "diffusion.target", "diffusion.process")  # fmt: skip


def is_distillation(config) -> bool:
  return bool(config.get("distill") and config.distill.get("teacher"))


def validate(config) -> None:
  """A distillation config's own checks: one error naming the value and the fix."""
  d = config.distill
  n = int(d.teacher_steps)
  if n < 2 or n % 2:
    raise ValueError(
      f"distill.teacher_steps={n}: the student takes half the teacher's steps, so it must be an "
      "even number ≥ 2 (e.g. 64, 32, …, 2)"
    )
  if config.diffusion.get("process", "gaussian") != "gaussian":
    raise ValueError(
      f"diffusion.process={config.diffusion.process!r}: distillation's DDIM targets are for the "
      "Gaussian process; distill a gaussian model"
    )
  if config.sampling.schedule.kind != "logsnr":
    raise ValueError(
      f"sampling.schedule.kind={config.sampling.schedule.kind!r}: a student's grid must be every "
      "other level of its teacher's, which a log-SNR schedule gives; set sampling.schedule.kind="
      "'logsnr' (sr3 distill does this for a β-schedule teacher)"
    )
  if config.sampling.steps * 2 != n:
    raise ValueError(
      f"sampling.steps={config.sampling.steps} but distill.teacher_steps={n}: the student "
      f"samples with {n // 2} steps"
    )


def _get(config, dotted: str):
  for part in dotted.split("."):
    config = config.get(part) if hasattr(config, "get") else None
  return config.to_dict() if hasattr(config, "to_dict") else config


# How a network computes, not what it is: the same params load either way.
HOW = ("model.conv_impl", "model.dtype", "model.norm_dtype", "model.remat")


def difference(config, other, fields=SAME) -> tuple[str, Any, Any] | None:
  """The first of `fields` (dotted; a dict field names its first differing key, ignoring HOW)
  where `config` and `other` differ, as (field, value here, value there); None when they agree."""
  for field in fields:
    mine, theirs = _get(config, field), _get(other, field)
    if isinstance(mine, dict) and isinstance(theirs, dict):
      drop = {h.rpartition(".")[2] for h in HOW if h.rpartition(".")[0] == field}
      mine = {k: v for k, v in mine.items() if k not in drop}
      theirs = {k: v for k, v in theirs.items() if k not in drop}
    if mine != theirs:
      if isinstance(mine, dict) and isinstance(theirs, dict):
        key = next(k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k))
        field, mine, theirs = f"{field}.{key}", mine.get(key), theirs.get(key)
      return field, mine, theirs
  return None


def check_teacher(config, teacher_config) -> None:
  """The teacher must be a checkpoint of the same network predicting the same thing."""
  diff = difference(config, teacher_config)
  if diff:
    field, mine, theirs = diff
    raise ValueError(
      f"distill.teacher {config.distill.teacher} is a checkpoint of another config: {field} is "
      f"{theirs!r} there and {mine!r} here; distill from a teacher of this config"
    )


def load_teacher(config) -> tuple[Any, int]:
  """(teacher EMA params on the local devices, its step), after checking it fits `config`."""
  path = paths.resolve(config.distill.teacher)
  teacher_config, _, params, step = checkpoint.load_for_inference(path)
  check_teacher(config, teacher_config)
  return params, step


def make_loss_fn(
  apply_fn: Callable[..., Array], config, dropout_key_fn: Callable[[Array], Array] = lambda k: k
) -> Callable[..., tuple[Array, diffusion.LossOutput]]:
  """loss_fn(params, batch, rng, teacher_params, train=True) → (loss, LossOutput)."""
  validate(config)
  proc = processes.from_config(config)
  condition = diffusion.make_conditioner(config)
  dcfg = config.diffusion
  n = int(config.distill.teacher_steps)
  clip = dcfg.diffuse == "hr"

  def ddim(params, z, level, to_level, cond, extra):
    out = apply_fn(params, z, proc.network_gamma(level), cond, train=False, **extra)
    x0, eps = proc.x0_eps(out.astype(jnp.float32), z, level, dcfg.target)
    if clip:
      x0 = jnp.clip(x0, -1.0, 1.0)
      eps = proc.eps_from_x0(z, level, x0)
    a, s = proc.alpha_sigma(to_level, z.shape[-3:-1])
    return a * x0 + s * eps

  def loss_fn(params, batch, rng, teacher_params, train: bool = True):
    grid = proc.grid(n)  # (N+1,) cleanest first
    hr = batch["hr"].astype(jnp.float32)
    step_key, noise_key, dropout_key, aug_key, label_key = jax.random.split(rng, 5)
    lr_clean, lr_up, extra = condition(batch, hr, aug_key, label_key)
    y0 = diffusion.make_target_image(hr, lr_up, dcfg)
    noise = jax.random.normal(noise_key, y0.shape, jnp.float32)
    i = jax.random.randint(step_key, (hr.shape[0],), 1, n // 2 + 1)
    la, lb, lc = grid[2 * i], grid[2 * i - 1], grid[2 * i - 2]
    z_a = proc.q_sample(y0, la, noise)
    z_b = ddim(teacher_params, z_a, la, lb, lr_up, extra)
    z_c = ddim(teacher_params, z_b, lb, lc, lr_up, extra)
    hw = z_a.shape[-3:-1]
    (al_a, s_a), (al_c, s_c) = proc.alpha_sigma(la, hw), proc.alpha_sigma(lc, hw)
    r = s_c / s_a
    y_t = jax.lax.stop_gradient((z_c - r * z_a) / (al_c - r * al_a))
    eps_t = jax.lax.stop_gradient((z_a - al_a * y_t) / s_a)
    gamma = proc.network_gamma(la)
    rngs = {"dropout": dropout_key_fn(dropout_key)}
    out = apply_fn(params, z_a, gamma, lr_up, train=train, rngs=rngs, **extra).astype(jnp.float32)
    err = out - proc.output(y_t, eps_t, la, dcfg.target)
    per_example = jnp.mean(jnp.square(err), axis=tuple(range(1, err.ndim)))
    loss = jnp.mean(per_example)
    return loss, diffusion.LossOutput(loss=loss, loss_per_example=per_example, gamma=gamma)

  return loss_fn


def halvings(from_steps: int, to_steps: int) -> list[int]:
  """Teacher step counts of each round, e.g. 64 → 4: [64, 32, 16, 8]."""
  if to_steps < 1 or from_steps <= to_steps:
    raise ValueError(f"--steps-from {from_steps} must exceed --steps-to {to_steps} (≥ 1)")
  k = math.log2(from_steps / to_steps)
  if k != int(k):
    raise ValueError(
      f"--steps-from {from_steps} does not halve to --steps-to {to_steps}: each round halves the "
      f"steps; use --steps-from {to_steps * 2 ** max(1, round(k))}"
    )
  return [from_steps // 2**r for r in range(int(k))]


def logsnr_sampling(config) -> ml_collections.ConfigDict:
  """A cosine log-SNR sampling schedule spanning the γ range the model was trained on (for a
  β-schedule teacher; clipped to ±20)."""
  s = ml_collections.ConfigDict(config.sampling.schedule.to_dict())
  if s.kind == "logsnr":
    return s
  tcfg = config.schedule
  if tcfg.kind == "beta":
    g = np.asarray(schedules.gamma_grid(tcfg), np.float64)
    lo, hi = g[-1], g[1]
  else:
    lo = hi = None
  logit = lambda x: float(np.log(x) - np.log1p(-x))
  s.update(
    dict(
      kind="logsnr",
      name="cosine",
      logsnr_min=max(-20.0, logit(max(lo, 1e-12))) if lo is not None else -20.0,
      logsnr_max=min(20.0, logit(min(hi, 1 - 1e-9))) if hi is not None else 20.0,
    )
  )
  return s
