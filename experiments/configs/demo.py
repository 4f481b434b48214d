"""The `make demo` job: 4× super-resolution trained on the embedded photographs' training split.

A ~1M-parameter U-Net on 32×32 HR patches (8×8 LR), diffusing the residual HR − bicubic(LR)
scaled ×4 so that sampling starts from bicubic quality; SR3 noise levels (linear β 1e-6 → 1e-2,
T = 2000), L1 on ε, Adam 1e-3 with 100 warmup steps, EMA.

Run: sr3 demo --output demo_out        (or: make demo)

`demo.py:v` is the same network as a teacher for progressive distillation (README, "Few-step
students"): it predicts v with an L2 loss on a continuous cosine log-SNR schedule, trained and
sampled on that schedule, so that the students' halved grids nest in it.
"""

from sr3_jax import configs


def get_config(arg=None):
  a = configs.parse_arg(arg, runlocal=False, steps=0, v=False)
  c = configs.base_config()
  c.data.update(dict(dataset="embedded", image_size=32, factor=4))
  c.model.update(
    dict(
      image_size=32,
      channels=32,
      channel_mult=(1, 2, 2),
      num_res_blocks=1,
      attn_resolutions=(),
      num_groups=8,
      dropout=0.0,
      dtype="float32",
    )
  )
  c.diffusion.update(dict(diffuse="residual", residual_scale=4.0, target="eps", loss="l1"))
  c.optim.update(dict(lr=1e-3, warmup_steps=100, ema_decay=0.999))
  c.train.update(dict(batch_size=32, num_steps=500, log_every=50))
  c.sampling.update(dict(sampler="ddpm", steps=50, variance="posterior"))
  c.sampling.schedule.update(dict(kind="beta", name="linear", num_steps=50, start=1e-4, end=0.2))
  c.eval = dict(crop=192, samples=4)
  if a.v:
    c.diffusion.update(dict(target="v", loss="l2"))
    c.schedule.update(dict(kind="logsnr", name="cosine"))
    c.sampling.schedule.update(dict(kind="logsnr", name="cosine"))
  if a.runlocal:
    c.train.update(dict(batch_size=8, num_steps=10, log_every=5))
    c.sampling.steps = c.sampling.schedule.num_steps = 5
    c.eval = dict(crop=64, samples=2)
  if a.steps:
    c.train.num_steps = a.steps
  return c
