"""Small cascades for tests.

`stages()`: two stages with random weights, for the pipeline and its cost model's tests: a
class-conditional 64×64 base (guidance 2) and a truncated 4× SR stage to 256×256 at the `runlocal`
sizes of experiments/configs/cascade_imagenet_64_256_1024.py, 3 sampler steps each.
`train_faces_sr(root)`: the faces cascade's runlocal 8→16 and 16→32 SR stages trained 2 steps in
ROOT/sr32 and ROOT/sr64 (one program for every test module that trains them: JAX's persistent
cache compiles it once).
"""

import jax

from sr3_jax import cascade, configs, train
from sr3_jax.models import unet

FACES = "experiments/configs/cascade_faces_16_32_64_128.py"


def train_faces_sr(root):
  for name in ("sr32", "sr64"):
    c = configs.load(f"{FACES}:stage={name},runlocal")
    c.train.update(dict(batch_size=4, num_steps=2, log_every=1))
    train.train_and_evaluate(c, root / name)
  return root


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
