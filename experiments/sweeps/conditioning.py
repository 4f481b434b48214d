"""How the LR image enters the U-Net: SR3's channel concatenation, FiLM from an LR encoder's pooled
summary, cross-attention to LR-encoder features, or LR features injected at every resolution.

sr3 sweep --sweep experiments/sweeps/conditioning.py --workdir runs/conditioning --local
"""
from sr3_jax import configs, sweep


def get_sweep(arg=None):
  a = configs.parse_arg(arg, runlocal=False, steps=0)
  return sweep.Sweep(
      config="experiments/configs/demo.py" + (":runlocal" if a.runlocal else f":steps={a.steps}" if a.steps else ""),
      runs=sweep.product(**{"model.conditioning": ["concat", "film", "cross_attention", "injection"]}),
      eval=dict(num_images=2, samples=2, steps=None) if a.runlocal else dict(num_images=2, samples=4, image_size=192))
