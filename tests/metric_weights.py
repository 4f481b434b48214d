"""Weight files in the layouts of the metric networks' real files, for tests: pytorch-fid's
TF-Inception state dict (the TorchScript FID file's weights under torchvision names, each batch norm
re-parametrised to the same function with other numbers, and a random 1008-way output layer) and a
random torchvision ResNet-50. The real files are not on PyPI; the registry is pointed at these."""

import dataclasses
import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from sr3_jax.metrics import fid, resnet, weights

CONV = "Conv2dLayer"


def register(monkeypatch, key, path):
  """Registry entry `key` pointed at `path`'s size and sha256, found through $SR3_WEIGHTS_DIR."""
  data = path.read_bytes()
  entry = dataclasses.replace(
    weights.REGISTRY[key], size=len(data), sha256=hashlib.sha256(data).hexdigest()
  )
  monkeypatch.setitem(weights.REGISTRY, key, entry)
  monkeypatch.setenv("SR3_WEIGHTS_DIR", str(path.parent))
  return path


def torchvision_names() -> list[str]:
  """torchvision Inception3's BasicConv2d names in the order the TorchScript graph holds them."""
  names = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
  a = ["branch1x1", "branch5x5_1", "branch5x5_2"] + [f"branch3x3dbl_{i}" for i in (1, 2, 3)]
  for b in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
    names += [f"{b}.{n}" for n in a + ["branch_pool"]]
  names += [f"Mixed_6a.{n}" for n in ["branch3x3"] + [f"branch3x3dbl_{i}" for i in (1, 2, 3)]]
  c = ["branch1x1"] + [f"branch7x7_{i}" for i in (1, 2, 3)]
  c += [f"branch7x7dbl_{i}" for i in (1, 2, 3, 4, 5)] + ["branch_pool"]
  for b in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
    names += [f"{b}.{n}" for n in c]
  names += [f"Mixed_7a.{n}" for n in ["branch3x3_1", "branch3x3_2"]]
  names += [f"Mixed_7a.branch7x7x3_{i}" for i in (1, 2, 3, 4)]
  e = ["branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1"]
  e += ["branch3x3dbl_2", "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"]
  for b in ("Mixed_7b", "Mixed_7c"):
    names += [f"{b}.{n}" for n in e]
  return names


def _convs(tree):
  for v in tree.values():
    if isinstance(v, dict):
      if v.get("__class__", "").endswith(CONV):
        yield v
      else:
        yield from _convs(v)


def inception_file(folder):
  """pt_inception-2015-12-05-6726825d.pth in `folder`, in the 2019 file's legacy format."""
  net = fid.load_network()
  convs = list(_convs(net))
  names = torchvision_names()
  assert len(convs) == len(names) == 94
  rng = np.random.default_rng(0)
  sd = {}
  for name, m in zip(names, convs):
    # The same function, other numbers: (s·conv − s·mean) / (t·√(var + ε)) · t/s.
    sc, t = rng.uniform(0.5, 2.0, m["beta"].shape), rng.uniform(1.0, 2.0, m["beta"].shape)
    sd[f"{name}.conv.weight"] = m["weight"] * sc[:, None, None, None]
    sd[f"{name}.bn.weight"] = t / sc
    sd[f"{name}.bn.bias"] = m["beta"]
    sd[f"{name}.bn.running_mean"] = m["mean"] * sc
    sd[f"{name}.bn.running_var"] = (m["var"] + 1e-3) * t**2 - 1e-3
  fc = rng.normal(0, 0.05, (1008, 2048))
  sd = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in sd.items()}
  sd["fc.weight"] = torch.from_numpy(fc.astype(np.float32))
  sd["fc.bias"] = torch.zeros(1008)
  path = folder / weights.REGISTRY["is-inception"].filename
  torch.save(sd, path, _use_new_zipfile_serialization=False)
  return path


def _random_state_dict(seed=0):
  rng = np.random.default_rng(seed)
  sd = {}

  def conv(name, o, i, k):
    sd[name] = rng.normal(0, np.sqrt(2.0 / (i * k * k)), (o, i, k, k))

  def bn(name, c, scale=1.0):
    sd[f"{name}.weight"] = rng.uniform(0.5, 1.0, c) * scale
    sd[f"{name}.bias"] = rng.normal(0, 0.1, c)
    sd[f"{name}.running_mean"] = rng.normal(0, 0.1, c)
    sd[f"{name}.running_var"] = rng.uniform(0.5, 2.0, c)
    sd[f"{name}.num_batches_tracked"] = np.array(0)

  conv("conv1.weight", 64, 3, 7)
  bn("bn1", 64)
  cin = 64
  for s, (blocks, width) in enumerate(zip(resnet.STAGES, (64, 128, 256, 512))):
    for b in range(blocks):
      p = f"layer{s + 1}.{b}"
      conv(f"{p}.conv1.weight", width, cin, 1)
      bn(f"{p}.bn1", width)
      conv(f"{p}.conv2.weight", width, width, 3)
      bn(f"{p}.bn2", width)
      conv(f"{p}.conv3.weight", width * 4, width, 1)
      bn(f"{p}.bn3", width * 4, scale=0.3)
      if b == 0:
        conv(f"{p}.downsample.0.weight", width * 4, cin, 1)
        bn(f"{p}.downsample.1", width * 4)
      cin = width * 4
  sd["fc.weight"] = rng.normal(0, 0.02, (1000, 2048))
  sd["fc.bias"] = rng.normal(0, 0.1, 1000)
  return {
    k: torch.from_numpy(np.array(v, np.int64 if v.ndim == 0 else np.float32)) for k, v in sd.items()
  }


def resnet_file(folder):
  path = folder / weights.REGISTRY["resnet50"].filename
  torch.save(_random_state_dict(), path)
  return path


def torch_resnet50(sd, x):
  """torchvision's ResNet-50 (v1.5: the stride on the 3×3), NCHW, written with torch ops."""

  def bn(t, p):
    return F.batch_norm(
      t, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
      training=False, eps=1e-5,
    )  # fmt: skip

  x = F.relu(bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1"))
  x = F.max_pool2d(x, 3, 2, 1)
  for s, blocks in enumerate(resnet.STAGES):
    for b in range(blocks):
      p, stride = f"layer{s + 1}.{b}", (2 if b == 0 and s > 0 else 1)
      y = F.relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), f"{p}.bn1"))
      y = F.relu(bn(F.conv2d(y, sd[f"{p}.conv2.weight"], stride=stride, padding=1), f"{p}.bn2"))
      y = bn(F.conv2d(y, sd[f"{p}.conv3.weight"]), f"{p}.bn3")
      if b == 0:
        x = bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1")
      x = F.relu(x + y)
  return F.linear(F.adaptive_avg_pool2d(x, 1).flatten(1), sd["fc.weight"], sd["fc.bias"])
