"""SR3 ImageNet 64→256 (paper Table A.1: 128 channels, 1,2,4,4,8,8, 3 res blocks, 625M).

Train: sr3 train --config experiments/configs/sr3_imagenet_64_256.py --workdir WORKDIR
Laptop: sr3 train --config experiments/configs/sr3_imagenet_64_256.py:runlocal --workdir /tmp/w
"""

from sr3_jax.configs import paper_config


def get_config(arg=None):
  c = paper_config(
    arg,
    hr=256,
    factor=4,
    channels=128,
    channel_mult=(1, 2, 4, 4, 8, 8),
    num_res_blocks=3,
    dropout=0.0,
  )
  if not c.data.dataset == "embedded":
    c.data.dataset = "imagenet2012"
  return c
