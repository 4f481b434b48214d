"""FID in JAX: the TF-Inception features against the same network run by PyTorch (its TorchScript
file), the Fréchet distance against closed forms and scipy, and `sr3 fid` on folders against a
float64 reference computed from PyTorch's features."""

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from sr3_jax.data import embedded
from sr3_jax.metrics import fid, weights


@pytest.fixture(scope="module")
def reference():
  net = torch.jit.load(str(weights.locate("fid-inception")), map_location="cpu").eval()

  def feats(x299):  # (N, 299, 299, 3) pixel values 0..255, already resized
    with torch.no_grad():
      t = torch.from_numpy(
        (np.asarray(x299) / 128.0 - 1.0).transpose(0, 3, 1, 2).astype(np.float32)
      )
      return net(t).numpy().astype(np.float64)

  return feats


@pytest.fixture(scope="module")
def model():
  return fid.Inception(batch=4)


def _photos(n, h=180, w=220):
  photos = list(embedded.load_split("train").values())
  return [photos[i % len(photos)][(i // len(photos)) * 7 :][:h, :w] for i in range(n)]


def test_features_match_the_torchscript_network(model, reference):
  x = np.stack([np.asarray(fid.resize_one(p)) for p in _photos(6)])
  ours = model(x)  # 6 images: two batches of 4, the second padded
  np.testing.assert_allclose(ours, reference(x), atol=1e-4, rtol=1e-4)


def test_frechet_distance_closed_forms():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(50, 8))
  cov = a.T @ a / 50
  mu = rng.normal(size=8)
  assert fid.frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)
  d1, d2 = rng.uniform(0.1, 2, 8), rng.uniform(0.1, 2, 8)
  mu2 = mu + 0.3
  want = np.sum((mu - mu2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)
  assert fid.frechet_distance(mu, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(want, rel=1e-10)
  b = rng.normal(size=(50, 8))
  cov2 = b.T @ b / 50
  root = scipy.linalg.sqrtm(cov @ cov2).real
  want = np.sum((mu - mu2) ** 2) + np.trace(cov + cov2 - 2 * root)
  assert fid.frechet_distance(mu, cov, mu2, cov2) == pytest.approx(want, rel=1e-8)
  s = fid.Statistics(8)
  s.add(a[:20]), s.add(a[20:])
  m, c = s.mean_cov()
  np.testing.assert_allclose(m, a.mean(0)), np.testing.assert_allclose(c, np.cov(a.T), atol=1e-12)


def test_sr3_fid_on_folders_matches_a_float64_reference(tmp_path, reference):
  a, b = tmp_path / "a", tmp_path / "b"
  a.mkdir(), b.mkdir()
  ims_a, ims_b = (
    _photos(5),
    [np.clip(p * 0.8 + 20, 0, 255).astype(np.uint8) for p in _photos(5, 160, 160)],
  )
  for i, im in enumerate(ims_a):
    Image.fromarray(im).save(a / f"{i}.png")
  for i, im in enumerate(ims_b):
    Image.fromarray(im if i else im.mean(-1).astype(np.uint8)).save(b / f"{i}.png")  # one gray
  (b / "bad.png").write_bytes(b"not an image")
  run = lambda *args: subprocess.run(
    [sys.executable, "-m", "sr3_jax", "fid", *map(str, args), "--json"],
    capture_output=True, text=True, timeout=900,
  )  # fmt: skip
  proc = run(a, b)
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["n_a"] == 5 and out["n_b"] == 5 and out["skipped_b"] == ["bad.png"]
  assert "bad.png" in proc.stderr and "fewer than the 2049" in proc.stderr
  gray = lambda im: np.repeat(im.mean(-1).astype(np.uint8)[..., None], 3, -1)
  fa = reference(np.stack([np.asarray(fid.resize_one(im)) for im in ims_a]))
  fb = reference(
    np.stack([np.asarray(fid.resize_one(gray(im) if i == 0 else im)) for i, im in enumerate(ims_b)])
  )
  ca, cb = np.cov(fa.T), np.cov(fb.T)
  want = np.sum((fa.mean(0) - fb.mean(0)) ** 2) + np.trace(
    ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real
  )
  assert out["fid"] == pytest.approx(want, abs=0.01)
  saved = run("--save-stats", a, tmp_path / "a.npz")
  assert saved.returncode == 0, saved.stderr[-2000:]
  again = json.loads(run(tmp_path / "a.npz", b).stdout.strip().splitlines()[-1])
  assert again["fid"] == pytest.approx(out["fid"], abs=1e-6)
  assert run(tmp_path / "empty_missing", b).returncode == 2


def test_save_stats_of_a_prepared_split(tmp_path, model, capsys):
  """`sr3 fid --save-stats tfds:NAME:SPLIT` reads the split as the loader does (here the embedded
  photographs, center_resize to 64): its statistics equal those of the same central squares
  resized by Pillow; an unprepared data set is named with the command that prepares it."""
  from sr3_jax import cli

  out = tmp_path / "train64.npz"
  argv = ["fid", "--save-stats", "tfds:embedded:train", str(out), "--image-size", "64", "--json"]
  assert cli.main(argv) == 0, capsys.readouterr().err
  mu, cov, n = fid.load_stats(out)
  squares = []
  for p in embedded.load_split("train").values():
    s = min(p.shape[:2])
    y, x = (p.shape[0] - s) // 2, (p.shape[1] - s) // 2
    squares.append(np.asarray(Image.fromarray(p[y : y + s, x : x + s]).resize((64, 64), Image.BOX)))
  want = fid.statistics_of(squares, model)
  assert n == want.n == len(squares)
  np.testing.assert_allclose(mu, want.mean_cov()[0], atol=1e-4)
  np.testing.assert_allclose(cov, want.mean_cov()[1], atol=1e-4)
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == n
  argv = ["fid", "--save-stats", "tfds:ffhq", str(out), "--image-size", "64"]
  assert cli.main(argv + ["--data-dir", str(tmp_path / "none")]) == 2
  err = capsys.readouterr().err
  assert "'ffhq'" in err and "sr3 prepare" in err
  assert cli.main(argv[:4]) == 2 and "give --image-size" in capsys.readouterr().err
