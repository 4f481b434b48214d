"""SR3 64→512 (paper Table A.1: 64 channels, 1,2,4,8,8,16,16, 3 res blocks, 625M).

Train: sr3 train --config experiments/configs/sr3_64_512.py --workdir WORKDIR
Laptop: sr3 train --config experiments/configs/sr3_64_512.py:runlocal --workdir /tmp/w
"""

from sr3_jax.configs import paper_config


def get_config(arg=None):
  c = paper_config(
    arg,
    hr=512,
    factor=8,
    channels=64,
    channel_mult=(1, 2, 4, 8, 8, 16, 16),
    num_res_blocks=3,
    dropout=0.0,
  )
  if not c.data.dataset == "embedded":
    c.data.dataset = "imagenet2012"
  return c
