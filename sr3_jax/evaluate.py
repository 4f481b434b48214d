"""`sr3 eval`: SR3's metrics on a held-out split for one SR3 sample, the mean of K, and bicubic.

Each image's LR input is made from its HR crop on device (the training degradation); the model
samples K super-resolutions with its EMA params; PSNR, SSIM and consistency (all on [0, 1]) and,
with `metrics` naming it, LPIPS against the HR image (sr3_jax/metrics/lpips.py, from local weights)
are reported as the mean over images with a 95% bootstrap interval. PSNR and SSIM may be taken on
the Y channel and with a border cropped (`y_channel`, `crop_border`).
"""

from __future__ import annotations

import functools
import json
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from tqdm import tqdm

from sr3_jax import checkpoint, configs, images, inference, metrics
from sr3_jax.data import degrade, loader
from sr3_jax.metrics import fid, inception_score, lpips, resnet, weights

METHODS = ("sr3_sample", "sr3_mean", "bicubic")
METRICS = ("psnr", "ssim", "consistency")
OPTIONAL = ("lpips", "accuracy")  # computed when asked for: they need weight files
SET_METRICS = ("fid", "is")  # statistics of the whole set: no per-image values, no interval
PER_IMAGE = {"accuracy": ("top1", "top5")}  # a metric reported as several per-image values


def parse_metrics(spec: str | None) -> tuple[str, ...]:
  """'psnr,ssim,lpips' → the metrics to report (the three of SR3 always)."""
  asked = [m.strip() for m in (spec or "").split(",") if m.strip()]
  for m in asked:
    if m not in METRICS + OPTIONAL + SET_METRICS:
      raise ValueError(f"--metrics {m}: unknown; choose from {METRICS + OPTIONAL + SET_METRICS}")
  return METRICS + tuple(m for m in OPTIONAL + SET_METRICS if m in asked)


def bootstrap_ci(values: np.ndarray, seed: int = 0, draws: int = 2000) -> tuple[float, float]:
  """95% percentile-bootstrap interval of the mean over images."""
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return float(values.mean()), float(values.mean())
  rng = np.random.default_rng(seed)
  means = values[rng.integers(0, len(values), (draws, len(values)))].mean(axis=1)
  return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def score(
  config,
  model,
  params,
  dcfg,
  split: str,
  num_images: int,
  samples: int,
  steps: int,
  seed: int = 0,
  log=None,
  desc: str = "eval",
  metric_names: tuple[str, ...] = METRICS,
  y_channel: bool = False,
  crop_border: int = 0,
  lpips_weights: str | None = None,
  collect: dict[str, list] | None = None,
  resnet_weights: str | None = None,
  timing: dict | None = None,
) -> tuple[dict[str, dict[str, list[float]]], int]:
  """Per-image PSNR / SSIM / consistency (and LPIPS, ResNet-50 top-1/top-5 when asked) of one SR3
  sample, the mean of `samples`, and bicubic, on the first `num_images` central crops of `split`:
  ({method: {metric: [values]}}, images). With accuracy, the HR images' own top-1/top-5 are
  under the method "hr". `timing` receives the median sampler seconds per image over the calls
  after the first (which compiles)."""
  factor = dcfg.factor
  lpips_fn = lpips.LPIPS("alex", lpips_weights) if "lpips" in metric_names else None
  classify = resnet.Classifier(resnet_weights) if "accuracy" in metric_names else None
  sr_fn = inference.make_super_resolve(config, model)
  gammas = inference.inference_grid(config, steps)
  ds = loader.make_dataset(dcfg, split, 1, seed=0, train=False, process_index=0, process_count=1)
  names = [n for k in metric_names if k not in SET_METRICS for n in PER_IMAGE.get(k, (k,))]
  per_image: dict[str, dict[str, list[float]]] = {m: {k: [] for k in names} for m in METHODS}
  if classify is not None:
    per_image["hr"] = {"top1": [], "top5": []}
  n, seconds = 0, []
  for batch in tqdm(ds, total=num_images, desc=desc, file=log or sys.stderr):
    if n >= num_images:
      break
    hr = jnp.asarray(batch["hr"])
    lr = degrade.downsample(hr, factor, value_range=(-1.0, 1.0))
    bicubic = degrade.upsample(lr, factor, value_range=(-1.0, 1.0))
    t = time.perf_counter()
    sr = jax.block_until_ready(
      sr_fn(
        params, jnp.repeat(lr, samples, axis=0), gammas, jax.random.fold_in(jax.random.key(seed), n)
      )
    )
    if n:  # the first call compiles
      seconds.append((time.perf_counter() - t) / samples)
    to01 = lambda x: (x + 1.0) / 2.0
    outs = {"sr3_sample": sr[:1], "sr3_mean": sr.mean(axis=0, keepdims=True), "bicubic": bicubic}
    if collect is not None:  # 8-bit images for set statistics (FID), HR included
      for method, img in dict(outs, hr=hr).items():
        collect.setdefault(method, []).append(images.to_uint8(np.asarray(img[0])))
    for method, img in outs.items():
      scores = metrics.sr_scores(to01(img), to01(hr), to01(lr), factor, y_channel, crop_border)
      if lpips_fn is not None:
        scores["lpips"] = lpips_fn(np.clip(to01(np.asarray(img)), 0, 1), to01(np.asarray(hr)))
      for k, v in scores.items():
        per_image[method][k].append(float(v[0]))
    if classify is not None:
      if "label" not in batch:
        raise ValueError("--metrics accuracy needs class labels: set --label-key (e.g. label)")
      label = np.asarray(batch["label"])[:1]
      for method, img in dict(outs, hr=hr).items():
        logits = classify([images.to_uint8(np.asarray(img[0]))])
        for k in (1, 5):
          per_image[method][f"top{k}"].append(float(resnet.correct(logits, label, k)[0]))
    n += 1
  if n == 0:
    raise ValueError(
      f"dataset {dcfg.dataset!r} split {split!r} gave no images of at least "
      f"{dcfg.image_size}×{dcfg.image_size}"
    )
  if timing is not None and seconds:
    timing["sampler_seconds_per_image"] = float(np.median(seconds))
  return per_image, n


def summarize(per_image: dict, seed: int = 0) -> dict:
  """{method: {metric: {mean, ci95}}} with 95% bootstrap intervals over images."""
  return {
    m: {
      k: {"mean": float(np.mean(v)), "ci95": list(bootstrap_ci(v, seed))}
      for k, v in per_image[m].items()
    }
    for m in per_image
  }


@functools.lru_cache(maxsize=2)
def _inception(path: str | None) -> fid.Inception:
  """One feature network per process (its weights are read and its program compiled once)."""
  return fid.Inception(path)


def set_fid(collected: dict, reference_stats: str | None, path: str | None, log=None) -> dict:
  """FID of each method's outputs against `reference_stats` (an .npz of `sr3 fid --save-stats`)
  or, without it, against the HR crops of the same images. A statistic of the whole set: it has
  no per-image values and no bootstrap interval here, and over fewer than 2,049 images it is
  biased upwards (compare it only at one image count)."""
  model = _inception(path)
  if reference_stats:
    mu_r, cov_r, n_r = fid.load_stats(reference_stats)
  else:
    ref = fid.statistics_of(collected["hr"], model)
    (mu_r, cov_r), n_r = ref.mean_cov(), ref.n
  out = {"reference": reference_stats or "hr", "n_reference": n_r}
  for m in [k for k in collected if k != "hr"]:
    s = fid.statistics_of(collected[m], model)
    out[m] = fid.frechet_distance(*s.mean_cov(), mu_r, cov_r)
    out["n"] = s.n
  return out


@functools.lru_cache(maxsize=2)
def _is_network(path: str | None) -> inception_score.Classifier:
  return inception_score.Classifier(path)


def set_is(collected: dict, path: str | None, splits: int = 10) -> dict:
  """Inception Score of each method's outputs and of the HR crops, over min(splits, images)
  consecutive parts. A set statistic like FID: no per-image values, no bootstrap interval."""
  model = _is_network(path)
  out = {m: inception_score.score_images(collected[m], model, splits) for m in collected}
  out["n"], out["splits"] = out["hr"]["n"], out["hr"]["splits"]
  return out


def eval_data(config, dataset: str | None) -> tuple[ml_collections.ConfigDict, str]:
  """The data block and split for NAME[:split] (default: the run's held-out data and eval split)."""
  name, _, split = (dataset or "").partition(":")
  return loader.eval_block(config.data, name), split or config.data.eval_split


def evaluate(
  checkpoint_path: str,
  dataset: str | None = None,
  num_images: int = 16,
  samples: int = 4,
  steps: int | None = None,
  sampler: str | None = None,
  seed: int = 0,
  output: str | None = None,
  log=None,
  image_size: int | None = None,
  metric_names: tuple[str, ...] = METRICS,
  y_channel: bool = False,
  crop_border: int = 0,
  lpips_weights: str | None = None,
  reference_stats: str | None = None,
  fid_weights: str | None = None,
  is_weights: str | None = None,
  resnet_weights: str | None = None,
  label_key: str | None = None,
  overrides: dict | None = None,
) -> dict:
  """`image_size` evaluates central crops of that size instead of the training size (the U-Net is
  convolutional); it must be a multiple of data.factor · 2^(levels − 1). Accuracy reads class
  labels from `label_key` (default: data.label_key; imagenet2012's is "label")."""
  log = log or sys.stderr
  for metric, key, path in (
    ("lpips", "lpips-alex", lpips_weights),
    ("fid", "fid-inception", fid_weights),
    ("is", "is-inception", is_weights),
    ("accuracy", "resnet50", resnet_weights),
  ):
    if metric in metric_names:
      weights.locate(key, path)  # a missing file stops here, before sampling
  config, model, params, step = checkpoint.load_for_inference(checkpoint_path)
  configs.apply_sampling_overrides(config, overrides, "eval")
  if config.model.conditioning == "none":
    return evaluate_base(
      checkpoint_path, config, model, params, step, dataset, num_images, steps, sampler, seed,
      output, log, metric_names, reference_stats, fid_weights, is_weights,
    )  # fmt: skip
  dcfg, split = eval_data(config, dataset)
  if "accuracy" in metric_names:
    dcfg.label_key = (
      label_key or dcfg.get("label_key") or ("label" if dcfg.dataset == "imagenet2012" else "")
    )
    if not dcfg.label_key:
      raise ValueError(
        f"--metrics accuracy needs ImageNet class labels, and {dcfg.dataset!r} is read without "
        "any: pass --label-key NAME (the records' label field; imagenet2012's is 'label')"
      )
  if image_size:
    down = dcfg.factor * 2 ** (len(config.model.channel_mult) - 1)
    if image_size % down:
      raise ValueError(
        f"--image-size {image_size} must be a multiple of {down} (factor × U-Net downsampling)"
      )
    dcfg.image_size = image_size
  if sampler:
    config.sampling.sampler = sampler
  steps = steps or config.sampling.steps
  collected = {} if set(SET_METRICS) & set(metric_names) else None
  timing: dict = {}
  per_image, n = score(
    config, model, params, dcfg, split, num_images, samples, steps, seed, log,
    metric_names=metric_names, y_channel=y_channel, crop_border=crop_border,
    lpips_weights=lpips_weights, collect=collected, resnet_weights=resnet_weights, timing=timing,
  )  # fmt: skip
  fid_result = (
    set_fid(collected, reference_stats, fid_weights, log) if "fid" in metric_names else None
  )
  is_result = set_is(collected, is_weights) if "is" in metric_names else None
  result = {
    "checkpoint": str(checkpoint_path),
    "step": step,
    "dataset": dcfg.dataset,
    "split": split,
    "num_images": n,
    "samples": samples,
    "steps": steps,
    "sampler": config.sampling.sampler,
    "image_size": dcfg.image_size,
    "factor": dcfg.factor,
    "y_channel": y_channel,
    "crop_border": crop_border,
    "metrics": summarize(per_image, seed),
    **timing,
    **({"overrides": overrides} if overrides else {}),
    **({"fid": fid_result} if fid_result else {}),
    **({"is": is_result} if is_result else {}),
    "per_image": per_image,
  }
  out_dir = epath.Path(output) if output else checkpoint.resolve_checkpoint(checkpoint_path)[0]
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / "eval.json").write_text(json.dumps(result, indent=2))
  (out_dir / "eval.md").write_text(markdown_table(result))
  print(markdown_table(result), file=log)
  return result


def evaluate_base(
  checkpoint_path, config, model, params, step, dataset, num_images, steps, sampler, seed, output,
  log, metric_names, reference_stats, fid_weights, is_weights,
) -> dict:  # fmt: skip
  """A base stage (no LR input) is scored as a generator: FID and IS of `num_images` samples,
  FID against `reference_stats` or else the same number of held-out images (whose class labels a
  class-conditional model samples with)."""
  asked = tuple(m for m in metric_names if m in SET_METRICS)
  if not asked:
    raise ValueError(
      f"{checkpoint_path} is a base stage (no LR input): it is scored by FID and IS, not by "
      "PSNR/SSIM; pass --metrics fid,is"
    )
  dcfg, split = eval_data(config, dataset)
  if config.model.num_classes:
    dcfg.label_key = dcfg.get("label_key") or "label"
  if sampler:
    config.sampling.sampler = sampler
  steps = steps or config.sampling.steps
  generate = inference.make_generate(config, model)
  gammas = inference.inference_grid(config, steps)
  ds = loader.make_dataset(dcfg, split, 1, seed=0, train=False, process_index=0, process_count=1)
  collected: dict[str, list] = {"sample": [], "hr": []}
  labels = []
  for batch in tqdm(ds, total=num_images, desc="eval base", file=log or sys.stderr):
    if len(collected["hr"]) >= num_images:
      break
    collected["hr"].append(images.to_uint8(np.asarray(batch["hr"][0])))
    labels.append(int(batch["label"][0]) if "label" in batch else 0)
  if not collected["hr"]:
    raise ValueError(f"dataset {dcfg.dataset!r} split {split!r} gave no images")
  chunk = 8
  for i in range(0, len(labels), chunk):
    lab = jnp.asarray(labels[i : i + chunk], jnp.int32)
    out = generate(params, lab, gammas, jax.random.fold_in(jax.random.key(seed), i))
    collected["sample"] += [images.to_uint8(x) for x in np.asarray(out)]
  result = {
    "checkpoint": str(checkpoint_path),
    "step": step,
    "base": True,
    "dataset": dcfg.dataset,
    "split": split,
    "num_images": len(labels),
    "steps": steps,
    "sampler": config.sampling.sampler,
    "image_size": dcfg.image_size,
    "methods": ["sample"],
    "metrics": {},
  }
  if "fid" in asked:
    result["fid"] = set_fid(collected, reference_stats, fid_weights, log)
  if "is" in asked:
    result["is"] = set_is(collected, is_weights)
  out_dir = epath.Path(output) if output else checkpoint.resolve_checkpoint(checkpoint_path)[0]
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / "eval.json").write_text(json.dumps(result, indent=2))
  (out_dir / "eval.md").write_text(markdown_table(result))
  print(markdown_table(result), file=log or sys.stderr)
  return result


def markdown_table(result: dict) -> str:
  """Every reported metric per method: mean [95% bootstrap interval]."""
  protocol = (", PSNR/SSIM on Y" if result.get("y_channel") else "") + (
    f", {result['crop_border']}-pixel border cropped" if result.get("crop_border") else ""
  )
  methods = tuple(result.get("methods", METHODS))
  head = (
    f"{result['dataset']}:{result['split']}, {result['num_images']} images, step {result['step']}, "
    f"{result['sampler']} {result['steps']} steps"
    + (", a base stage's samples" if result.get("base") else f", mean of {result['samples']}")
    + protocol
    + (
      f", sampler {result['sampler_seconds_per_image']:.3f} s per image"
      if "sampler_seconds_per_image" in result
      else ""
    )
    + "\n\n"
  )
  if result.get("base"):
    return head + _set_lines(result, methods)
  columns = {
    "psnr": ("PSNR (dB)", 1.0, ".2f"),
    "ssim": ("SSIM", 1.0, ".4f"),
    "consistency": ("consistency (×1e-5)", 1e5, ".2f"),
    "lpips": ("LPIPS (alex)", 1.0, ".4f"),
    "top1": ("ResNet-50 top-1 (%)", 100.0, ".1f"),
    "top5": ("ResNet-50 top-5 (%)", 100.0, ".1f"),
  }
  shown = [k for k in columns if k in result["metrics"][methods[0]]]
  rows = [
    "| method | " + " | ".join(columns[k][0] for k in shown) + " |",
    "|---" * (len(shown) + 1) + "|",
  ]
  for m in methods + (("hr",) if "hr" in result["metrics"] else ()):
    s = result["metrics"][m]
    cell = lambda k: (
      f"{s[k]['mean'] * columns[k][1]:{columns[k][2]}} "
      f"[{s[k]['ci95'][0] * columns[k][1]:{columns[k][2]}}, "
      f"{s[k]['ci95'][1] * columns[k][1]:{columns[k][2]}}]"
    )
    rows.append(f"| {m} | " + " | ".join(cell(k) if k in s else "" for k in shown) + " |")
  table = head + "\n".join(rows) + "\n" + _set_lines(result, methods)
  if "top1" in shown:
    table += "\nResNet-50 accuracy on 224×224 central crops; top-k error = 100 − accuracy.\n"
  return table


def _set_lines(result: dict, methods: tuple[str, ...]) -> str:
  """The set statistics (FID, IS) under the table: they have no per-image values."""
  text = ""
  if result.get("fid"):
    f = result["fid"]
    text += (
      f"\nFID against {f['reference']} ({f['n_reference']} images), over {f['n']} images: "
      + ", ".join(f"{m} {f[m]:.2f}" for m in methods)
      + " (a set statistic: no interval; biased upwards below 2,049 images)\n"
    )
  if result.get("is"):
    i = result["is"]
    text += (
      f"\nInception Score over {i['n']} images ({i['splits']} splits): "
      + ", ".join(f"{m} {i[m]['is']:.2f} ± {i[m]['std']:.2f}" for m in methods + ("hr",))
      + " (a set statistic: no bootstrap interval; ± is the spread over splits)\n"
    )
  return text
