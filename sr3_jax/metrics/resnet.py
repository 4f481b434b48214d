"""Classification accuracy of super-resolved images: torchvision's ImageNet ResNet-50 in JAX.

SR3 reports the top-1 and top-5 error of a pretrained ResNet-50 on its 4× ImageNet outputs (and
on the originals and bicubic). The weights are torchvision's `resnet50-0676ba61.pth`
(IMAGENET1K_V1; registry key resnet50), read without PyTorch (readers.read_torch): a 7×7/2 stem
with 3×3/2 max pooling, four stages of 3, 4, 6 and 3 bottleneck blocks (1×1, 3×3 carrying the
stride, 1×1 to four times the width; a 1×1 projection where the shape changes), batch norm with
ε = 1e-5, global average pooling and a 1000-way linear layer. Class indices are torchvision's,
which are also TFDS imagenet2012's (the WordNet ids sorted).

Preprocessing, torchvision's evaluation transform done with Pillow: the shorter side resized to
256 (bilinear, anti-aliased; smaller images are enlarged) unless it is 256 already, the central 224×224 crop, values /255
normalised by the ImageNet mean and standard deviation.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

import jax
import jax.numpy as jnp

from sr3_jax.metrics import batched, readers, weights

Array = jax.Array
HIGHEST = jax.lax.Precision.HIGHEST
STAGES = (3, 4, 6, 3)
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
RESIZE, CROP = 256, 224
CLASSES = 1000


def load(path: str | None = None) -> dict[str, np.ndarray]:
  """The registered state dict, checked for every tensor the network reads."""
  found = weights.locate("resnet50", path)
  sd = readers.read_torch(found)
  missing = [k for k in required_keys() if k not in sd]
  if missing:
    raise ValueError(
      f"{found}: not a torchvision ResNet-50 state dict; missing {', '.join(missing[:5])}"
      + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    )
  return {k: np.asarray(sd[k], np.float32) for k in required_keys()}


def _bn_keys(p: str) -> list[str]:
  return [f"{p}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]


def required_keys() -> list[str]:
  keys = ["conv1.weight"] + _bn_keys("bn1") + ["fc.weight", "fc.bias"]
  for s, blocks in enumerate(STAGES):
    for b in range(blocks):
      p = f"layer{s + 1}.{b}"
      for i in (1, 2, 3):
        keys += [f"{p}.conv{i}.weight"] + _bn_keys(f"{p}.bn{i}")
      if b == 0:
        keys += [f"{p}.downsample.0.weight"] + _bn_keys(f"{p}.downsample.1")
  return keys


def _conv(x: Array, w: Array, stride: int = 1) -> Array:
  k = w.shape[-1]
  return jax.lax.conv_general_dilated(
    x,
    jnp.transpose(w, (2, 3, 1, 0)),  # OIHW → HWIO
    (stride, stride),
    [(k // 2, k // 2)] * 2,
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    precision=HIGHEST,
  )


def _bn(x: Array, sd: dict, p: str) -> Array:
  scale = sd[f"{p}.weight"] * jax.lax.rsqrt(sd[f"{p}.running_var"] + 1e-5)
  return (x - sd[f"{p}.running_mean"]) * scale + sd[f"{p}.bias"]


def logits_of(sd: dict, x: Array) -> Array:
  """(N, 224, 224, 3) normalised images → (N, 1000) logits."""
  x = jax.nn.relu(_bn(_conv(x, sd["conv1.weight"], 2), sd, "bn1"))
  pads = ((0, 0), (1, 1), (1, 1), (0, 0))
  x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), pads)
  for s, blocks in enumerate(STAGES):
    for b in range(blocks):
      p = f"layer{s + 1}.{b}"
      stride = 2 if (b == 0 and s > 0) else 1
      y = jax.nn.relu(_bn(_conv(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
      y = jax.nn.relu(_bn(_conv(y, sd[f"{p}.conv2.weight"], stride), sd, f"{p}.bn2"))
      y = _bn(_conv(y, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
      if b == 0:
        x = _bn(_conv(x, sd[f"{p}.downsample.0.weight"], stride), sd, f"{p}.downsample.1")
      x = jax.nn.relu(x + y)
  pooled = x.mean(axis=(1, 2))
  return jnp.dot(pooled, sd["fc.weight"].T, precision=HIGHEST) + sd["fc.bias"]


def preprocess(rgb_u8: np.ndarray) -> np.ndarray:
  """One (H, W, 3) uint8 image → (224, 224, 3) float32, torchvision's evaluation transform."""
  img = Image.fromarray(np.asarray(rgb_u8, np.uint8))
  w, h = img.size
  if min(w, h) != RESIZE:
    short = RESIZE
    size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    img = img.resize(size, Image.BILINEAR)
    w, h = img.size
  top, left = int(round((h - CROP) / 2.0)), int(round((w - CROP) / 2.0))
  x = np.asarray(img, np.float32)[top : top + CROP, left : left + CROP] / 255.0
  return (x - MEAN) / STD


class Classifier:
  """ResNet-50 logits of 8-bit images, on the local devices in fixed-size batches."""

  def __init__(self, path: str | None = None, batch: int = 32):
    self._run = batched.Batched(logits_of, load(path), batch)

  def __call__(self, images_u8) -> np.ndarray:
    """A sequence of (H, W, 3) uint8 images (sizes may differ) → (N, 1000) float64 logits."""
    x = np.stack([preprocess(im) for im in images_u8])
    return self._run(x)


def correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
  """Per image: is the label among the k largest logits (ties broken by the lower class)?"""
  logits, labels = np.asarray(logits), np.asarray(labels)
  if labels.min() < 0 or labels.max() >= logits.shape[1]:
    raise ValueError(
      f"labels must be ImageNet-1k class indices 0..{logits.shape[1] - 1}, got "
      f"{labels.min()}..{labels.max()}"
    )
  top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
  return (top == labels[:, None]).any(axis=1)
