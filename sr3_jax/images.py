"""Image files in and out of sr3_jax: reading any PNG/JPEG, writing PNGs, heat-maps and grids."""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


# File names the folder-reading commands (sr3 fid, sr3 lpips) take as images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class ImageReadError(ValueError):
  """A file that is not a readable image."""


@dataclasses.dataclass
class LoadedImage:
  rgb: np.ndarray  # (H, W, 3) uint8: the colour the model sees
  alpha: np.ndarray | None  # (H, W) uint8 for RGBA / LA inputs, else None
  gray: bool  # the input had no colour: outputs are written as grayscale


def load_image(path) -> LoadedImage:
  """Reads PNG/JPEG/… of any mode: EXIF rotation applied, palette/16-bit/gray → RGB, alpha kept aside."""
  path = pathlib.Path(path)
  try:
    with Image.open(path) as im:
      im.load()
      im = ImageOps.exif_transpose(im)
  except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
    raise ImageReadError(
      f"{path}: not a readable image ({type(e).__name__}: {e}); "
      f"pass PNG or JPEG files, or remove this file from the input"
    ) from None
  if im.mode == "P":
    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
  gray = im.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
  alpha = np.asarray(im.getchannel("A")) if im.mode in ("RGBA", "LA", "PA") else None
  if im.mode.startswith("I") or im.mode == "F":  # high bit depth gray → 8 bits, scaled not clipped
    arr = np.asarray(im, np.float64)
    top = 65535.0 if arr.max() > 255 else 255.0
    im = Image.fromarray(np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8))
  rgb = np.asarray(im.convert("RGB"))
  if rgb.shape[0] < 1 or rgb.shape[1] < 1:
    raise ImageReadError(f"{path}: the image is empty ({rgb.shape[1]}×{rgb.shape[0]})")
  return LoadedImage(rgb=rgb, alpha=alpha, gray=gray)


def save_png(path, rgb: np.ndarray, gray: bool = False, alpha: np.ndarray | None = None) -> None:
  """Writes (H, W, 3) uint8 as RGB, gray (L) or with an alpha channel (RGBA / LA)."""
  im = Image.fromarray(rgb)
  if gray:
    im = im.convert("L")
  if alpha is not None:
    im.putalpha(Image.fromarray(alpha))
  im.save(path)


def resize_alpha(alpha: np.ndarray, height: int, width: int) -> np.ndarray:
  """An alpha channel brought to the output size with Pillow's bicubic filter."""
  return np.asarray(Image.fromarray(alpha).resize((width, height), Image.BICUBIC))


def heat_map(std: np.ndarray, vmax: float | None = None) -> np.ndarray:
  """Per-pixel standard deviation (H, W) → uint8 RGB, black → red → yellow → white up to `vmax`
  (default: the map's own maximum)."""
  vmax = float(std.max()) if vmax is None else vmax
  t = np.clip(std / max(vmax, 1e-8), 0.0, 1.0)
  rgb = np.stack(
    [np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], axis=-1
  )
  return np.round(rgb * 255).astype(np.uint8)


def grid(panels: list[np.ndarray], gap: int = 4) -> np.ndarray:
  """Equal-height uint8 RGB panels side by side with white gaps."""
  space = np.full((panels[0].shape[0], gap, 3), 255, np.uint8)
  out = []
  for p in panels:
    out += [p, space]
  return np.concatenate(out[:-1], axis=1)


def to_model_range(images_uint8: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] → float32 [−1, 1]."""
  return images_uint8.astype(np.float32) / 127.5 - 1.0


def to_uint8(images: np.ndarray) -> np.ndarray:
  """float [−1, 1] → uint8 [0, 255], rounded and clipped."""
  return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
