"""Image-quality metrics of SR papers; NHWC or HWC floats in [0, max_val]."""

from sr3_jax.metrics.psnr import consistency, psnr, rgb_to_y
from sr3_jax.metrics.ssim import ssim


def sr_scores(sr01, hr01, lr01, factor: int) -> dict:
  """SR3's three numbers per image for SR outputs against HR and their LR input, all in [0, 1]."""
  return {
    "psnr": psnr(sr01, hr01),
    "ssim": ssim(sr01, hr01),
    "consistency": consistency(sr01, lr01, factor),
  }


__all__ = ["psnr", "ssim", "consistency", "rgb_to_y", "sr_scores"]
