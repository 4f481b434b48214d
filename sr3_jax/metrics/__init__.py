"""Image-quality metrics of SR papers; NHWC or HWC floats in [0, max_val]."""
from sr3_jax.metrics.psnr import consistency, psnr, rgb_to_y
from sr3_jax.metrics.ssim import ssim

__all__ = ["psnr", "ssim", "consistency", "rgb_to_y"]
