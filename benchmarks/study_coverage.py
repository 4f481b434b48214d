"""How often the intervals of `sr3 study analyze` cover the truth, over many simulated studies.

A study of the demo's outputs (make demo first) is answered again and again by simulated raters of
known Bradley–Terry strengths; each time the 95% rater-bootstrap intervals of the strengths and
the 95% Wilson intervals of the fool rates are checked against the truth.

  .venv/bin/python benchmarks/study_coverage.py --demo-out demo_out --studies 400
"""

import argparse
import pathlib
import shutil
import tempfile

import numpy as np

from sr3_jax.study import analyze, make, responses, simulate

TRUE = {"real": 0.0, "sr3": -0.3, "sr3_mean": -0.9, "bicubic": -1.6}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--demo-out", default="demo_out")
  ap.add_argument("--studies", type=int, default=400)
  ap.add_argument("--raters", type=int, default=30)
  ap.add_argument("--bootstrap", type=int, default=200)
  args = ap.parse_args()
  images = pathlib.Path(args.demo_out) / "images"
  work = pathlib.Path(tempfile.mkdtemp(prefix="sr3_study_coverage_"))
  folders = {
    "sr3": images / "sr3_sample",
    "sr3_mean": images / "sr3_mean",
    "bicubic": images / "bicubic",
  }
  raters = [f"r{i + 1}" for i in range(args.raters)]
  make.make(images / "hr", folders, work / "study", trials_per_rater=12, raters=raters, checks=2)
  centre = np.mean(list(TRUE.values()))
  bt = {k: 0 for k in TRUE}
  fool = {k: 0 for k in TRUE if k != "real"}
  for rep in range(args.studies):
    (work / "study" / responses.FILE).unlink(missing_ok=True)
    simulate.simulate(work / "study", TRUE, seed=100 + rep)
    res = analyze.analyze(
      work / "study", work / "out", n_boot=args.bootstrap, seed=rep, metrics=False
    )
    for k, s in res["bradley_terry"]["strengths"].items():
      bt[k] += s["ci95"][0] <= TRUE[k] - centre <= s["ci95"][1]
    for m in fool:
      p = 1 / (1 + np.exp(-(TRUE[m] - TRUE["real"])))
      fool[m] += res["fool_rate"][m]["ci95"][0] <= p <= res["fool_rate"][m]["ci95"][1]
  shutil.rmtree(work)
  print(f"{args.studies} simulated studies of {args.raters} raters × 14 trials")
  print(
    "Bradley–Terry 95% bootstrap coverage:", {k: round(v / args.studies, 3) for k, v in bt.items()}
  )
  print("fool rate 95% Wilson coverage:", {k: round(v / args.studies, 3) for k, v in fool.items()})


if __name__ == "__main__":
  main()
