"""Bicubic resizing on device against Pillow's Image.resize(..., BICUBIC) on real photographs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from sr3_jax.data import degrade, embedded


def pillow_resize(img_uint8, size_wh):
  return np.asarray(Image.fromarray(img_uint8).resize(size_wh, Image.BICUBIC)).astype(np.float64)


@pytest.mark.parametrize(
  "name,factor", [("astronaut", 4), ("chelsea", 8), ("coffee", 2), ("camera", 3)]
)
def test_downsample_matches_pillow(name, factor):
  img = embedded.load_photo(name)
  h, w = (img.shape[0] // (factor * 4)) * factor * 4, (img.shape[1] // (factor * 4)) * factor * 4
  img = img[:h, :w]
  down = jax.jit(lambda x: degrade.downsample(x, factor, value_range=(0.0, 255.0)))
  ours = np.asarray(down(img.astype(np.float32)), np.float64)
  ref = pillow_resize(img, (w // factor, h // factor))
  diff = np.abs(ours - ref)
  assert diff.max() <= 2.0 and diff.mean() <= 0.5, (diff.max(), diff.mean())


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_upsample_matches_pillow(factor):
  img = embedded.load_photo("rocket")[100:132, 200:248]
  ours = np.asarray(
    degrade.upsample(img.astype(np.float32), factor, value_range=(0.0, 255.0)), np.float64
  )
  ref = pillow_resize(img, (48 * factor, 32 * factor))
  diff = np.abs(ours - ref)
  assert diff.max() <= 2.0 and diff.mean() <= 0.5, (diff.max(), diff.mean())


def test_batched_and_scaled_inputs_agree():
  img = embedded.load_photo("coffee")[:64, :64].astype(np.float32)
  single = degrade.downsample(img, 4)
  batch = degrade.downsample(jnp.stack([img, img[::-1]]), 4)
  np.testing.assert_allclose(batch[0], single, atol=1e-4)
  # Weights sum to one, so resizing commutes with the [0, 255] → [−1, 1] map.
  np.testing.assert_allclose(degrade.downsample(img / 127.5 - 1, 4), single / 127.5 - 1, atol=1e-5)


def test_constant_image_is_preserved_and_matrix_rows_sum_to_one():
  for n_in, n_out in [(64, 16), (16, 64), (37, 11)]:
    np.testing.assert_allclose(degrade.resize_matrix(n_in, n_out).sum(axis=1), 1.0, atol=1e-12)
  np.testing.assert_allclose(degrade.downsample(jnp.full((16, 16, 3), 0.3), 4), 0.3, atol=1e-6)


def test_value_range_clips_the_overshoot():
  edge = jnp.concatenate([jnp.zeros((16, 8, 1)), jnp.ones((16, 8, 1))], axis=1)
  free = degrade.upsample(edge, 4)
  assert float(free.min()) < 0.0 and float(free.max()) > 1.0  # the cubic kernel rings
  clipped = degrade.upsample(edge, 4, value_range=(0.0, 1.0))
  assert float(clipped.min()) == 0.0 and float(clipped.max()) == 1.0


def test_bad_factor():
  with pytest.raises(ValueError, match="not divisible"):
    degrade.downsample(jnp.zeros((10, 10, 3)), 4)


@pytest.mark.parametrize("sigma", [0.7, 1.5, 3.0])
def test_gaussian_blur_matches_scipy(sigma):
  from scipy import ndimage

  img = embedded.load_photo("astronaut")[::8, ::8].astype(np.float32)  # 64×64
  ours = np.asarray(degrade.gaussian_blur(img, sigma), np.float64)
  ref = ndimage.gaussian_filter(
    img.astype(np.float64), sigma=(sigma, sigma, 0), mode="reflect", truncate=12.0
  )
  np.testing.assert_allclose(ours, ref, atol=2e-3 * 255)


def test_gaussian_blur_per_example_sigma_and_identity():
  imgs = jnp.asarray(embedded.load_photo("coffee")[:32, :32][None].repeat(3, 0), jnp.float32)
  out = jax.jit(degrade.gaussian_blur)(imgs, jnp.array([0.0, 1.0, 2.0]))
  np.testing.assert_allclose(out[0], imgs[0], atol=1e-3)
  np.testing.assert_allclose(out[1], degrade.gaussian_blur(imgs[1], 1.0), atol=1e-3)
  assert float(jnp.std(out[2])) < float(jnp.std(out[1])) < float(jnp.std(out[0]))


def test_gaussian_noise_statistics():
  x = jnp.zeros((2, 64, 64, 3))
  y = np.asarray(degrade.gaussian_noise(x, jax.random.key(0), jnp.array([0.1, 0.5])))
  assert abs(y[0].std() - 0.1) < 0.005 and abs(y[1].std() - 0.5) < 0.02
