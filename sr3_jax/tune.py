"""`sr3 tune-schedule`: rank candidate inference schedules of a trained checkpoint on held-out images.

SR3 picked its 100-step inference schedule by search; this scores every candidate (schedule
family, number of steps, β range, sampler) with the metrics of `sr3 eval` on the same held-out
crops and seeds, and writes the ranked table (`tune.json`, `tune.md`).

A grid is a file defining `get_grid()` → list of candidate dicts, or an inline product
"family=linear,cosine;steps=25,50;end=0.05,0.2;sampler=ddpm,ddim". Candidate keys: `family`
(a β grid — linear, quadratic, warmup_linear, cosine — or a log-SNR one: logsnr_cosine,
logsnr_sigmoid), `steps`, `start`/`end` (the β range; ignored by log-SNR families), `sampler`.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import sys

from etils import epath

from sr3_jax import evaluate
from sr3_jax.checkpoint import load_for_inference, resolve_checkpoint

BETA_FAMILIES = ("linear", "quadratic", "warmup_linear", "cosine")
LOGSNR_FAMILIES = {"logsnr_cosine": "cosine", "logsnr_sigmoid": "sigmoid"}
METRICS = {  # metric → (method it is read from, higher is better)
  "psnr": ("sr3_mean", True),
  "ssim": ("sr3_mean", True),
  "consistency": ("sr3_sample", False),
  "sample_psnr": ("sr3_sample", True),
  "lpips": ("sr3_sample", False),  # needs the lpips-alex weights
  "fid": ("sr3_sample", False),  # one sample per image against the HR crops; needs fid-inception
}


def _value(text: str):
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


def parse_grid(spec: str) -> list[dict]:
  """A grid file (get_grid()) or an inline product "key=v1,v2;key=v3" → candidate dicts."""
  if spec.endswith(".py"):
    path = epath.Path(spec)
    if not path.exists():
      raise FileNotFoundError(f"--grid {spec} not found")
    module_spec = importlib.util.spec_from_file_location("sr3_tune_grid", str(path))
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return [dict(c) for c in module.get_grid()]
  axes = {}
  for part in filter(None, (p.strip() for p in spec.split(";"))):
    key, eq, values = part.partition("=")
    if not eq or not values:
      raise ValueError(f"--grid part {part!r} is not key=v1,v2")
    axes[key.strip()] = [_value(v.strip()) for v in values.split(",")]
  unknown = set(axes) - {"family", "steps", "start", "end", "sampler"}
  if unknown:
    raise ValueError(
      f"--grid keys {sorted(unknown)} unknown; use family, steps, start, end, sampler"
    )
  return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def apply_candidate(config, cand: dict):
  """A copy of `config` whose sampling block follows the candidate; also its canonical form."""
  c = copy.deepcopy(config)
  s = c.sampling
  family = cand.get("family")
  if family in LOGSNR_FAMILIES:
    s.schedule.update(dict(kind="logsnr", name=LOGSNR_FAMILIES[family]))
  elif family in BETA_FAMILIES:
    s.schedule.update(dict(kind="beta", name=family))
  elif family is not None:
    raise ValueError(f"family={family!r}; choose one of {BETA_FAMILIES + tuple(LOGSNR_FAMILIES)}")
  if s.schedule.kind == "beta":
    for key in ("start", "end"):
      if key in cand:
        s.schedule[key] = float(cand[key])
  if "steps" in cand:
    s.steps = s.schedule.num_steps = int(cand["steps"])
  if "sampler" in cand:
    s.sampler = cand["sampler"]
  canonical = {"family": family or s.schedule.name, "steps": int(s.steps), "sampler": s.sampler}
  if s.schedule.kind == "beta" and s.schedule.name != "cosine":  # the cosine β grid has no range
    canonical.update(start=float(s.schedule.start), end=float(s.schedule.end))
  return c, canonical


def tune(
  checkpoint: str,
  grid: str,
  dataset: str | None = None,
  num_images: int = 8,
  samples: int = 4,
  metric: str = "psnr",
  seed: int = 0,
  output: str | None = None,
  log=None,
) -> list[dict]:
  """Scores every candidate on the same images and seeds; returns the rows ranked best first."""
  log = log or sys.stderr
  if metric not in METRICS:
    raise ValueError(f"--metric {metric!r}; choose one of {sorted(METRICS)}")
  candidates = parse_grid(grid)
  if not candidates:
    raise ValueError(f"--grid {grid!r} holds no candidates")
  config, model, params, step = load_for_inference(checkpoint)
  dcfg, split = evaluate.eval_data(config, dataset)
  rows, seen = [], set()
  for i, cand in enumerate(candidates):
    c, canonical = apply_candidate(config, cand)
    key = json.dumps(canonical, sort_keys=True)
    if key in seen:  # e.g. β ranges of a log-SNR family
      continue
    seen.add(key)
    collected = {} if metric == "fid" else None
    per_image, n = evaluate.score(
      c,
      model,
      params,
      dcfg,
      split,
      num_images,
      samples,
      c.sampling.steps,
      seed,
      log,
      desc=f"candidate {i + 1}/{len(candidates)}",
      metric_names=evaluate.parse_metrics(metric if metric in ("lpips", "fid") else None),
      collect=collected,
    )
    summary = evaluate.summarize(per_image, seed)
    extra = {}
    if metric == "lpips":
      extra["lpips"] = summary["sr3_sample"]["lpips"]["mean"]
    if metric == "fid":
      extra["fid"] = evaluate.set_fid(collected, None, None, log)["sr3_sample"]
    rows.append(
      dict(
        canonical,
        psnr=summary["sr3_mean"]["psnr"]["mean"],
        ssim=summary["sr3_mean"]["ssim"]["mean"],
        sample_psnr=summary["sr3_sample"]["psnr"]["mean"],
        consistency=summary["sr3_sample"]["consistency"]["mean"],
        bicubic_psnr=summary["bicubic"]["psnr"]["mean"],
        num_images=n,
        **extra,
      )
    )
  _, higher = METRICS[metric]
  rows.sort(key=lambda r: -r[metric] if higher else r[metric])
  out = epath.Path(output) if output else resolve_checkpoint(checkpoint)[0]
  out.mkdir(parents=True, exist_ok=True)
  result = {
    "checkpoint": str(checkpoint),
    "step": step,
    "dataset": dcfg.dataset,
    "split": split,
    "metric": metric,
    "samples": samples,
    "seed": seed,
    "ranked": rows,
  }
  (out / "tune.json").write_text(json.dumps(result, indent=2))
  (out / "tune.md").write_text(table(rows, metric))
  print(table(rows, metric), file=log)
  return rows


def table(rows: list[dict], metric: str) -> str:
  extra = metric if metric in ("lpips", "fid") else None
  head = [
    "| rank | family | steps | β range | sampler | PSNR mean-of-K | SSIM | sample PSNR | consistency (×1e-5) |"
    + (f" {extra.upper()} (one sample) |" if extra else ""),
    "|---" * (10 if extra else 9) + "|",
  ]
  lines = [
    f"| {i + 1} | {r['family']} | {r['steps']} | "
    + (f"{r['start']:g}–{r['end']:g}" if "start" in r else "—")
    + f" | {r['sampler']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['sample_psnr']:.2f} | "
    f"{r['consistency'] * 1e5:.2f} |" + (f" {r[extra]:.4f} |" if extra else "")
    for i, r in enumerate(rows)
  ]
  return f"ranked by {metric}\n\n" + "\n".join(head + lines) + "\n"
