"""sr3_jax: SR3-style diffusion super-resolution and cascades in JAX/Flax."""

__version__ = "0.1.0"
