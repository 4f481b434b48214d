"""ResNet-50 accuracy: the JAX network against an independent PyTorch forward pass (NCHW,
torch.nn.functional, torchvision's Bottleneck as documented) on the same torchvision-layout state
dict, the evaluation crop in closed form, and top-k against numpy.

torchvision's resnet50-0676ba61.pth is not on PyPI and torchvision does not import beside the
local torch build, so the state dict is random (He-initialised, non-trivial batch-norm
statistics), saved by torch.save in the layout of torchvision's file."""

import dataclasses
import hashlib

import numpy as np
import pytest
import torch

from sr3_jax.data import embedded
from sr3_jax.metrics import resnet, weights
from tests import metric_weights


@pytest.fixture(scope="module")
def state_dict_file(tmp_path_factory):
  return metric_weights.resnet_file(tmp_path_factory.mktemp("resnet"))


@pytest.fixture()
def registered(state_dict_file, monkeypatch):
  return metric_weights.register(monkeypatch, "resnet50", state_dict_file)


def _photos(n, h=256, w=300):
  photos = [p for p in embedded.load_split("train").values() if min(p.shape[:2]) >= h]
  return [photos[i % len(photos)][:h, (i // len(photos)) * 3 :][:, :w] for i in range(n)]


def test_logits_match_an_independent_pytorch_forward(registered):
  model = resnet.Classifier(batch=2)
  photos = _photos(3)
  ours = model(photos)  # two batches of 2, the second padded
  x = torch.from_numpy(np.stack([resnet.preprocess(p) for p in photos]).transpose(0, 3, 1, 2))
  sd = torch.load(registered, map_location="cpu")
  with torch.no_grad():
    want = metric_weights.torch_resnet50(sd, x).double().numpy()
  assert ours.shape == (3, 1000)
  np.testing.assert_allclose(ours, want, atol=1e-3 * np.abs(want).max(), rtol=1e-4)


def test_evaluation_crop_and_resize():
  yy, xx = np.mgrid[:256, :320]
  smooth = 128 + 100 * np.sin(yy / 23.0)[..., None] * np.cos(xx[..., None] / 31.0 + np.arange(3))
  img = np.round(smooth).astype(np.uint8)
  want = (img[16:240, 48:272] / 255.0 - resnet.MEAN) / resnet.STD  # 256 short side: crop only
  np.testing.assert_allclose(resnet.preprocess(img), want, rtol=1e-5, atol=1e-5)
  big = np.kron(img, np.ones((2, 2, 1), np.uint8))  # 512×640 → 256×320, then the same crop
  np.testing.assert_allclose(resnet.preprocess(big), want, atol=0.05)
  assert resnet.preprocess(img[:64, :80]).shape == (224, 224, 3)  # enlarged, as torchvision does


def test_top_k_against_numpy():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(50, 1000))
  labels = rng.integers(0, 1000, 50)
  labels[:10] = logits[:10].argmax(1)
  order = np.argsort(-logits, axis=1)
  for k in (1, 5):
    want = np.array([labels[i] in order[i, :k] for i in range(50)])
    np.testing.assert_array_equal(resnet.correct(logits, labels, k), want)
  assert resnet.correct(logits, labels, 1)[:10].all()
  with pytest.raises(ValueError, match="ImageNet-1k class indices"):
    resnet.correct(logits, labels + 1000, 1)


def test_a_file_of_another_network_is_named(tmp_path, monkeypatch):
  path = tmp_path / "resnet50-0676ba61.pth"
  torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
  data = path.read_bytes()
  entry = dataclasses.replace(
    weights.REGISTRY["resnet50"], size=len(data), sha256=hashlib.sha256(data).hexdigest()
  )
  monkeypatch.setitem(weights.REGISTRY, "resnet50", entry)
  with pytest.raises(ValueError, match="not a torchvision ResNet-50 state dict; missing bn1"):
    resnet.load(str(path))
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
  monkeypatch.setenv("SR3_WEIGHTS_DIR", str(tmp_path / "none"))
  monkeypatch.setitem(weights.REGISTRY, "resnet50", dataclasses.replace(entry, size=1))
  with pytest.raises(FileNotFoundError, match="download.pytorch.org/models/resnet50-0676ba61"):
    resnet.load()
