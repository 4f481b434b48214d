"""How the LR image enters the U-Net: SR3's channel concatenation, FiLM from an LR encoder's pooled
summary, cross-attention to LR-encoder features, or LR features injected at every resolution.

sr3 sweep --sweep experiments/sweeps/conditioning.py --workdir runs/conditioning --local
"""

from sr3_jax import sweep


def get_sweep(arg=None):
  return sweep.on_demo(
    arg, sweep.product(**{"model.conditioning": ["concat", "film", "cross_attention", "injection"]})
  )
