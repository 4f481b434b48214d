"""`sr3 study simulate`: answers a study with simulated raters of known Bradley–Terry strengths.

Rater r prefers condition a over b with probability σ(θ_a + δ_ra − θ_b − δ_rb), with a per-rater
offset δ ~ N(0, rater_sd²) for each condition, and answers at random with probability `lapse`
(an inattentive rater). The answers go to responses.jsonl exactly as the server writes them, so
`sr3 study analyze` can be checked against strengths that are known.
"""

from __future__ import annotations

import datetime
import pathlib

import numpy as np

from sr3_jax.study import make, responses


def simulate(
  folder,
  strengths: dict[str, float],
  rater_sd: float = 0.0,
  lapse: float = 0.0,
  fraction: float = 1.0,
  seed: int = 0,
  raters: list[str] | None = None,
) -> int:
  """Appends simulated answers for `fraction` of each rater's trials (of `raters`, default all);
  returns how many."""
  folder = pathlib.Path(folder)
  study = make.load(folder)
  strengths = dict(strengths)
  strengths.setdefault(make.DEGRADED, -6.0)
  conds = [make.REAL, *study["methods"]]
  missing = [c for c in conds if c not in strengths]
  if missing:
    raise make.StudyError(f"give a strength for {', '.join(missing)} (e.g. real=0,sr3=-0.2)")
  if not 0.0 <= lapse <= 1.0 or not 0.0 < fraction <= 1.0:
    raise make.StudyError("--lapse must lie in [0, 1] and --fraction in (0, 1]")
  path = folder / responses.FILE
  responses.seal(path)
  given, _ = responses.read(path)
  done = {(r["rater"], r["trial"]) for r in given}
  rng = np.random.default_rng(seed)
  start = datetime.datetime.now(datetime.timezone.utc)
  n = 0
  unknown = sorted(set(raters or []) - set(study["raters"]))
  if unknown:
    raise make.StudyError(
      f"the study has no rater {unknown[0]!r}; its raters: {', '.join(study['raters'])}"
    )
  for rater, trials in study["raters"].items():
    if raters and rater not in raters:
      continue
    offset = {c: rng.normal(0.0, rater_sd) for c in strengths}
    for t in trials[: max(1, round(fraction * len(trials)))]:
      if (rater, t["id"]) in done:
        continue
      a, b = t["left"], t["right"]
      d = strengths[a] + offset[a] - strengths[b] - offset[b]
      p_left = 0.5 if rng.random() < lapse else 1.0 / (1.0 + np.exp(-d))
      side = "left" if rng.random() < p_left else "right"
      stamp = start + datetime.timedelta(seconds=n)
      rec = dict(t, rater=rater, trial=t["id"], choice=t[side])
      rec["rt_ms"] = round(float(rng.lognormal(np.log(1200.0), 0.4)), 1)
      rec["time"] = stamp.isoformat(timespec="milliseconds")
      responses.append(path, rec)
      n += 1
  return n
