"""Image-quality metrics of SR papers; NHWC or HWC floats in [0, max_val]."""

from sr3_jax.metrics.psnr import consistency, psnr, rgb_to_y
from sr3_jax.metrics.ssim import ssim


def sr_scores(sr01, hr01, lr01, factor: int, y_channel: bool = False, crop_border: int = 0) -> dict:
  """SR3's three numbers per image for SR outputs against HR and their LR input, all in [0, 1].
  PSNR and SSIM may be taken on the luma channel (BT.601 Y) and with `crop_border` pixels removed
  from each side, the convention of many SR papers; consistency always uses the whole RGB image."""
  return {
    "psnr": psnr(sr01, hr01, crop_border=crop_border, y_channel=y_channel),
    "ssim": ssim(sr01, hr01, crop_border=crop_border, y_channel=y_channel),
    "consistency": consistency(sr01, lr01, factor),
  }


__all__ = ["psnr", "ssim", "consistency", "rgb_to_y", "sr_scores"]
