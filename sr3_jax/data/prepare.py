"""`sr3 prepare`: a folder of images → a TFDS array_record dataset, without TensorFlow.

Each image is opened with Pillow in a worker process, checked (fully decoded, so a truncated file
is caught), converted where it can be (gray/palette/CMYK → RGB, alpha dropped, 16-bit → 8-bit)
and stored as encoded bytes: the original file when it already is an 8-bit RGB PNG or JPEG, else
a PNG. Files that cannot be used are skipped, named with the reason in the report, and never stop
the run. TFDS writes into an `incomplete.*` folder and renames it when done, so an interrupted
run leaves nothing that `tfds.data_source` would load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import pathlib
import sys
from typing import Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm

REPORT_NAME = "prepare_report.json"


@dataclasses.dataclass(frozen=True)
class Prepared:
  """One file's outcome: encoded bytes and size, or the reason it was skipped."""

  path: str
  data: bytes | None = None
  height: int = 0
  width: int = 0
  converted: str = ""
  skipped: str = ""


def _to_rgb8(im: Image.Image) -> tuple[Image.Image, str]:
  """Pillow image → 8-bit RGB, and what was converted ('' when nothing)."""
  mode = im.mode
  if mode == "RGB":
    return im, ""
  if mode in ("I;16", "I;16B", "I;16L", "I"):
    arr = np.asarray(im, np.uint32 if mode == "I" else np.uint16)
    arr = (arr >> 8).clip(0, 255).astype(np.uint8) if arr.max() > 255 else arr.astype(np.uint8)
    return Image.fromarray(arr, "L").convert("RGB"), f"{mode}→RGB 8-bit"
  if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
    return im.convert("RGBA").convert("RGB"), f"{mode}→RGB (alpha dropped)"
  return im.convert("RGB"), f"{mode}→RGB"


def prepare_file(path: str, min_size: int) -> Prepared:
  """Opens, checks and converts one file; never raises for a bad file."""
  try:
    with Image.open(path) as im:
      fmt = im.format
      im.load()  # decodes every pixel: truncated or corrupt data fails here
      if im.mode == "RGB" and fmt in ("PNG", "JPEG") and getattr(im, "bits", 8) == 8:
        rgb, converted = im, ""
      else:
        rgb, converted = _to_rgb8(im)
      w, h = rgb.size
      if min(w, h) < min_size:
        return Prepared(path, skipped=f"smaller than --min-size {min_size}: {w}×{h}")
      if converted or fmt not in ("PNG", "JPEG"):
        buf = io.BytesIO()
        rgb.save(buf, format="PNG")
        data = buf.getvalue()
        converted = converted or f"{fmt}→PNG"
      else:
        data = pathlib.Path(path).read_bytes()
      return Prepared(path, data, h, w, converted)
  except Exception as e:  # every unreadable file becomes one line of the report
    kind = type(e).__name__
    msg = str(e).splitlines()[0] if str(e) else kind
    return Prepared(path, skipped=f"not a readable image ({kind}: {msg})")


def _prepare_star(args):
  return prepare_file(*args)


def list_files(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def split_of(relpath: str, val_fraction: float) -> str:
  """A fixed split from a hash of the path: the same file always lands in the same split."""
  h = int.from_bytes(hashlib.sha256(relpath.encode()).digest()[:8], "big") / 2**64
  return "validation" if h < val_fraction else "train"


def _builder_class(name: str):
  import tensorflow_datasets as tfds

  class FolderImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Images from a local folder, stored as encoded bytes (decoded with Pillow at read time)."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, *, examples, splits, **kwargs):
      self._examples = examples
      self._splits = splits
      super().__init__(**kwargs)

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        description=f"Images prepared by `sr3 prepare` as dataset {name!r}.",
        features=tfds.features.FeaturesDict(
          {
            "image": tfds.features.Tensor(shape=(), dtype=np.object_),  # encoded PNG/JPEG bytes
            "filename": tfds.features.Text(),
            "height": tfds.features.Scalar(dtype=np.int32),
            "width": tfds.features.Scalar(dtype=np.int32),
          }
        ),
      )

    def _split_generators(self, dl_manager):
      return {s: self._generate_examples(s) for s in self._splits}

    def _generate_examples(self, split):
      for key, ex, s in self._examples():
        if s == split:
          yield key, ex

  FolderImages.name = name
  return FolderImages


def prepare(
  images: str,
  name: str,
  data_dir: str | None = None,
  min_size: int = 0,
  val_fraction: float = 0.0,
  workers: int | None = None,
  log=sys.stderr,
) -> dict:
  """Builds dataset `name` under `data_dir` from every image below `images`; returns the report."""

  folder = pathlib.Path(images)
  if not folder.is_dir():
    raise FileNotFoundError(f"--images {images}: no such folder")
  files = list_files(folder)
  if not files:
    raise ValueError(
      f"--images {images}: the folder holds no files; point it at a folder of PNG/JPEG images"
    )
  if not 0.0 <= val_fraction < 1.0:
    raise ValueError(f"--val-fraction {val_fraction} must be in [0, 1)")
  if not name.replace("_", "").isalnum() or not name[0].isalpha() or name.lower() != name:
    raise ValueError(
      f"--name {name!r}: use lower-case letters, digits and '_', starting with a letter"
    )
  data_dir = data_dir or os.path.expanduser("~/tensorflow_datasets")
  target = pathlib.Path(data_dir) / name
  if target.exists() and any(p.name[0].isdigit() for p in target.iterdir()):
    raise FileExistsError(
      f"dataset {name!r} already exists in {data_dir}; remove {target} or pick another --name"
    )
  workers = workers or min(2, os.cpu_count() or 1)
  outcomes: list[Prepared] = []

  # Every file is decoded once, in `workers` processes; the examples are buffered per split
  # only as encoded bytes, which TFDS then shuffles and writes.
  ctx = multiprocessing.get_context("spawn")
  rel = [str(p.relative_to(folder)) for p in files]
  with ctx.Pool(workers) as pool:
    it = pool.imap(_prepare_star, [(str(p), min_size) for p in files], chunksize=4)
    for out in tqdm(it, total=len(files), desc=f"prepare {name}", file=log, unit="img"):
      outcomes.append(out)

  kept = [(r, o) for r, o in zip(rel, outcomes) if not o.skipped]
  if not kept:
    raise ValueError(
      f"--images {images}: none of the {len(files)} files is a usable image "
      f"(see the reasons above); nothing was written"
    )

  def examples() -> Iterator[tuple[str, dict, str]]:
    for r, o in kept:
      yield (
        r,
        {"image": o.data, "filename": r, "height": o.height, "width": o.width},
        split_of(r, val_fraction),
      )

  present = sorted({split_of(r, val_fraction) for r, _ in kept})
  builder = _builder_class(name)(
    examples=examples, splits=present, data_dir=data_dir, file_format="array_record"
  )
  builder.download_and_prepare()
  report = {
    "dataset": name,
    "data_dir": str(data_dir),
    "folder": str(folder),
    "files": len(files),
    "written": len(kept),
    "splits": {s: sum(1 for r, _ in kept if split_of(r, val_fraction) == s) for s in present},
    "converted": {r: o.converted for r, o in kept if o.converted},
    "skipped": {r: o.skipped for r, o in zip(rel, outcomes) if o.skipped},
  }
  (target / REPORT_NAME).write_text(json.dumps(report, indent=2))
  for r, why in report["skipped"].items():
    print(f"skipped {r}: {why}", file=log)
  print(
    f"{name}: wrote {report['written']} of {report['files']} files {report['splits']}; "
    f"skipped {len(report['skipped'])}; report: {target / REPORT_NAME}",
    file=log,
  )
  return report
