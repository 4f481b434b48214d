"""Quality against compute of `sr3 upscale --adaptive` and of uniform steps, on held-out crops.

Each held-out photograph's central HR crop is degraded as in training (the LR input), upscaled in
tiles with uniform steps (1, 2, 4, … up to the checkpoint's steps) and adaptively (probes at few
steps, the most uncertain fraction of tiles refined at the checkpoint's steps), and scored by PSNR
and SSIM (and LPIPS with --lpips) against the HR crop. Compute is network evaluations per tile.
With --students DIR (an `sr3 distill` workdir), each uniform row below the checkpoint's steps also
comes from DIR/steps_N, the student distilled for that step count.

  .venv/bin/python benchmarks/adaptive_curve.py --checkpoint students_v/steps_8 --image-size 192 \
    [--students students_v] [--lpips]
"""

import argparse
import json
import os

import jax.numpy as jnp
import numpy as np

from sr3_jax import checkpoint, metrics, upscale
from sr3_jax.data import degrade, loader
from sr3_jax.metrics import lpips as lpips_metric


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--checkpoint", required=True)
  ap.add_argument("--image-size", type=int, default=192)
  ap.add_argument("--num-images", type=int, default=2)
  ap.add_argument("--tile", type=int, default=16)
  ap.add_argument("--overlap", type=int, default=4)
  ap.add_argument("--fractions", default="0.125,0.25,0.5,0.75")
  ap.add_argument("--probe-steps", type=int, default=1)
  ap.add_argument("--output", default=None)
  ap.add_argument("--lpips", action="store_true", help="also LPIPS (alex; needs its weights)")
  ap.add_argument("--students", default=None, help="an sr3 distill workdir (steps_N students)")
  args = ap.parse_args()
  config = checkpoint.load_config(args.checkpoint)
  dcfg = loader.eval_block(config.data)
  dcfg.image_size = args.image_size
  ds = loader.make_dataset(
    dcfg, config.data.eval_split, 1, seed=0, train=False, process_index=0, process_count=1
  )
  hrs = [b["hr"] for _, b in zip(range(args.num_images), ds)]
  f = config.data.factor
  lrs = [np.asarray(degrade.downsample(jnp.asarray(h), f, value_range=(-1.0, 1.0)))[0] for h in hrs]
  lr_u8 = [np.uint8(np.clip(np.round((x + 1) * 127.5), 0, 255)) for x in lrs]
  full = config.sampling.steps
  rows = []
  lpips_fn = lpips_metric.LPIPS("alex") if args.lpips else None

  def score(outs, nfe, kind, **extra):
    to01 = lambda x: (np.asarray(x, np.float64) + 1) / 2
    p = [float(metrics.psnr(to01(o)[None], to01(h))[0]) for o, h in zip(outs, hrs)]
    s = [float(metrics.ssim(to01(o)[None], to01(h))[0]) for o, h in zip(outs, hrs)]
    scores = dict(psnr=float(np.mean(p)), ssim=float(np.mean(s)))
    if lpips_fn is not None:
      d = [float(lpips_fn(np.clip(to01(o)[None], 0, 1), to01(h))[0]) for o, h in zip(outs, hrs)]
      scores["lpips"] = float(np.mean(d))
    rows.append(dict(kind=kind, nfe_per_tile=nfe, **scores, **extra))
    print(json.dumps(rows[-1]), flush=True)

  steps = [1]
  while steps[-1] * 2 <= full:
    steps.append(steps[-1] * 2)
  for n in steps:
    up = upscale.Upscaler(args.checkpoint, steps=n, batch=8, tile=args.tile, overlap=args.overlap)
    score([up(x, i)[0] for i, x in enumerate(lr_u8)], n, "uniform", steps=n)
    own = f"{args.students}/steps_{n}" if args.students else None
    if own and n < full and os.path.isdir(own):
      up = upscale.Upscaler(own, steps=n, batch=8, tile=args.tile, overlap=args.overlap)
      score([up(x, i)[0] for i, x in enumerate(lr_u8)], n, "uniform, own student", steps=n)
  up = upscale.Upscaler(args.checkpoint, batch=8, tile=args.tile, overlap=args.overlap)
  for frac in map(float, args.fractions.split(",")):
    outs, nfe = [], []
    for i, x in enumerate(lr_u8):
      o, info = up.adaptive(x, i, probe_steps=args.probe_steps, probes=2, fraction=frac)
      outs.append(o)
      nfe.append(info["network_evaluations"] / info["tiles"])
    score(outs, float(np.mean(nfe)), "adaptive", fraction=frac, probe_steps=args.probe_steps)
  if args.output:
    with open(args.output, "w") as fh:
      json.dump(rows, fh, indent=2)


if __name__ == "__main__":
  main()
