"""`sr3 distill`: the rounds of progressive distillation, each an ordinary training run.

Round k's student is WORKDIR/steps_{N/2}, trained by the spine (sr3_jax/train.py) with the loss of
sr3_jax/distill.py; its teacher is the round before's student.
"""

from __future__ import annotations

import sys
from typing import Any

import ml_collections

from sr3_jax import checkpoint, configs, paths, train
from sr3_jax.distill import halvings, logsnr_sampling


def round_config(teacher_config, teacher: str, teacher_steps: int, overrides=()) -> Any:
  """The student's config for one round: the teacher's, with `distill` set and DDIM sampling at
  half the steps on a nesting log-SNR grid, ancestral (η = 1); `overrides` (k=v) last.

  The student learns the teacher's deterministic two-step DDIM jump, but samples best
  stochastically: on the demo task (README, "Few-step students") the 4-step student's η = 0 chain
  copies the teacher's DDIM chain, 0.5 dB under its 50-step DDPM samples, while η = 1 reaches them
  (27.19 against 27.16 dB) with lower LPIPS. `--set sampling.eta=0` keeps the deterministic chain.
  """
  c = ml_collections.ConfigDict(teacher_config.to_dict())
  base = configs.base_config()
  for block in base.keys():  # fields added to sr3_jax since the teacher was trained
    if block not in c:
      c[block] = base[block]
  c.distill = ml_collections.ConfigDict(dict(teacher=teacher, teacher_steps=teacher_steps))
  c.sampling.schedule = logsnr_sampling(c)
  c.sampling.update(dict(sampler="ddim", steps=teacher_steps // 2, eta=1.0))
  c.train.sample_every = 0
  configs.apply_overrides(c, overrides)
  return c


def run(
  teacher: str,
  workdir: str,
  from_steps: int,
  to_steps: int,
  overrides=(),
  log=None,
) -> list[str]:
  """`sr3 distill`: rounds from `from_steps` to `to_steps`, student k in WORKDIR/steps_{N/2}, each
  round's teacher the round before's student. A finished round is skipped and an interrupted one
  resumes from its checkpoint (an ordinary run). Returns the students' workdirs."""
  log = log or sys.stderr
  rounds = halvings(from_steps, to_steps)
  root = paths.resolve(workdir)
  teacher_path = paths.resolve(teacher)
  teacher_config = checkpoint.load_config(teacher_path)
  out = []
  for n in rounds:
    student = f"{root}/steps_{n // 2}"
    config = round_config(teacher_config, teacher_path, n, overrides)
    if checkpoint.finished(student, config.train.num_steps):
      print(f"distill: {student} is done ({n // 2} steps)", file=log)
    else:
      print(f"distill: {n} → {n // 2} steps from {teacher_path} into {student}", file=log)
      train.train_and_evaluate(config, student, log=log)
    out.append(student)
    teacher_path, teacher_config = student, config
  return out
