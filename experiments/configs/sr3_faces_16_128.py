"""SR3 faces 16→128 (paper Table A.1: 128 channels, 1,2,4,8,8, 3 res blocks, 550M; dropout 0.2).

Train: sr3 train --config experiments/configs/sr3_faces_16_128.py --workdir WORKDIR
Laptop: sr3 train --config experiments/configs/sr3_faces_16_128.py:runlocal --workdir /tmp/w
"""

from sr3_jax.configs import paper_config


def get_config(arg=None):
  c = paper_config(
    arg, hr=128, factor=8, channels=128, channel_mult=(1, 2, 4, 8, 8), num_res_blocks=3, dropout=0.2
  )
  if not c.data.dataset == "embedded":
    c.data.dataset = "ffhq"  # prepared with `sr3 prepare --images FFHQ_DIR --name ffhq`
  return c
