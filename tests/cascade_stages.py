"""A small two-stage cascade with random weights, for the pipeline and its cost model's tests.

A class-conditional 64×64 base (guidance 2) and a truncated 4× SR stage to 256×256 at the
`runlocal` sizes of experiments/configs/cascade_imagenet_64_256_1024.py, 3 sampler steps each.
"""

import jax

from sr3_jax import cascade, configs
from sr3_jax.models import unet


def stages():
  spec = "experiments/configs/cascade_imagenet_64_256_1024.py:runlocal,stage="
  out = []
  for i, (name, level, trunc) in enumerate((("base64", 0.0, False), ("sr256", 0.3, True))):
    c = configs.load(spec + name)
    params = unet.init_params(unet.build(c.model), jax.random.key(i))
    params = jax.tree_util.tree_map(
      lambda p: p + 0.05 * jax.random.normal(jax.random.key(9), p.shape), params
    )
    out.append(
      cascade.Stage(name, c, params, steps=3, aug_level=level, truncated=trunc, guidance=2.0)
    )
  return out
