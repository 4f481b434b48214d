"""CPU-only kernels and tuning, behind one seam.

`sr3_jax.models.unet.conv_factory("cpu")` is the only way the model reaches these kernels:
Winograd F(4×4, 3×3) convolutions (`winograd`), the upsampling convolution at the low resolution
(`subpixel`) and im2col weight gradients (`conv`), chosen per layer by shape. `model.conv_impl`
selects them (`auto`: on a single CPU device, decided once by `unet.build`). `malloc` keeps glibc's
freed memory for XLA's CPU runtime; the `sr3` command applies it before JAX starts. On TPU and GPU
nothing here runs.
"""
