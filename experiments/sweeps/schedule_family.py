"""Noise-schedule family on the demo task (4×, embedded photographs): SR3's linear β, the cosine
log-SNR, the resolution-shifted cosine, blurring diffusion and a two-band DCT schedule. Training
and inference schedules change together.

sr3 sweep --sweep experiments/sweeps/schedule_family.py --workdir runs/schedule_family --local
Shorter: …/schedule_family.py:steps=250; laptop smoke run: …/schedule_family.py:runlocal
"""

from sr3_jax import sweep


def logsnr(name, **extra):
  out = {}
  for block in ("schedule", "sampling.schedule"):
    out.update(
      {
        f"{block}.kind": "logsnr",
        f"{block}.name": name,
        **{f"{block}.{k}": v for k, v in extra.items()},
      }
    )
  return out


def get_sweep(arg=None):
  return sweep.on_demo(
    arg,
    sweep.named(
      {
        "linear_beta": {},
        "cosine": logsnr("cosine"),
        "shifted_cosine": logsnr("shifted_cosine", image_size=32, base=64),
        # x0 prediction: with ε, errors in strongly blurred coefficients grow by 1/α_{t|s} per step.
        "blurring": {
          "diffusion.process": "blur",
          "frequency.blur_sigma_max": 3.0,
          "diffusion.target": "x0",
        },
        "band": {"diffusion.process": "band"},
      }
    ),
  )
