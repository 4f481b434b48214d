"""Image-quality metrics of SR papers; NHWC or HWC floats in [0, max_val]."""
from sr3_jax.metrics.psnr import consistency, psnr, rgb_to_y

__all__ = ["psnr", "consistency", "rgb_to_y"]
