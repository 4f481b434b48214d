"""`sr3 study analyze`: what the raters of a 2AFC study said, with intervals.

- fool rate per method (SR3's number: how often a method's output was taken for the real photo)
  with Wilson 95% intervals;
- Bradley–Terry strengths of the real images and every method from all their pairwise choices,
  with 95% bootstrap intervals over raters;
- agreement between raters (Krippendorff's alpha, nominal, over pairs seen by several raters);
- per rater: answers, median response time, attention checks passed, share of "left" answers;
- the Spearman and Kendall correlation of each automatic metric with how often people picked a
  method's image over the real one, per (method, image), and Kendall's tau within each image (do
  metric and people order the methods alike), with bootstrap intervals over images.

Writes analysis.json, analysis.md and three plots into the study folder (or --output).
"""

from __future__ import annotations

import json
import math
import pathlib
from collections import defaultdict

import numpy as np

from sr3_jax.study import make, responses, stats

# Which way is better, per metric: +1 higher is better, −1 lower is better.
DIRECTION = {"psnr": 1, "ssim": 1, "lpips": -1, "niqe": -1, "consistency": -1}


def _rater_table(study: dict, recs: list[dict]) -> dict:
  table = {}
  by_rater = defaultdict(list)
  for r in recs:
    by_rater[r["rater"]].append(r)
  for rater, trials in study["raters"].items():
    mine = by_rater.get(rater, [])
    checks = [r for r in mine if r["kind"] == "check"]
    passed = sum(r["choice"] == make.REAL for r in checks)
    table[rater] = {
      "answers": len(mine),
      "trials": len(trials),
      "median_rt_ms": float(np.median([r["rt_ms"] for r in mine])) if mine else None,
      "checks": len(checks),
      "checks_passed": passed,
      "check_accuracy": passed / len(checks) if checks else None,
      "left_share": float(np.mean([r["choice"] == r["left"] for r in mine])) if mine else None,
    }
  return table


def _fit(conds: list[str], recs: list[dict], alpha: float) -> np.ndarray:
  index = {c: i for i, c in enumerate(conds)}
  pairs = []
  for r in recs:
    loser = r["right"] if r["choice"] == r["left"] else r["left"]
    pairs.append((index[r["choice"]], index[loser]))
  return stats.bradley_terry(len(conds), pairs, alpha=alpha)


def image_metrics(
  folder: pathlib.Path, study: dict, names: list[str], lpips_weights=None, niqe_params=None
) -> dict:
  """{metric: {method: {name: value}}}: PSNR and SSIM of each method's image against the real
  one, LPIPS (AlexNet) when its weights are on this machine, and the no-reference NIQE when its
  model is and the images are larger than 192×192."""
  from sr3_jax import images, metrics

  def read(cond, name):
    return images.load_image(folder / make.image_path(cond, name)).rgb.astype(np.float32) / 255.0

  out = {"psnr": {}, "ssim": {}}
  lp = None
  try:
    from sr3_jax.metrics import lpips

    lp = lpips.LPIPS("alex", lpips_weights)
    out["lpips"] = {}
  except (FileNotFoundError, ValueError):
    if lpips_weights:
      raise
  from sr3_jax.metrics import niqe

  sides = [min(read(make.REAL, n).shape[:2]) for n in names]
  if names and min(sides) >= niqe.MIN_SIDE:
    try:
      niqe.load_model(niqe_params)
      out["niqe"] = {}
    except (FileNotFoundError, ValueError):
      if niqe_params:
        raise
  for m in study["methods"]:
    for k in out:
      out[k][m] = {}
    for name in names:
      x, y = read(m, name)[None], read(make.REAL, name)[None]
      out["psnr"][m][name] = float(np.asarray(metrics.psnr(x, y))[0])
      out["ssim"][m][name] = float(np.asarray(metrics.ssim(x, y))[0])
      if lp is not None:
        out["lpips"][m][name] = float(lp(x, y)[0])
      if "niqe" in out:  # no reference: the method's image alone
        out["niqe"][m][name] = niqe.niqe(np.round(x[0] * 255.0), niqe_params)
  return out


def _correlations(points: list[tuple[str, str, float, float]], n_boot: int, seed: int) -> dict:
  """Spearman and Kendall of (metric, human) over (method, image, metric, human) points, with
  intervals from resampling images."""
  from scipy import stats as sps

  def within(groups):
    """Kendall's tau between metric and people over the methods of one image, averaged over
    images: whether the metric orders methods as people do, free of differences between images."""
    taus = []
    for g in groups:
      x, y = np.array([p[2] for p in g]), np.array([p[3] for p in g])
      if len(g) >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0:
        taus.append(sps.kendalltau(x, y).statistic)
    return float(np.mean(taus)) if taus else np.nan

  def both(pts):
    x = np.array([p[2] for p in pts])
    y = np.array([p[3] for p in pts])
    if len(pts) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
      raise ValueError("too few distinct points")
    by = defaultdict(list)
    for p in pts:
      by[p[1]].append(p)
    return np.array(
      [sps.spearmanr(x, y).statistic, sps.kendalltau(x, y).statistic, within(by.values())]
    )

  try:
    point = both(points)
  except ValueError:
    return {"n": len(points), "spearman": None, "kendall": None, "kendall_within_image": None}
  by_image = defaultdict(list)
  for p in points:
    by_image[p[1]].append(p)
  groups = list(by_image.values())
  boot = stats.bootstrap(groups, lambda gs: both([p for g in gs for p in g]), n_boot, seed)
  lo, hi = stats.percentile_interval(boot)
  names = ("spearman", "kendall", "kendall_within_image")
  return {"n": len(points)} | {
    k: {"value": float(point[i]), "ci95": [float(lo[i]), float(hi[i])]} for i, k in enumerate(names)
  }


def analyze(
  folder,
  output=None,
  n_boot: int = 1000,
  seed: int = 0,
  min_check_accuracy: float = 0.0,
  metrics: bool = True,
  metrics_file=None,
  lpips_weights=None,
  niqe_params=None,
) -> dict:
  folder = pathlib.Path(folder)
  out_dir = pathlib.Path(output) if output else folder
  study = make.load(folder)
  recs, malformed = responses.read(folder / responses.FILE)
  trials = {r: {t["id"]: t for t in ts} for r, ts in study["raters"].items()}
  known = [r for r in recs if r["trial"] in trials.get(r["rater"], {})]
  unknown = len(recs) - len(known)
  raters = _rater_table(study, known)
  excluded = [
    r
    for r, row in raters.items()
    if row["check_accuracy"] is not None and row["check_accuracy"] < min_check_accuracy
  ]
  used = [r for r in known if r["rater"] not in excluded]
  pairs = [r for r in used if r["kind"] in ("fool", "method")]
  if not pairs:
    raise make.StudyError(
      f"{folder / responses.FILE}: no usable answers yet ({len(recs)} read, {malformed} malformed, "
      f"{len(excluded)} raters excluded); serve the study with sr3 study serve"
    )

  fool = {}
  for m in study["methods"]:
    mine = [r for r in used if r["kind"] == "fool" and m in (r["left"], r["right"])]
    k = sum(r["choice"] == m for r in mine)
    lo, hi = stats.wilson(k, len(mine))
    fool[m] = {"chosen": k, "n": len(mine), "rate": k / len(mine) if mine else None}
    fool[m]["ci95"] = [lo, hi]

  conds = [make.REAL, *study["methods"]]
  index = {c: i for i, c in enumerate(conds)}
  wins = stats.win_matrix(
    len(conds),
    [
      (index[r["choice"]], index[r["left"] if r["choice"] == r["right"] else r["right"]])
      for r in pairs
    ],
  )
  alpha = 0.0 if stats.strongly_connected(wins) else 0.1
  theta = _fit(conds, pairs, alpha)
  by_rater = defaultdict(list)
  for r in pairs:
    by_rater[r["rater"]].append(r)
  groups = list(by_rater.values())
  boot = stats.bootstrap(
    groups, lambda gs: _fit(conds, [r for g in gs for r in g], alpha), n_boot, seed
  )
  lo, hi = stats.percentile_interval(boot)
  failed = int(np.isnan(boot[:, 0]).sum())
  strengths = {
    c: {"theta": float(theta[i]), "ci95": [float(lo[i]), float(hi[i])]} for i, c in enumerate(conds)
  }

  units = defaultdict(list)
  for r in pairs:
    units[(r["name"], tuple(sorted((r["left"], r["right"]))))].append(r["choice"])
  agreement = {
    "krippendorff_alpha": stats.krippendorff_alpha_nominal(list(units.values())),
    "units_rated_twice_or_more": sum(len(v) >= 2 for v in units.values()),
  }

  correlations, metric_values = {}, {}
  if metrics:
    names = sorted({r["name"] for r in pairs if r["kind"] == "fool"})
    metric_values = image_metrics(folder, study, names, lpips_weights, niqe_params)
    if metrics_file:
      extra = json.loads(pathlib.Path(metrics_file).read_text())
      for k, per_method in extra.items():
        metric_values.setdefault(k, {}).update(per_method)
    human = defaultdict(lambda: [0, 0])  # (method, image) → [chosen over real, answers]
    for r in used:
      if r["kind"] == "fool":
        m = r["left"] if r["right"] == make.REAL else r["right"]
        human[(m, r["name"])][0] += r["choice"] == m
        human[(m, r["name"])][1] += 1
    for k, per_method in metric_values.items():
      pts = [
        (m, name, float(v), human[(m, name)][0] / human[(m, name)][1])
        for m, vals in per_method.items()
        for name, v in vals.items()
        if (m, name) in human
      ]
      correlations[k] = _correlations(pts, n_boot, seed)
      correlations[k]["better"] = "higher" if DIRECTION.get(k, 1) > 0 else "lower"
      correlations[k]["points"] = pts

  result = {
    "study": str(folder),
    "task": study["task"],
    "answers": len(known),
    "malformed_lines": malformed,
    "unknown_answers": unknown,
    "excluded_raters": excluded,
    "min_check_accuracy": min_check_accuracy,
    "fool_rate": fool,
    "bradley_terry": {
      "strengths": strengths,
      "prior_alpha": alpha,
      "bootstrap": {"resamples": n_boot, "over": "raters", "failed": failed},
    },
    "agreement": agreement,
    "raters": raters,
    "metric_correlation": correlations,
  }
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / "analysis.json").write_text(json.dumps(result, indent=1, default=_nan_none) + "\n")
  (out_dir / "analysis.md").write_text(markdown(result))
  plot(result, out_dir)
  return result


def _nan_none(x):
  return None if isinstance(x, float) and math.isnan(x) else x


def _f(x, digits=2):
  return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown(res: dict) -> str:
  lines = [
    f"# Study analysis: {res['study']}",
    "",
    f"Task `{res['task']}`; {res['answers']} answers used "
    f"({res['malformed_lines']} malformed lines and {res['unknown_answers']} unknown answers "
    f"skipped; raters excluded for failing attention checks: "
    f"{', '.join(res['excluded_raters']) or 'none'}).",
    "",
    "## Fool rate (method chosen over the real image; 50% = indistinguishable)",
    "",
    "| method | fool rate | 95% Wilson interval | answers |",
    "|---|---|---|---|",
  ]
  for m, f in res["fool_rate"].items():
    rate = None if f["rate"] is None else 100 * f["rate"]
    ci = [None if c is None or math.isnan(c) else 100 * c for c in f["ci95"]]
    lines.append(f"| {m} | {_f(rate, 1)}% | {_f(ci[0], 1)}–{_f(ci[1], 1)}% | {f['n']} |")
  bt = res["bradley_terry"]
  lines += [
    "",
    "## Bradley–Terry strengths (log scale, mean zero; P(a over b) = σ(θa − θb))",
    "",
    f"Maximum {'likelihood' if bt['prior_alpha'] == 0 else 'a posteriori (Gaussian prior, alpha ' + str(bt['prior_alpha']) + ')'}; "
    f"95% intervals from {bt['bootstrap']['resamples']} bootstrap resamples of raters.",
    "",
    "| condition | θ | 95% interval |",
    "|---|---|---|",
  ]
  for c, s in sorted(bt["strengths"].items(), key=lambda kv: -kv[1]["theta"]):
    lines.append(f"| {c} | {_f(s['theta'])} | {_f(s['ci95'][0])} – {_f(s['ci95'][1])} |")
  ag = res["agreement"]
  lines += [
    "",
    f"## Rater agreement: Krippendorff's alpha (nominal) = {_f(ag['krippendorff_alpha'], 3)} "
    f"over {ag['units_rated_twice_or_more']} pairs seen by two or more raters",
    "",
    "## Raters",
    "",
    "| rater | answers | median time (ms) | attention checks passed | share 'left' |",
    "|---|---|---|---|---|",
  ]
  for r, row in res["raters"].items():
    lines.append(
      f"| {r} | {row['answers']} / {row['trials']} | {_f(row['median_rt_ms'], 0)} | "
      f"{row['checks_passed']} / {row['checks']} | {_f(row['left_share'])} |"
    )
  if res["metric_correlation"]:
    lines += [
      "",
      "## Automatic metrics against people (per method and image: metric vs fool rate)",
      "",
      "| metric | better | points | Spearman (95%) | Kendall (95%) | Kendall within an image (95%) |",
      "|---|---|---|---|---|---|",
    ]
    for k, c in res["metric_correlation"].items():
      cells = []
      for s in ("spearman", "kendall", "kendall_within_image"):
        v = c[s]
        cells.append(
          "–" if v is None else f"{_f(v['value'])} ({_f(v['ci95'][0])} – {_f(v['ci95'][1])})"
        )
      lines.append(f"| {k} | {c['better']} | {c['n']} | {' | '.join(cells)} |")
  return "\n".join(lines) + "\n"


def plot(res: dict, out_dir: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  s = res["bradley_terry"]["strengths"]
  order = sorted(s, key=lambda c: s[c]["theta"])
  fig, ax = plt.subplots(figsize=(5, 0.5 + 0.45 * len(order)))
  th = np.array([s[c]["theta"] for c in order])
  err = np.abs(np.array([s[c]["ci95"] for c in order]).T - th)
  ax.errorbar(th, range(len(order)), xerr=err, fmt="o", capsize=3)
  ax.set_yticks(range(len(order)), order)
  ax.set_xlabel("Bradley–Terry strength θ (95% bootstrap interval)")
  fig.tight_layout()
  fig.savefig(out_dir / "strengths.png", dpi=120)
  plt.close(fig)

  f = res["fool_rate"]
  ms = [m for m in f if f[m]["rate"] is not None]
  fig, ax = plt.subplots(figsize=(5, 0.5 + 0.45 * max(1, len(ms))))
  rates = np.array([100 * f[m]["rate"] for m in ms])
  err = np.abs(100 * np.array([f[m]["ci95"] for m in ms]).reshape(-1, 2).T - rates)
  ax.barh(range(len(ms)), rates, xerr=err, capsize=3, color="#6a8caf")
  ax.axvline(50, color="k", lw=0.8, ls="--")
  ax.set_yticks(range(len(ms)), ms)
  ax.set_xlim(0, 100)
  ax.set_xlabel("fool rate, % (95% Wilson interval)")
  fig.tight_layout()
  fig.savefig(out_dir / "fool_rates.png", dpi=120)
  plt.close(fig)

  corr = res["metric_correlation"]
  if corr:
    fig, axes = plt.subplots(1, len(corr), figsize=(3.4 * len(corr), 3.2), squeeze=False)
    for ax, (k, c) in zip(axes[0], corr.items()):
      for m in sorted({p[0] for p in c["points"]}):
        pts = np.array([(p[2], p[3]) for p in c["points"] if p[0] == m]).reshape(-1, 2)
        ax.scatter(pts[:, 0], 100 * pts[:, 1], s=14, label=m)
      rho = c["spearman"]
      ax.set_title(f"{k}: ρ = {_f(rho['value']) if rho else '–'}")
      ax.set_xlabel(k)
      ax.set_ylabel("fool rate, %")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "metric_vs_human.png", dpi=120)
    plt.close(fig)
