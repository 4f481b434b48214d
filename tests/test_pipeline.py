"""Pipelined cascade stages over disjoint device groups, on 8 simulated devices (own process)."""

import json
import pathlib
import subprocess
import sys

import pytest

from sr3_jax import cascade

HERE = pathlib.Path(__file__).resolve().parent


def test_pipelined_stages_give_the_sequential_images_on_8_devices():
  proc = subprocess.run(
    [sys.executable, str(HERE / "pipeline_check.py")],
    capture_output=True,
    text=True,
    timeout=900,
    cwd=HERE.parent,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  for g in ("4_4", "2_6"):
    assert out[f"groups_{g}_vs_sequential_same_groups"] < 1e-6
    assert out[f"groups_{g}_vs_one_device"] < 1e-2
  assert out["images_per_s"] > 0 and out["sequential_images_per_s"] > 0
  assert sum(out["plan_groups"].values()) <= 8 and out["plan_measured_images_per_s"] > 0


def test_device_groups_and_their_errors():
  assert cascade.even_groups(2, 8) == [4, 4] and cascade.even_groups(3, 8) == [2, 3, 3]
  with pytest.raises(ValueError, match="3 stages but 2 devices: a pipeline needs one device group"):
    cascade.even_groups(3, 2)
  with pytest.raises(ValueError, match="gives 1 device groups for 2 stages"):
    cascade.device_groups([1], ["a", "b"], devices=[0, 1])
  with pytest.raises(ValueError, match="needs 4 devices .* there are 2"):
    cascade.device_groups([2, 2], ["a", "b"], devices=[0, 1])
