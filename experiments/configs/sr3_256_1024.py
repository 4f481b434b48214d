"""SR3 256→1024 (paper Table A.1: 16 channels, 1,2,4,8,16,32,32,32, 2 res blocks, 150M).

Train: sr3 train --config experiments/configs/sr3_256_1024.py --workdir WORKDIR
Laptop: sr3 train --config experiments/configs/sr3_256_1024.py:runlocal --workdir /tmp/w
"""

from sr3_jax.configs import paper_config


def get_config(arg=None):
  c = paper_config(
    arg,
    hr=1024,
    factor=4,
    channels=16,
    channel_mult=(1, 2, 4, 8, 16, 32, 32, 32),
    num_res_blocks=2,
    dropout=0.0,
  )
  if not c.data.dataset == "embedded":
    c.data.dataset = "div2k"
  return c
