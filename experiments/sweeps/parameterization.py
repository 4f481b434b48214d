"""What the network predicts: the noise ε (SR3) or the velocity v = √γ·ε − √(1−γ)·y0.

sr3 sweep --sweep experiments/sweeps/parameterization.py --workdir runs/parameterization --local
"""

from sr3_jax import sweep


def get_sweep(arg=None):
  return sweep.on_demo(arg, sweep.product(**{"diffusion.target": ["eps", "v"]}))
