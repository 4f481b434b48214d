"""Inception Score (Salimans et al. 2016) with the TF-Inception network (inception-2015-12-05).

Network: the same TensorFlow graph as FID (sr3_jax/metrics/fid.py), read from pytorch-fid's state
dict `pt_inception-2015-12-05-6726825d.pth` (registry key is-inception), which, unlike the
TorchScript file FID reads, keeps the graph's 1008-way output layer. The state dict uses
torchvision's Inception3 names (Conv2d_1a_3x3 … Mixed_7c, fc); `network_from_state_dict` lays it
out as the module tree fid.apply runs, with each convolution's stride and padding from the graph:
"same" padding for stride 1, none for stride 2 and for the stem's Conv2d_2a/Conv2d_4a. Mixed_7b
pools its last tower by a 3×3 average (padding not counted), Mixed_7c by a 3×3 max, as in the
graph FID and IS were defined on.

Score, as the original TensorFlow code computes it: logits = pool3 · Wᵀ without the output bias,
p(y|x) = softmax over all 1008 outputs, the images cut into `splits` consecutive parts (no
shuffle), and per part exp(E_x KL(p(y|x) ‖ p(y))) with p(y) the part's mean; the score is the mean
over parts and the spread their standard deviation. Everything after pool3 runs on the host in
float64.
"""

from __future__ import annotations

import numpy as np

from sr3_jax.metrics import fid, readers, weights

CONV = "Conv2dLayer"
STRIDE_2 = {
  "Conv2d_1a_3x3",
  "Mixed_6a.branch3x3",
  "Mixed_6a.branch3x3dbl_3",
  "Mixed_7a.branch3x3_2",
  "Mixed_7a.branch7x7x3_4",
}
VALID = {"Conv2d_2a_3x3", "Conv2d_4a_3x3"}  # stride 1 without padding
A_BLOCKS = ("Mixed_5b", "Mixed_5c", "Mixed_5d")
C_BLOCKS = ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e")


def _conv(sd: dict, name: str) -> dict:
  try:
    w = sd[f"{name}.conv.weight"]
    bn = {k: sd[f"{name}.bn.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}
  except KeyError as e:
    raise ValueError(
      f"the Inception state dict has no {e.args[0]}: not pytorch-fid's "
      f"pt_inception-2015-12-05 layout (torchvision Inception3 names)"
    ) from None
  stride = 2 if name in STRIDE_2 else 1
  kh, kw = w.shape[2:]
  pad = [0, 0] if stride == 2 or name in VALID else [kh // 2, kw // 2]
  return {
    "__class__": CONV,
    "weight": w,
    "gamma": bn["weight"],
    "beta": bn["bias"],
    "mean": bn["running_mean"],
    "var": bn["running_var"],
    "stride": stride,
    "padding": pad,
  }


def _seq(sd: dict, prefix: str, names: list[str], pool: str | None = None) -> dict:
  out = {"__class__": "Sequential"}
  if pool:
    out["pool"] = {"__class__": pool}
  for i, n in enumerate(names):
    out[f"c{i}"] = _conv(sd, f"{prefix}.{n}")
  return out


def network_from_state_dict(sd: dict) -> dict:
  """torchvision-named Inception3 weights → the module tree fid.apply runs ({"layers": …})."""
  layers = {"__class__": "InceptionV3"}
  for n in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"):
    layers[n] = _conv(sd, n)
  layers["pool0"] = {"__class__": "max3s2"}
  for n in ("Conv2d_3b_1x1", "Conv2d_4a_3x3"):
    layers[n] = _conv(sd, n)
  layers["pool1"] = {"__class__": "max3s2"}
  for b in A_BLOCKS:
    layers[b] = {
      "__class__": "InceptionA",
      "b1": _conv(sd, f"{b}.branch1x1"),
      "b5": _seq(sd, b, ["branch5x5_1", "branch5x5_2"]),
      "b3": _seq(sd, b, ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]),
      "bp": _seq(sd, b, ["branch_pool"], pool="avg3"),
    }
  layers["Mixed_6a"] = {
    "__class__": "InceptionB",
    "b3": _conv(sd, "Mixed_6a.branch3x3"),
    "b3d": _seq(sd, "Mixed_6a", ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]),
    "bp": {"__class__": "max3s2"},
  }
  for b in C_BLOCKS:
    layers[b] = {
      "__class__": "InceptionC",
      "b1": _conv(sd, f"{b}.branch1x1"),
      "b7": _seq(sd, b, [f"branch7x7_{i}" for i in (1, 2, 3)]),
      "b7d": _seq(sd, b, [f"branch7x7dbl_{i}" for i in (1, 2, 3, 4, 5)]),
      "bp": _seq(sd, b, ["branch_pool"], pool="avg3"),
    }
  layers["Mixed_7a"] = {
    "__class__": "InceptionD",
    "b3": _seq(sd, "Mixed_7a", ["branch3x3_1", "branch3x3_2"]),
    "b7": _seq(sd, "Mixed_7a", [f"branch7x7x3_{i}" for i in (1, 2, 3, 4)]),
    "bp": {"__class__": "max3s2"},
  }
  for b, pool in (("Mixed_7b", "avg3"), ("Mixed_7c", "max3s1")):
    c = lambda n, b=b: _conv(sd, f"{b}.{n}")
    layers[b] = {  # the names fid.apply's InceptionE reads
      "__class__": "InceptionE",
      "conv": c("branch1x1"),
      "tower_conv": c("branch3x3_1"),
      "tower_mixed_conv": c("branch3x3_2a"),
      "tower_mixed_conv_1": c("branch3x3_2b"),
      "tower_1_conv": c("branch3x3dbl_1"),
      "tower_1_conv_1": c("branch3x3dbl_2"),
      "tower_1_mixed_conv": c("branch3x3dbl_3a"),
      "tower_1_mixed_conv_1": c("branch3x3dbl_3b"),
      "tower_2_pool": {"__class__": pool},
      "tower_2_conv": c("branch_pool"),
    }
  layers["pool2"] = {"__class__": "avg8"}
  return {"layers": layers}


def load(path: str | None = None) -> tuple[dict, np.ndarray]:
  """(module tree, output weights W (1008, 2048)) of the registered pytorch-fid file."""
  found = weights.locate("is-inception", path)
  sd = readers.read_torch(found)
  if "fc.weight" not in sd or sd["fc.weight"].shape != (1008, fid.DIMS):
    raise ValueError(
      f"{found}: no fc.weight of shape (1008, 2048); Inception Score needs the graph's output "
      "layer, which pytorch-fid's pt_inception-2015-12-05 file has"
    )
  return network_from_state_dict(sd), np.asarray(sd["fc.weight"], np.float64)


class Classifier:
  """pool3 features and 1008-way logits (no bias) of 8-bit images, features on the devices in
  fixed-size batches (fid.Inception), the output layer on the host in float64."""

  def __init__(self, path: str | None = None, batch: int = 32):
    net, self.fc = load(path)
    self.features = fid.Inception(batch=batch, net=net)
    self.batch = self.features.batch

  def __call__(self, images_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    feats = self.features(images_u8)
    return feats, feats @ self.fc.T


def score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
  """(mean, std) over `splits` consecutive parts of exp(E KL(p(y|x) ‖ p(y))), in float64."""
  logits = np.asarray(logits, np.float64)
  n = len(logits)
  if splits < 1 or n < splits:
    raise ValueError(
      f"Inception Score over {splits} splits needs at least {splits} images, got {n}; "
      "pass fewer --splits or more images"
    )
  z = logits - logits.max(axis=1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
  p = np.exp(logp)
  parts = []
  for i in range(splits):
    lo, hi = i * n // splits, (i + 1) * n // splits
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 · log 0 = 0
      log_py = np.log(p[lo:hi].mean(axis=0))
      terms = np.where(p[lo:hi] > 0, p[lo:hi] * (logp[lo:hi] - log_py), 0.0)
    kl = terms.sum(axis=1)
    parts.append(np.exp(kl.mean()))
  return float(np.mean(parts)), float(np.std(parts))


def score_images(images_u8, model: Classifier, splits: int = 10) -> dict:
  """IS of a sequence of (H, W, 3) 8-bit images over min(splits, N) parts: {is, std, n, splits}."""
  logits = [
    model(np.stack([np.asarray(fid.resize_one(x)) for x in images_u8[i : i + model.batch]]))[1]
    for i in range(0, len(images_u8), model.batch)
  ]
  splits = min(splits, len(images_u8))
  mean, std = score(np.concatenate(logits), splits)
  return {"is": mean, "std": std, "n": len(images_u8), "splits": splits}


def folder_logits(folder, model: Classifier, log=None) -> tuple[np.ndarray, list[str]]:
  """Logits of every readable image in a folder (resized as for FID); unreadable files are named
  and skipped."""
  skipped: list[str] = []
  out = [model(b)[1] for b in fid.resized_batches(folder, model.batch, skipped, log, "is")]
  return (np.concatenate(out) if out else np.zeros((0, 1008))), skipped


def score_folder(folder, path: str | None = None, splits: int = 10, log=None) -> dict:
  logits, skipped = folder_logits(folder, Classifier(path), log)
  mean, std = score(logits, splits)
  return {"is": mean, "is_std": std, "n": len(logits), "splits": splits, "skipped": skipped}
