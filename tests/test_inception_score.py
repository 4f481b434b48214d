"""Inception Score: the network built from a pytorch-fid-layout state dict against the same graph
run by PyTorch (the TorchScript FID file), the logits against torch, and the score against an
independent float64 computation with scipy and closed forms.

pytorch-fid's pt_inception file is not on PyPI, so the state dict here is made from the TorchScript
file's weights under torchvision's Inception3 names (the layout of pytorch-fid's file), with each
batch norm re-parametrised to a non-trivial scale (same function, different numbers) and a random
1008-way output layer."""

import json

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from sr3_jax import cli
from sr3_jax.data import embedded
from sr3_jax.metrics import fid, inception_score, weights
from tests import metric_weights


@pytest.fixture(scope="module")
def state_dict_file(tmp_path_factory):
  return metric_weights.inception_file(tmp_path_factory.mktemp("is"))


@pytest.fixture()
def registered(state_dict_file, monkeypatch):
  return metric_weights.register(monkeypatch, "is-inception", state_dict_file)


@pytest.fixture(scope="module")
def torch_reference():
  net = torch.jit.load(str(weights.locate("fid-inception")), map_location="cpu").eval()

  def feats(x299):
    t = torch.from_numpy((np.asarray(x299) / 128.0 - 1.0).transpose(0, 3, 1, 2).astype(np.float32))
    with torch.no_grad():
      return net(t).numpy().astype(np.float64)

  return feats


def _photos(n):
  photos = list(embedded.load_split("train").values())
  return [photos[i % len(photos)][(i // len(photos)) * 5 :][:160, :200] for i in range(n)]


def test_state_dict_network_and_logits_match_pytorch(registered, torch_reference):
  model = inception_score.Classifier(batch=4)
  x = np.stack([np.asarray(fid.resize_one(p)) for p in _photos(5)])
  feats, logits = model(x)  # 5 images: two batches of 4, the second padded
  want = torch_reference(x)
  np.testing.assert_allclose(feats, want, atol=1e-4, rtol=1e-4)
  w = torch.load(registered, map_location="cpu")["fc.weight"].double()
  np.testing.assert_allclose(logits, (torch.from_numpy(want) @ w.T).numpy(), atol=1e-4, rtol=1e-4)


def test_score_against_scipy_and_closed_forms():
  rng = np.random.default_rng(1)
  logits = rng.normal(0, 3, (103, 1008))
  p = scipy.special.softmax(logits, axis=1)
  parts = []
  for i in range(10):
    part = p[i * 103 // 10 : (i + 1) * 103 // 10]
    parts.append(np.exp(np.mean(scipy.stats.entropy(part.T, part.mean(0)[:, None]))))
  mean, std = inception_score.score(logits)
  assert mean == pytest.approx(np.mean(parts), rel=1e-10)
  assert std == pytest.approx(np.std(parts), rel=1e-8)
  # One class per image, k classes equally often in each part: IS = k. All alike: IS = 1.
  k = 8
  sure = np.full((10 * k, 1008), -1e3)
  sure[np.arange(10 * k), np.arange(10 * k) % k] = 0.0
  assert inception_score.score(sure) == pytest.approx((k, 0.0), abs=1e-9)
  assert inception_score.score(np.tile(logits[:1], (20, 1)))[0] == pytest.approx(1.0, abs=1e-12)
  with pytest.raises(ValueError, match="at least 10 images, got 3"):
    inception_score.score(logits[:3])


def test_cli_scores_a_folder_and_names_a_bad_file(registered, tmp_path, capsys):
  from PIL import Image

  for i, p in enumerate(_photos(4)):
    Image.fromarray(p).save(tmp_path / f"{i}.png")
  Image.fromarray(_photos(1)[0][..., 0]).save(tmp_path / "gray.png")
  (tmp_path / "broken.png").write_bytes(b"not a png")
  assert cli.main(["is", str(tmp_path), "--splits", "2", "--json"]) == 0
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert out["n"] == 5 and out["skipped"] == ["broken.png"] and out["splits"] == 2
  model = inception_score.Classifier()
  files = sorted(f for f in tmp_path.iterdir() if f.name != "broken.png")
  x = np.stack([np.asarray(fid.resize_one(_rgb(f))) for f in files])
  assert out["is"] == pytest.approx(inception_score.score(model(x)[1], 2)[0], rel=1e-6)


def test_missing_and_wrong_files_are_named(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("SR3_WEIGHTS_DIR", str(tmp_path))
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
  (tmp_path / "a.png").write_bytes(b"")
  assert cli.main(["is", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert "pt_inception-2015-12-05-6726825d.pth" in err and "6726825d0af5" in err
  assert str(tmp_path / "torch" / "hub" / "checkpoints") in err and "pytorch-fid" in err
  wrong = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
  wrong.write_bytes(b"x" * 10)
  assert cli.main(["is", str(tmp_path), "--weights", str(wrong)]) == 2
  assert "is not the is-inception weights file" in capsys.readouterr().err


def _rgb(path):
  from sr3_jax import images

  return images.load_image(path).rgb
