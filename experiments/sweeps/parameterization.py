"""What the network predicts: the noise ε (SR3) or the velocity v = √γ·ε − √(1−γ)·y0.

sr3 sweep --sweep experiments/sweeps/parameterization.py --workdir runs/parameterization --local
"""
from sr3_jax import configs, sweep


def get_sweep(arg=None):
  a = configs.parse_arg(arg, runlocal=False, steps=0)
  return sweep.Sweep(
      config="experiments/configs/demo.py" + (":runlocal" if a.runlocal else f":steps={a.steps}" if a.steps else ""),
      runs=sweep.product(**{"diffusion.target": ["eps", "v"]}),
      eval=dict(num_images=2, samples=2, steps=None) if a.runlocal else dict(num_images=2, samples=4, image_size=192))
