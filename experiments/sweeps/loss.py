"""L1 vs L2 on the noise (SR3 Table 5 found L1 slightly better).

sr3 sweep --sweep experiments/sweeps/loss.py --workdir runs/loss --local
"""
from sr3_jax import configs, sweep


def get_sweep(arg=None):
  a = configs.parse_arg(arg, runlocal=False, steps=0)
  return sweep.Sweep(
      config="experiments/configs/demo.py" + (":runlocal" if a.runlocal else f":steps={a.steps}" if a.steps else ""),
      runs=sweep.product(**{"diffusion.loss": ["l1", "l2"]}),
      eval=dict(num_images=2, samples=2, steps=None) if a.runlocal else dict(num_images=2, samples=4, image_size=192))
