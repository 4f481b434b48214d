"""`sr3 cascade --propagation`: how much of a cascade's error each SR stage inherits from the stage
below it, and how much it adds.

Held-out HR images at the cascade's final size are downsampled (bicubic, anti-aliased: SR3's
degradation) to every stage's input and output size. Every SR stage then runs twice with the same
random numbers: fed the ground truth at its input size, and fed the previous stage's output (the
first SR stage starts from the ground truth either way). Each output is scored against the ground
truth at its own size (PSNR, SSIM) and against the input it was given (consistency); the chained
output is also scored against the first SR stage's input (cascade consistency, ‖D(x) − x_first‖²
with D the degradation by the factor between them). The PSNR a stage loses when fed the cascade's
output instead of the truth is what it inherits. Both runs are made with the stages'
sampling-time conditioning augmentation and without it (aug_level 0).
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Callable

import jax
import numpy as np

from sr3_jax import cascade, configs, evaluate, metrics, paths
from sr3_jax import images as image_io
from sr3_jax.data import degrade, loader


to01 = lambda x: (np.asarray(x, np.float32) + 1.0) / 2.0


def _scores(out: np.ndarray, truth: np.ndarray, given: np.ndarray, factor: int) -> dict:
  return {
    "psnr": float(np.mean(np.asarray(metrics.psnr(to01(out), to01(truth))))),
    "ssim": float(np.mean(np.asarray(metrics.ssim(to01(out), to01(truth))))),
    "consistency": float(np.mean(np.asarray(metrics.consistency(to01(out), to01(given), factor)))),
  }


def perceptual(
  lpips_weights: str | None = None,
  use_lpips: bool = False,
  reference_stats: dict[str, str] | None = None,
  fid_weights: str | None = None,
  log=None,
) -> Callable[[str, np.ndarray, np.ndarray], dict] | None:
  """extra(stage, images, truth) → {"lpips": mean LPIPS (alex) against the truth, or None for a
  stage smaller than the network takes; "fid": FID against the stage's reference statistics (an
  .npz of `sr3 fid --save-stats` at its size), for the stages given}. None when neither is asked."""
  if not use_lpips and not reference_stats:
    return None
  from sr3_jax.metrics import fid, lpips

  lp = lpips.LPIPS("alex", lpips_weights) if use_lpips else None
  inception = fid.Inception(fid_weights) if reference_stats else None
  stats = {n: fid.load_stats(p) for n, p in (reference_stats or {}).items()}

  def extra(name: str, images: np.ndarray, truth: np.ndarray) -> dict:
    out = {}
    if lp is not None:
      small = min(images.shape[1:3]) < lpips.min_size("alex")
      out["lpips"] = None if small else float(np.mean(lp(np.clip(to01(images), 0, 1), to01(truth))))
    if name in stats:
      mu, cov, _ = stats[name]
      got = fid.statistics_of([image_io.to_uint8(x) for x in images], inception)
      fid.warn_if_few(got.n, f"stage {name}", log)
      out["fid"] = float(fid.frechet_distance(*got.mean_cov(), mu, cov))
    return out

  return extra


def measure(
  casc: cascade.Cascade,
  hr: np.ndarray,
  rng,
  augmentation: bool = True,
  extra: Callable[[str, np.ndarray, np.ndarray], dict] | None = None,
) -> dict:
  """{stage: {"fed_truth": scores, "fed_cascade": scores, "inherited_psnr": dB, …}} for the SR
  stages of `casc` on HR images (N, H, W, C) in [−1, 1] at the cascade's final size; `extra`
  (`perceptual`) adds LPIPS and FID to both runs' scores."""
  sr = [i for i, s in enumerate(casc.stages) if not s.is_base]
  if not sr:
    raise ValueError("the cascade has no SR stage: nothing propagates")
  n = hr.shape[0]
  pad = -n % casc.mesh.size
  hr = np.concatenate([hr, np.repeat(hr[-1:], pad, axis=0)]).astype(np.float32)
  below = {}  # stage → the factor from the final size down to the stage's output size
  total = 1
  for i in reversed(sr):
    below[i] = total
    total *= casc.stages[i].factor
  if hr.shape[1] % total or hr.shape[2] % total:
    raise ValueError(
      f"HR images of {hr.shape[2]}×{hr.shape[1]} do not divide by the cascade's total factor "
      f"{total}; use images whose sides are multiples of {total}"
    )

  def at(factor):
    return hr if factor == 1 else np.asarray(degrade.downsample(hr, factor, (-1.0, 1.0)))

  out, carry, carry_z, first_in, grown = {}, None, None, None, 1
  for i in sr:
    s = casc.stages[i]
    key = jax.random.fold_in(rng, i)
    level = None if augmentation else 0.0
    truth_in, truth_out = at(below[i] * s.factor), at(below[i])
    res = casc.super_resolve(i, truth_in, key, None, level)
    truth_z, fed_truth = res if casc.truncates[i] else (None, res)
    fed_truth = np.asarray(fed_truth, np.float32)
    grown *= s.factor
    if carry is None:  # the first SR stage: both runs are one
      chain, chain_z, given, first_in = fed_truth, truth_z, truth_in, truth_in
    else:
      res = casc.super_resolve(i, carry, key, carry_z if augmentation else None, level)
      chain_z, chain = res if casc.truncates[i] else (None, res)
      chain, given = np.asarray(chain, np.float32), carry
    a = _scores(fed_truth[:n], truth_out[:n], truth_in[:n], s.factor)
    b = _scores(chain[:n], truth_out[:n], given[:n], s.factor)
    if extra is not None:
      ea = extra(s.name, fed_truth[:n], truth_out[:n])
      a.update(ea)
      b.update(ea if carry is None else extra(s.name, chain[:n], truth_out[:n]))
    # Cascade-level consistency: the chain's output so far against the first SR stage's input.
    casc_cons = _scores(chain[:n], truth_out[:n], first_in[:n], grown)["consistency"]
    out[s.name] = {
      "size": int(truth_out.shape[1]),
      "fed_truth": a,
      "fed_cascade": b,
      "inherited_psnr": a["psnr"] - b["psnr"],
      "cascade_consistency": casc_cons,
    }
    carry, carry_z = chain, chain_z
  return out


def held_out(ccfg_stage_config, dataset: str | None, num_images: int) -> np.ndarray:
  """The first `num_images` central crops of the final stage's held-out split (or NAME[:split])."""
  dcfg, split = evaluate.eval_data(ccfg_stage_config, dataset)
  ds = loader.make_dataset(dcfg, split, 1, seed=0, train=False, process_index=0, process_count=1)
  out = []
  for batch in ds:
    out.append(np.asarray(batch["hr"])[0])
    if len(out) == num_images:
      break
  if not out:
    raise ValueError(f"dataset {dcfg.dataset!r} split {split!r} gave no images")
  return np.stack(out)


def run(
  config_spec: str,
  output: str,
  dataset: str | None = None,
  num_images: int = 4,
  workdir: str | None = None,
  seed: int = 0,
  log=None,
  lpips: bool = False,
  lpips_weights: str | None = None,
  reference_stats: list[str] | None = None,
  fid_weights: str | None = None,
) -> dict:
  """Loads the cascade's stages, measures propagation with and without augmentation, writes
  propagation.json and propagation.md into `output`. `lpips` adds LPIPS (alex) per output and
  `reference_stats` (['STAGE=FILE.npz', …]) FID for those stages, to both runs."""
  log = log or sys.stderr
  ccfg = configs.load(config_spec)
  if "stages" not in ccfg:
    raise ValueError(f"{config_spec} is not a cascade config (it has no `stages`)")
  stats = cascade.parse_reference_stats(reference_stats, [s.name for s in ccfg.stages])
  if lpips:  # a missing weights file stops here, before anything is sampled
    from sr3_jax.metrics import weights

    weights.locate("lpips-alex", lpips_weights)
  stages = [cascade.stage_from_config(s, workdir or ccfg.get("workdir")) for s in ccfg.stages]
  casc = cascade.Cascade(stages)
  hr = held_out(stages[-1].config, dataset, num_images)
  rng = jax.random.key(seed)
  extra = perceptual(lpips_weights, lpips, stats, fid_weights, log)
  report = {
    "config": config_spec,
    "num_images": int(hr.shape[0]),
    "hr_size": int(hr.shape[1]),
    "with_augmentation": measure(casc, hr, rng, True, extra),
    "without_augmentation": measure(casc, hr, rng, False, extra),
  }
  out = pathlib.Path(paths.resolve(output))
  out.mkdir(parents=True, exist_ok=True)
  (out / "propagation.json").write_text(json.dumps(report, indent=2))
  more = (["lpips"] if lpips else []) + (["fid"] if stats else [])
  head = ["sampling-time augmentation", "stage", "size", "fed", "PSNR", "SSIM", "consistency"]
  head += [{"lpips": "LPIPS", "fid": "FID"}[k] for k in more]
  head += ["cascade consistency", "PSNR inherited"]
  lines = [
    f"# Error propagation: {config_spec} ({report['num_images']} held-out images, {report['hr_size']}²)",
    "",
    "| " + " | ".join(head) + " |",
    "|" + "---|" * len(head),
  ]
  for key, label in (("with_augmentation", "on"), ("without_augmentation", "off")):
    for name, r in report[key].items():
      for fed in ("fed_truth", "fed_cascade"):
        v = r[fed]
        chained = fed == "fed_cascade"
        inh = f"{r['inherited_psnr']:.2f} dB" if chained else ""
        casc = f"{r['cascade_consistency']:.2e}" if chained else ""
        cells = [label, name, r["size"], fed.removeprefix("fed_"), f"{v['psnr']:.2f}"]
        cells += [f"{v['ssim']:.3f}", f"{v['consistency']:.2e}"]
        cells += ["—" if v.get(k) is None else f"{v[k]:.4g}" for k in more]
        lines.append("| " + " | ".join(str(c) for c in cells + [casc, inh]) + " |")
  (out / "propagation.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines), file=log)
  return report
