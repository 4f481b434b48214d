"""The architecture of a widely used PyTorch SR3 port's 16→128 default, for `sr3 bench`.

64 channels, multipliers 1,2,4,8,8, 2 residual blocks per level, attention (one head) at 16×16,
dropout 0.2, GroupNorm 32, DDPM-style blocks (resampling by separate convolutions, additive noise
embedding of width 64, plain residual sums), 128×128 output: about 97.8M parameters.

Bench: sr3 bench --config experiments/configs/bench_reference_16_128.py --what train --batch 4 --json
Laptop: sr3 bench --config experiments/configs/bench_reference_16_128.py:runlocal --what train --json
"""

from sr3_jax import configs


def get_config(arg=None):
  a = configs.parse_arg(arg, runlocal=False)
  c = configs.base_config()
  c.data.update(dict(image_size=128, factor=8))
  c.model.update(
    dict(
      image_size=128,
      channels=64,
      channel_mult=(1, 2, 4, 8, 8),
      num_res_blocks=2,
      attn_resolutions=(16,),
      head_dim=512,
      dropout=0.2,
      num_groups=32,
      dtype="float32",
      resample="conv",
      film="shift",
      skip_scale=1.0,
      emb_channels=64,
    )
  )
  c.train.batch_size = 4
  if a.runlocal:
    c.data.image_size = c.model.image_size = 32
    c.model.update(
      dict(
        channels=16,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attn_resolutions=(8,),
        num_groups=8,
        head_dim=64,
        emb_channels=16,
      )
    )
    c.sampling.steps = c.sampling.schedule.num_steps = 4
  return c
