"""SR3 ImageNet 64→256 (paper Table A.1: 128 channels, 1,2,4,4,8,8, 3 res blocks, 625M).

Train: sr3 train --config experiments/configs/sr3_imagenet_64_256.py --workdir WORKDIR
Laptop: sr3 train --config experiments/configs/sr3_imagenet_64_256.py:runlocal --workdir /tmp/w (embedded photos)

Data: ImageNet (ILSVRC2012) through TFDS: put the tar files in TFDS's manual folder, then
  tfds build imagenet2012
Training resizes the central square of each image (preprocess=center_resize); evaluation uses the
validation split.
"""

from sr3_jax.configs import IMAGENET, SR3_MODELS, paper_config


def get_config(arg=None):
  return paper_config(arg, data=IMAGENET, hr=256, factor=4, **SR3_MODELS["64_256"])
