"""Metrics out of a run: JSONL and TensorBoard event files (tensorboardX, no TensorFlow), process 0 only."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import numpy as np


class MetricWriter:
  """Appends {"step": s, **scalars} to metrics.jsonl and writes TensorBoard scalars and images."""

  def __init__(self, workdir: str | pathlib.Path):
    self.active = jax.process_index() == 0
    self.jsonl = None
    self.tb = None
    if self.active:
      workdir = pathlib.Path(workdir)
      self.jsonl = open(workdir / "metrics.jsonl", "a")
      from tensorboardX import SummaryWriter

      self.tb = SummaryWriter(str(workdir / "tensorboard"))

  def scalars(self, step: int, values: dict[str, Any]) -> None:
    if not self.active:
      return
    clean = {k: float(np.asarray(v)) for k, v in values.items()}
    self.jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
    self.jsonl.flush()
    for k, v in clean.items():
      self.tb.add_scalar(k, v, int(step))

  def image(self, step: int, name: str, image_uint8: np.ndarray) -> None:
    if self.active:
      self.tb.add_image(name, image_uint8, int(step), dataformats="HWC")

  def close(self) -> None:
    if self.active:
      self.jsonl.close()
      self.tb.close()
