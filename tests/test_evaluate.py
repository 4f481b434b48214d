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


def test_eval_lpips_fid_on_y_with_a_cropped_border(tiny_workdir, tmp_path):
  """--metrics lpips,fid --y-channel --crop-border 4: the bicubic row equals an independent float64
  Y-PSNR of the same crop and the LPIPS of sr3_jax.metrics.lpips on it; FID per method."""
  from sr3_jax import checkpoint
  from sr3_jax.data import degrade, loader
  from sr3_jax.metrics import lpips

  ckpt = str(tiny_workdir / "checkpoints" / "2")
  r = evaluate.evaluate(
    ckpt, num_images=2, samples=1, steps=2, output=str(tmp_path),
    metric_names=evaluate.parse_metrics("psnr,lpips,fid"), y_channel=True, crop_border=4,
  )  # fmt: skip
  assert r["y_channel"] and r["crop_border"] == 4
  assert r["fid"]["reference"] == "hr" and r["fid"]["n"] == 2
  assert all(r["fid"][m] >= -1e-6 for m in evaluate.METHODS)
  assert "FID against hr" in (tmp_path / "eval.md").read_text()
  for m in evaluate.METHODS:
    assert 0.0 <= r["per_image"][m]["lpips"][0] < 1.0
  assert "LPIPS (alex)" in (tmp_path / "eval.md").read_text()
  config, *_ = checkpoint.load_for_inference(ckpt)
  dcfg, split = evaluate.eval_data(config, None)
  hr = next(
    iter(loader.make_dataset(dcfg, split, 1, seed=0, train=False, process_index=0, process_count=1))
  )["hr"]
  bic = degrade.upsample(
    degrade.downsample(hr, dcfg.factor, value_range=(-1.0, 1.0)),
    dcfg.factor,
    value_range=(-1.0, 1.0),
  )
  hr01, bic01 = (np.asarray(hr, np.float64) + 1) / 2, (np.asarray(bic, np.float64) + 1) / 2
  y = lambda x: (16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0
  mse = np.mean((y(hr01) - y(bic01))[:, 4:-4, 4:-4] ** 2)
  assert r["per_image"]["bicubic"]["psnr"][0] == pytest.approx(-10 * np.log10(mse), abs=2e-3)
  want = lpips.LPIPS("alex")(np.clip(bic01, 0, 1), hr01)[0]
  assert r["per_image"]["bicubic"]["lpips"][0] == pytest.approx(float(want), abs=1e-5)
  with pytest.raises(ValueError, match="is: not available"):
    evaluate.parse_metrics("psnr,is")
