"""The main job of `make demo`: train on the embedded photographs, super-resolve the held-out ones.

Trains experiments/configs/demo.py with `train.train_and_evaluate` in OUTPUT/run (random HR crops
of the training split through the Grain loader, LR made on device; a rerun resumes),
then for each held-out photograph super-resolves a central crop K times with the EMA params and
writes a grid PNG (LR | bicubic | SR3 sample | mean of K | per-pixel std of the K samples | HR)
and metrics.json, comparing SR3 with bicubic upsampling.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from sr3_jax import configs, images, inference, metrics, paths, train
from sr3_jax.data import degrade, embedded, loader
from sr3_jax.metrics import lpips, weights
from sr3_jax.models import unet


def evaluate(config, model, params, out_dir: pathlib.Path, log=sys.stderr) -> dict:
  """Super-resolves the held-out photographs; returns the metrics and writes the grids."""
  factor = config.data.factor
  k = config.eval.samples
  size = config.eval.crop - config.eval.crop % (factor * 2 ** (len(config.model.channel_mult) - 1))
  gammas = inference.inference_grid(config)
  sr_fn = inference.make_super_resolve(config, model)  # convolutional: the same params at any size
  try:  # LPIPS joins the table when its weights are on this machine (never downloaded)
    weights.locate("lpips-alex")
    lpips_fn = lpips.LPIPS("alex")
  except (FileNotFoundError, ValueError) as e:
    lpips_fn = None
    print(f"LPIPS left out: {e}", file=log)
  results = {}
  for idx, (name, photo) in enumerate(embedded.load_split("test").items()):
    hr = images.to_model_range(loader.center_crop(photo, size))[None]  # (1, S, S, 3) in [−1, 1]
    lr = degrade.downsample(jnp.asarray(hr), factor, value_range=(-1.0, 1.0))
    bicubic = np.asarray(degrade.upsample(lr, factor, value_range=(-1.0, 1.0)))
    samples = np.asarray(
      sr_fn(
        params,
        jnp.repeat(lr, k, axis=0),
        gammas,
        jax.random.fold_in(jax.random.key(config.seed + 1), idx),
      )
    )
    mean = samples.mean(axis=0, keepdims=True)
    std = samples.std(axis=0).mean(axis=-1)  # where the LR input leaves the detail open
    to01 = lambda x: (np.asarray(x) + 1.0) / 2.0
    row = {}
    for label, img in (("bicubic", bicubic), ("sr3_sample", samples[:1]), ("sr3_mean", mean)):
      row[label] = {
        k: float(v[0]) for k, v in metrics.sr_scores(to01(img), to01(hr), to01(lr), factor).items()
      }
      if lpips_fn is not None:
        row[label]["lpips"] = float(lpips_fn(np.clip(to01(img), 0, 1), to01(hr))[0])
    results[name] = row
    lr_big = np.asarray(Image.fromarray(images.to_uint8(lr[0])).resize((size, size), Image.NEAREST))
    panels = (
      [lr_big]
      + [images.to_uint8(x[0]) for x in (bicubic, samples[:1], mean)]
      + [images.heat_map(std), images.to_uint8(hr[0])]
    )
    Image.fromarray(images.grid(panels)).save(out_dir / f"{name}.png")
    # One folder per method, same file names: what `sr3 study make` pairs for raters.
    for label, img in (
      ("hr", hr),
      ("lr", lr),
      ("bicubic", bicubic),
      ("sr3_sample", samples[:1]),
      ("sr3_mean", mean),
    ):
      (out_dir / "images" / label).mkdir(parents=True, exist_ok=True)
      images.save_png(
        out_dir / "images" / label / f"{name}.png", images.to_uint8(np.asarray(img[0]))
      )
    print(
      f"{name}: bicubic {row['bicubic']['psnr']:.2f} dB | SR3 sample {row['sr3_sample']['psnr']:.2f} dB"
      f" | SR3 mean of {k} {row['sr3_mean']['psnr']:.2f} dB",
      file=log,
    )
  return results


def run(output: str, steps: int = 0, runlocal: bool = False, log=sys.stderr) -> pathlib.Path:
  arg = ",".join(
    a for a in ("runlocal" if runlocal else "", f"steps={steps}" if steps else "") if a
  )
  config = configs.load("experiments/configs/demo.py" + (f":{arg}" if arg else ""))
  out_dir = pathlib.Path(paths.resolve(output))  # relative or ~ as typed
  out_dir.mkdir(parents=True, exist_ok=True)
  print(
    f"devices: {jax.devices()}; training {config.train.num_steps} steps at batch "
    f"{config.train.batch_size}",
    file=log,
  )
  t0 = time.perf_counter()
  # The ordinary training loop, in demo_out/run: a rerun resumes (or skips training if it is done).
  state = train.train_and_evaluate(config, out_dir / "run", log)
  train_s = time.perf_counter() - t0
  rows = [json.loads(l) for l in (out_dir / "run" / "metrics.jsonl").read_text().splitlines()]
  per_step = float(
    np.median([r["step_time_s"] for r in rows if "step_time_s" in r][1:] or [np.nan])
  )
  results = evaluate(config, unet.build(config.model), state.ema_params, out_dir, log)
  summary = {
    "config": "experiments/configs/demo.py",
    "train_steps": config.train.num_steps,
    "train_seconds": train_s,
    "seconds_per_step": per_step,
    "params": unet.count_params(config.model),
    "photos": results,
  }
  (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
  names = list(results)
  has_lpips = all("lpips" in results[n]["bicubic"] for n in names)
  extra = " bicubic LPIPS | SR3 sample LPIPS | SR3 mean LPIPS |" if has_lpips else ""
  print(
    "\n| photo | bicubic PSNR | SR3 sample PSNR | SR3 mean PSNR | bicubic consistency | "
    "SR3 mean consistency |" + extra,
    file=log,
  )
  print("|---" * (9 if has_lpips else 6) + "|", file=log)
  for n in names:
    r = results[n]
    cells = (
      f" {r['bicubic']['lpips']:.4f} | {r['sr3_sample']['lpips']:.4f} | {r['sr3_mean']['lpips']:.4f} |"
      if has_lpips
      else ""
    )
    print(
      f"| {n} | {r['bicubic']['psnr']:.2f} | {r['sr3_sample']['psnr']:.2f} | {r['sr3_mean']['psnr']:.2f}"
      f" | {r['bicubic']['consistency']:.2e} | {r['sr3_mean']['consistency']:.2e} |" + cells,
      file=log,
    )
  return out_dir
