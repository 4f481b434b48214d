"""PSNR and consistency against float64 numpy references on real photographs."""

import numpy as np
import pytest

from sr3_jax import metrics
from sr3_jax.data import degrade, embedded


@pytest.fixture(scope="module")
def pair():
  hr = embedded.load_photo("astronaut")[:128, :128].astype(np.float64) / 255.0
  noisy = np.clip(hr + np.random.default_rng(0).normal(0, 0.05, hr.shape), 0, 1)
  return hr, noisy


def np_psnr(a, b, max_val=1.0):
  return 10 * np.log10(max_val**2 / np.mean((a - b) ** 2))


def test_psnr_rgb_and_batched(pair):
  hr, noisy = pair
  assert float(metrics.psnr(noisy, hr)) == pytest.approx(np_psnr(noisy, hr), abs=1e-3)
  batched = metrics.psnr(np.stack([noisy, hr * 0.9]), np.stack([hr, hr]))
  np.testing.assert_allclose(batched, [np_psnr(noisy, hr), np_psnr(hr * 0.9, hr)], atol=1e-3)
  assert float(metrics.psnr(noisy * 255, hr * 255, max_val=255.0)) == pytest.approx(
    np_psnr(noisy, hr), abs=1e-3
  )


def test_psnr_y_channel_and_border(pair):
  hr, noisy = pair
  y = lambda x: (16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0
  want = np_psnr(y(noisy)[4:-4, 4:-4], y(hr)[4:-4, 4:-4])
  got = float(metrics.psnr(noisy, hr, crop_border=4, y_channel=True))
  assert got == pytest.approx(want, abs=1e-3)
  try:
    from skimage.metrics import peak_signal_noise_ratio
  except ImportError:
    return
  assert float(metrics.psnr(noisy, hr)) == pytest.approx(
    peak_signal_noise_ratio(hr, noisy, data_range=1.0), abs=1e-3
  )


def test_consistency_is_zero_for_the_source_and_mse_otherwise(pair):
  hr, noisy = pair
  lr = np.asarray(degrade.downsample(hr.astype(np.float32), 4, (0.0, 1.0)), np.float64)
  assert float(metrics.consistency(hr, lr, 4)) < 1e-10
  want = np.mean(
    (np.asarray(degrade.downsample(noisy.astype(np.float32), 4, (0.0, 1.0)), np.float64) - lr) ** 2
  )
  assert float(metrics.consistency(noisy, lr, 4)) == pytest.approx(want, rel=1e-4)


def np_ssim_channel(x, y, max_val=1.0):
  """Independent float64 SSIM of one channel: 11×11 Gaussian (σ 1.5) window, valid region only."""
  from scipy.signal import convolve2d

  t = np.arange(11) - 5.0
  g = np.exp(-0.5 * (t / 1.5) ** 2)
  w = np.outer(g, g) / np.outer(g, g).sum()
  f = lambda z: convolve2d(z, w, mode="valid")
  c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
  mx, my = f(x), f(y)
  sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
  return np.mean((2 * mx * my + c1) * (2 * sxy + c2) / ((mx**2 + my**2 + c1) * (sxx + syy + c2)))


def test_ssim_against_float64_reference_and_scikit_image(pair):
  hr, noisy = pair
  want = np.mean([np_ssim_channel(noisy[..., c], hr[..., c]) for c in range(3)])
  got = float(metrics.ssim(noisy, hr))
  assert got == pytest.approx(want, abs=1e-4)
  from skimage.metrics import structural_similarity

  sk = structural_similarity(
    hr,
    noisy,
    gaussian_weights=True,
    sigma=1.5,
    use_sample_covariance=False,
    data_range=1.0,
    channel_axis=-1,
  )
  assert got == pytest.approx(sk, abs=1e-4)
  assert float(metrics.ssim(hr, hr)) == pytest.approx(1.0, abs=1e-6)


def test_ssim_y_channel_border_and_batch(pair):
  hr, noisy = pair
  y = lambda x: (16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0
  want = np_ssim_channel(y(noisy)[4:-4, 4:-4], y(hr)[4:-4, 4:-4])
  assert float(metrics.ssim(noisy, hr, crop_border=4, y_channel=True)) == pytest.approx(
    want, abs=1e-4
  )
  batch = metrics.ssim(np.stack([noisy, hr]) * 255, np.stack([hr, hr]) * 255, max_val=255.0)
  assert batch.shape == (2,) and float(batch[1]) == pytest.approx(1.0, abs=1e-6)
  assert float(batch[0]) == pytest.approx(float(metrics.ssim(noisy, hr)), abs=1e-4)
