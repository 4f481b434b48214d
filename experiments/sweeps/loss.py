"""L1 vs L2 on the noise (SR3 Table 5 found L1 slightly better).

sr3 sweep --sweep experiments/sweeps/loss.py --workdir runs/loss --local
"""

from sr3_jax import sweep


def get_sweep(arg=None):
  return sweep.on_demo(arg, sweep.product(**{"diffusion.loss": ["l1", "l2"]}))
