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
  assert r["sampler_seconds_per_image"] > 0  # the second image's call (the first compiles)
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
    overrides={"sampling.sampler": "ddim"},
  )  # fmt: skip
  assert r["sampler"] == "ddim" and r["overrides"] == {"sampling.sampler": "ddim"}
  with pytest.raises(ValueError, match="sampling.\\* fields only"):
    evaluate.evaluate(ckpt, num_images=1, overrides={"train.num_steps": 3})
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
  with pytest.raises(ValueError, match="--metrics iss: unknown"):
    evaluate.parse_metrics("psnr,iss")


def test_eval_inception_score_and_resnet_accuracy(tiny_workdir, tmp_path, monkeypatch):
  """--metrics is,accuracy with weight files in the real files' layouts: the HR row's top-1/top-5
  equal an independent PyTorch ResNet-50 on the same crops and labels, IS is reported per method
  and for HR, and accuracy without labels is refused before sampling."""
  import torch

  from sr3_jax import checkpoint, images
  from sr3_jax.data import loader
  from sr3_jax.metrics import resnet
  from tests import metric_weights

  rn = metric_weights.resnet_file(tmp_path)
  metric_weights.register(monkeypatch, "is-inception", metric_weights.inception_file(tmp_path))
  metric_weights.register(monkeypatch, "resnet50", rn)
  ckpt = str(tiny_workdir / "checkpoints" / "2")
  names = evaluate.parse_metrics("is,accuracy")
  with pytest.raises(ValueError, match="pass --label-key"):
    evaluate.evaluate(ckpt, num_images=2, samples=1, steps=2, metric_names=names)
  out = tmp_path / "out"
  r = evaluate.evaluate(
    ckpt, num_images=2, samples=1, steps=2, output=str(out), metric_names=names, label_key="label"
  )
  assert r["is"]["n"] == 2 and r["is"]["splits"] == 2
  assert all(r["is"][m]["is"] >= 1.0 - 1e-9 for m in evaluate.METHODS + ("hr",))
  for m in evaluate.METHODS + ("hr",):
    assert set(r["per_image"][m]) >= {"top1", "top5"} and len(r["per_image"][m]["top1"]) == 2
  config, *_ = checkpoint.load_for_inference(ckpt)
  dcfg, split = evaluate.eval_data(config, None)
  dcfg.label_key = "label"
  ds = loader.make_dataset(dcfg, split, 1, seed=0, train=False, process_index=0, process_count=1)
  batches = [b for _, b in zip(range(2), ds)]
  x = np.stack([resnet.preprocess(images.to_uint8(np.asarray(b["hr"][0]))) for b in batches])
  with torch.no_grad():
    logits = metric_weights.torch_resnet50(
      torch.load(rn, map_location="cpu"), torch.from_numpy(x.transpose(0, 3, 1, 2))
    ).numpy()
  labels = np.array([int(b["label"][0]) for b in batches])
  order = np.argsort(-logits, axis=1)
  for k in (1, 5):
    want = [float(labels[i] in order[i, :k]) for i in range(2)]
    assert r["per_image"]["hr"][f"top{k}"] == want
  table = (out / "eval.md").read_text()
  assert "ResNet-50 top-1 (%)" in table and "Inception Score over 2 images" in table
  assert "| hr |" in table
