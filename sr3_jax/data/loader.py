"""The host input pipeline: a random-access source → Grain → per-process HR batches → one global array.

The host only decodes and crops HR images (uint8 → float32 in [−1, 1]); every degradation runs on
device inside the jitted step. Each process reads the disjoint share `[process_index::process_count]`
of the shuffled, repeated record stream, so a pod's hosts never read the same example twice in an
epoch, and the Grain iterator's state (a few integers) is enough to resume exactly.
"""

from __future__ import annotations

import io

import grain
import ml_collections
import jax
import numpy as np
from PIL import Image

from sr3_jax import images as image_io
from sr3_jax.data import embedded

PREPROCESS = ("random_crop", "center_resize")
EMBEDDED = ("embedded", "lfw_faces")


class EmbeddedSource:
  """An embedded dataset's split as a Grain random-access source of uint8 HWC images."""

  def __init__(self, split: str, dataset: str = "embedded"):
    photos = embedded.load_faces(split) if dataset == "lfw_faces" else embedded.load_split(split)
    self.names: list[str] = list(photos)
    self.images: list[np.ndarray] = list(photos.values())
    # Class labels: which photograph (its index in embedded.PHOTOS, the same in every split); faces: 0.
    order = list(embedded.PHOTOS)
    self.labels = [order.index(n) if n in order else 0 for n in self.names]

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, index: int) -> np.ndarray:
    return self.images[index]

  def label(self, index: int, key: str) -> int:
    return self.labels[index]


# How a user makes the datasets the paper configs name (sr3_jax/configs.py).
PREPARE_HOWTO = {
  "ffhq": "sr3 prepare --images FFHQ_DIR --name ffhq (FFHQ's images, any folder layout)",
  "celeb_a_hq": "sr3 prepare --images CELEBA_HQ_DIR --name celeb_a_hq (CelebA-HQ's images)",
  "imagenet2012": "tfds build imagenet2012 (the ILSVRC2012 tar files in TFDS's manual folder)",
}


class TFDSSource:
  """A prepared TFDS dataset (tfds.data_source, array_record) yielding the images under `image_key`."""

  def __init__(self, name: str, split: str, data_dir: str | None = None, image_key: str = "image"):
    import tensorflow_datasets as tfds  # imported here: only TFDS runs need it

    try:
      self.source = tfds.data_source(name, split=split, data_dir=data_dir)
    except Exception as e:  # TFDS raises several types for "not there"
      where = data_dir or "~/tensorflow_datasets (TFDS's default; set data.data_dir)"
      flag = f" --data-dir {data_dir}" if data_dir else ""
      how = PREPARE_HOWTO.get(
        name.split("/")[0], f"sr3 prepare --images DIR --name {name}{flag}, or tfds build {name}"
      )
      raise FileNotFoundError(
        f"dataset {name!r} (split {split!r}) is not prepared in {where}: {str(e)[:200]}. "
        f"Make it with: {how}"
      ) from e
    self.image_key = image_key

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> np.ndarray:
    record = self.source[index]
    if self.image_key not in record:
      raise KeyError(
        f"records have no key {self.image_key!r}; set data.image_key to one of {sorted(record)}"
      )
    value = record[self.image_key]
    if isinstance(value, (bytes, np.bytes_)) or (
      isinstance(value, np.ndarray) and value.dtype == object
    ):
      return decode_image(bytes(value.item() if isinstance(value, np.ndarray) else value))
    return np.asarray(value)

  def label(self, index: int, key: str) -> int:
    record = self.source[index]
    if key not in record:
      raise KeyError(f"records have no key {key!r}; set data.label_key to one of {sorted(record)}")
    return int(record[key])


class _Examples:
  """A source's records as {"image": uint8 HWC} dicts, with "label" when data.label_key is set."""

  def __init__(self, source, label_key: str):
    self.source, self.label_key = source, label_key

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict:
    out = {"image": self.source[index]}
    if self.label_key:
      out["label"] = np.int32(self.source.label(index, self.label_key))
    return out


def decode_image(data: bytes) -> np.ndarray:
  """Encoded PNG/JPEG bytes (as `sr3 prepare` stores them) → uint8 RGB, decoded with Pillow."""
  with Image.open(io.BytesIO(data)) as im:
    return np.asarray(im.convert("RGB"))


def make_source(dcfg, split: str):
  if dcfg.dataset in EMBEDDED:
    return EmbeddedSource(split, dcfg.dataset)
  return TFDSSource(dcfg.dataset, split, dcfg.get("data_dir"), dcfg.get("image_key", "image"))


def to_rgb(image: np.ndarray) -> np.ndarray:
  """Gray (H, W) or (H, W, 1) → RGB; RGBA → RGB; 16-bit → 8-bit."""
  if image.dtype == np.uint16:
    image = (image >> 8).astype(np.uint8)
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return np.ascontiguousarray(image[..., :3])


def random_crop(
  image: np.ndarray, size: int, rng: np.random.Generator, flip: bool = True
) -> np.ndarray:
  """A random size×size crop (DIV2K-style patches), flipped horizontally with probability ½."""
  h, w = image.shape[:2]
  if min(h, w) < size:
    raise ValueError(
      f"image of {h}×{w} is smaller than the crop size {size}; raise data.min_size "
      f"when preparing, or lower data.image_size"
    )
  y, x = rng.integers(h - size + 1), rng.integers(w - size + 1)
  crop = image[y : y + size, x : x + size]
  return crop[:, ::-1] if flip and rng.random() < 0.5 else crop


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """The central size×size crop (evaluation patches of large images)."""
  h, w = image.shape[:2]
  y, x = (h - size) // 2, (w - size) // 2
  return image[y : y + size, x : x + size]


def center_resize(image: np.ndarray, size: int) -> np.ndarray:
  """SR3's ImageNet recipe: the largest central square, resized to size×size with area resampling."""
  h, w = image.shape[:2]
  s = min(h, w)
  y, x = (h - s) // 2, (w - s) // 2
  square = Image.fromarray(image[y : y + s, x : x + s])
  return np.asarray(square.resize((size, size), Image.BOX)) if s != size else np.asarray(square)


def eval_block(dcfg, dataset: str | None = None):
  """A copy of the data block that reads the held-out data: `dataset` if given, else
  data.eval_dataset, else data.dataset (a face model trains on FFHQ and is evaluated on CelebA-HQ)."""
  out = ml_collections.ConfigDict(dcfg.to_dict())
  out.dataset = dataset or dcfg.get("eval_dataset") or dcfg.dataset
  return out


def make_dataset(
  dcfg,
  split: str,
  batch_size: int,
  *,
  seed: int,
  train: bool = True,
  process_index: int | None = None,
  process_count: int | None = None,
) -> grain.IterDataset:
  """Local batches {"hr": (batch_size, S, S, 3) float32 in [−1, 1]} for this process, plus
  {"label": (batch_size,) int32} when data.label_key is set.

  `batch_size` is the per-process batch. Training repeats and reshuffles every epoch; evaluation
  reads each record of this process's share once. Images whose short side is below the target
  size are dropped (SR3's recipe).
  """
  pi = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  size = dcfg.image_size
  mode = dcfg.get("preprocess", "random_crop")
  if mode not in PREPROCESS:
    raise ValueError(f"data.preprocess={mode!r}; choose one of {PREPROCESS}")
  source = make_source(dcfg, split)
  if len(source) == 0:
    raise ValueError(f"dataset {dcfg.dataset!r} split {split!r} is empty")
  ds = grain.MapDataset.source(_Examples(source, dcfg.get("label_key", ""))).seed(seed)
  if train:
    ds = ds.shuffle().repeat(None)
  ds = ds[pi::pc]
  ds = ds.map(lambda e: dict(e, image=to_rgb(e["image"]))).filter(
    lambda e: min(e["image"].shape[:2]) >= size
  )

  def prep(example: dict, rng: np.random.Generator) -> dict:
    image = example["image"]
    if mode == "center_resize":
      image = center_resize(image, size)
    elif train:
      image = random_crop(image, size, rng, flip=dcfg.get("flip", True))
    else:
      image = center_crop(image, size)
    out = {"hr": image_io.to_model_range(image)}
    if "label" in example:
      out["label"] = example["label"]
    return out

  ds = ds.random_map(prep)
  iter_ds = ds.to_iter_dataset(
    grain.ReadOptions(
      num_threads=dcfg.get("num_threads", 2), prefetch_buffer_size=dcfg.get("prefetch", 8)
    )
  )
  iter_ds = iter_ds.batch(
    batch_size,
    drop_remainder=train,
    batch_fn=lambda xs: {k: np.stack([x[k] for x in xs]) for k in xs[0]},
  )
  workers = dcfg.get("num_workers", 0)
  if workers:
    from absl import flags

    if (
      not flags.FLAGS.is_parsed()
    ):  # Grain's workers read absl flags; outside absl.app, use defaults
      flags.FLAGS.mark_as_parsed()
    iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return iter_ds


def global_batch(
  local: dict[str, np.ndarray], sharding: jax.sharding.Sharding
) -> dict[str, jax.Array]:
  """Per-process batches → one global jax.Array per key, sharded as `sharding` (over the data axis)."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
