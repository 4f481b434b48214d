"""Small image folders for the study tests: real 48×48 crops of scikit-image's photos, their
16×16 LR inputs, and two methods (bicubic from the LR, and the real image with noise, as JPEG)."""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image
from skimage import data

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def write(root, names=PHOTOS, size: int = 48) -> dict[str, pathlib.Path]:
  root = pathlib.Path(root)
  dirs = {k: root / k for k in ("real", "lr", "bicubic", "noisy")}
  for d in dirs.values():
    d.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  for n in names:
    hr = Image.fromarray(getattr(data, n)()).convert("RGB").resize((size, size), Image.BICUBIC)
    hr.save(dirs["real"] / f"{n}.png")
    lr = hr.resize((size // 3, size // 3), Image.BICUBIC)
    lr.save(dirs["lr"] / f"{n}.png")
    lr.resize((size, size), Image.BICUBIC).save(dirs["bicubic"] / f"{n}.png")
    noisy = np.asarray(hr, np.float64) + rng.normal(0, 12, (size, size, 3))
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(dirs["noisy"] / f"{n}.jpg")
  return dirs
