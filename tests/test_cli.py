"""The `sr3` command line end to end (subprocesses, as a user runs it)."""

import json
import subprocess
import sys

from PIL import Image


def test_demo_runlocal_writes_grids_and_metrics(tmp_path):
  """As a new user runs it: a relative --output, from another working directory."""
  out = tmp_path / "demo"
  proc = subprocess.run(
    [sys.executable, "-m", "sr3_jax", "demo", "--runlocal", "--output", "demo"],
    capture_output=True,
    text=True,
    timeout=600,
    cwd=tmp_path,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (out / "run" / "checkpoints" / "10" / "commit_success.txt").exists()
  assert proc.stdout.strip().splitlines()[-1] == str(out)
  summary = json.loads((out / "metrics.json").read_text())
  assert set(summary["photos"]) == {"chelsea", "coffee"}
  for name in ("chelsea", "coffee"):
    with Image.open(out / f"{name}.png") as im:
      assert im.size[0] > 6 * im.size[1] and im.mode == "RGB"  # six panels side by side
    for method in ("bicubic", "sr3_sample", "sr3_mean"):
      assert summary["photos"][name][method]["psnr"] > 5.0
      assert 0.0 < summary["photos"][name][method]["ssim"] <= 1.0
      assert 0.0 < summary["photos"][name][method]["lpips"] < 1.0  # make test installs the weights
  assert "SR3 mean LPIPS" in proc.stderr
  # one folder per method, ready for a human study of the demo's outputs
  for method, side in (
    ("hr", 64),
    ("lr", 16),
    ("bicubic", 64),
    ("sr3_sample", 64),
    ("sr3_mean", 64),
  ):
    with Image.open(out / "images" / method / "coffee.png") as im:
      assert im.size[0] == side
  study = subprocess.run(
    [sys.executable, "-m", "sr3_jax", "study", "make", "--real", "demo/images/hr",
     "--method", "sr3=demo/images/sr3_sample", "--method", "bicubic=demo/images/bicubic",
     "--input", "demo/images/lr", "--task", "with-input", "--trials-per-rater", "6",
     "--output", "study"],
    capture_output=True, text=True, cwd=tmp_path,
  )  # fmt: skip
  assert study.returncode == 0, study.stderr
  assert json.loads((tmp_path / "study" / "study.json").read_text())["names"] == [
    "chelsea",
    "coffee",
  ]


def test_unknown_subcommand_fails():
  proc = subprocess.run([sys.executable, "-m", "sr3_jax", "nope"], capture_output=True, text=True)
  assert proc.returncode != 0 and "invalid choice" in proc.stderr
