"""SR3 faces 256→1024 (paper Table A.1: 16 channels, 1,2,4,8,16,32,32,32, 2 res blocks, 150M).

Train: sr3 train --config experiments/configs/sr3_256_1024.py --workdir WORKDIR
Laptop: sr3 train --config experiments/configs/sr3_256_1024.py:runlocal --workdir /tmp/w (embedded photos)

Data: FFHQ for training, CelebA-HQ for evaluation, each face resized whole to the HR size
(preprocess=center_resize); each a folder of images made a TFDS dataset:
  sr3 prepare --images FFHQ_DIR --name ffhq --min-size 1024
  sr3 prepare --images CELEBA_HQ_DIR --name celeb_a_hq --min-size 1024
(add --data-dir DIR to both, and --config.data.data_dir=DIR to the train command, for another place)
"""

from sr3_jax.configs import FACES, SR3_MODELS, paper_config


def get_config(arg=None):
  return paper_config(arg, data=FACES, hr=1024, factor=4, **SR3_MODELS["256_1024"])
