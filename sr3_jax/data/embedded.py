"""The embedded default datasets: real images that ship inside the scikit-image wheel.

They make the demo and the tests work offline. `embedded`: photographs with a fixed split, the
held-out photographs (chelsea, coffee) never used for training. `lfw_faces`: the 100 face crops of
scikit-image's LFW subset (25×25 gray, as RGB), a tiny face set; the last 10 are held out.
"""

from __future__ import annotations

import importlib.resources

import numpy as np
from PIL import Image

# Name → file in skimage/data. Grayscale photographs are replicated to three channels.
PHOTOS = {
  "astronaut": "astronaut.png",
  "rocket": "rocket.jpg",
  "stereo_motorcycle": "motorcycle_left.png",
  "hubble_deep_field": "hubble_deep_field.jpg",
  "retina": "retina.jpg",
  "immunohistochemistry": "ihc.png",
  "colorwheel": "color.png",
  "camera": "camera.png",
  "brick": "brick.png",
  "grass": "grass.png",
  "gravel": "gravel.png",
  "moon": "moon.png",
  "coins": "coins.png",
  "chelsea": "chelsea.png",
  "coffee": "coffee.png",
}
HELD_OUT = ("chelsea", "coffee")
SPLITS = {
  "train": tuple(n for n in PHOTOS if n not in HELD_OUT),
  "test": HELD_OUT,
}


def photo_path(name: str):
  if name not in PHOTOS:
    raise KeyError(f"no embedded photograph {name!r}; known: {sorted(PHOTOS)}")
  return importlib.resources.files("skimage") / "data" / PHOTOS[name]


def load_photo(name: str) -> np.ndarray:
  """(H, W, 3) uint8 RGB."""
  with Image.open(photo_path(name)) as im:
    return np.asarray(im.convert("RGB"))


def load_split(split: str) -> dict[str, np.ndarray]:
  if split not in SPLITS:
    raise KeyError(f"the embedded dataset has splits {sorted(SPLITS)}, not {split!r}")
  return {name: load_photo(name) for name in SPLITS[split]}


FACES_HELD_OUT = 10


def load_faces(split: str) -> dict[str, np.ndarray]:
  """The LFW subset's 100 faces (the file's first 100 rows; the rest are non-faces) as uint8 RGB."""
  if split not in SPLITS:
    raise KeyError(f"lfw_faces has splits {sorted(SPLITS)}, not {split!r}")
  arr = np.load(importlib.resources.files("skimage") / "data" / "lfw_subset.npy")[:100]
  faces = np.repeat(np.round(arr * 255.0).astype(np.uint8)[..., None], 3, axis=-1)
  idx = range(100 - FACES_HELD_OUT) if split == "train" else range(100 - FACES_HELD_OUT, 100)
  return {f"lfw_{i:03d}": faces[i] for i in idx}
