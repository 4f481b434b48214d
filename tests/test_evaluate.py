"""`sr3 eval` on a tiny trained checkpoint writes a well-formed eval.json and table."""

import json
import subprocess
import sys

import numpy as np
import pytest

from sr3_jax import evaluate
from sr3_jax.checkpoint import resolve_checkpoint


def test_eval_writes_json_and_table(tiny_workdir, tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "sr3_jax",
      "eval",
      "--checkpoint",
      str(tiny_workdir / "checkpoints" / "2"),
      "--num-images",
      "2",
      "--samples",
      "2",
      "--steps",
      "3",
      "--output",
      str(tmp_path),
    ],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().splitlines()[-1] == str(tmp_path / "eval.json")
  r = json.loads((tmp_path / "eval.json").read_text())
  assert (r["num_images"], r["samples"], r["steps"], r["step"], r["split"]) == (2, 2, 3, 2, "test")
  for m in evaluate.METHODS:
    for k in evaluate.METRICS:
      s = r["metrics"][m][k]
      assert s["ci95"][0] <= s["mean"] <= s["ci95"][1]
      assert len(r["per_image"][m][k]) == 2
  assert r["metrics"]["bicubic"]["psnr"]["mean"] > 20  # 4× bicubic on real photographs
  table = (tmp_path / "eval.md").read_text()
  assert table.count("\n| ") == 4 and "sr3_mean" in table and "bicubic" in table


def test_bootstrap_interval_covers_the_mean():
  lo, hi = evaluate.bootstrap_ci(np.arange(100.0))
  assert lo < 49.5 < hi and hi - lo < 15


def test_bad_checkpoint_paths(tmp_path):
  with pytest.raises(FileNotFoundError, match="neither a workdir"):
    resolve_checkpoint(str(tmp_path))
