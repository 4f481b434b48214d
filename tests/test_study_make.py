"""`sr3 study make`: the trial lists and images of a study, and one clear error per bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from sr3_jax import cli
from sr3_jax.study import make
from tests import study_images


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  return study_images.write(tmp_path_factory.mktemp("imgs"))


def _make(folders, out, **kw):
  args = dict(
    methods={"bicubic": folders["bicubic"], "noisy": folders["noisy"]},
    output=out,
    trials_per_rater=8,
    raters=["a", "b", "c"],
  )
  args.update(kw)
  return make.make(folders["real"], **args)


def test_trials_pair_conditions_of_one_image(folders, tmp_path):
  path = _make(folders, tmp_path / "s", task="with-input", input_dir=folders["lr"], checks=2)
  study = json.loads(path.read_text())
  assert study["task"] == "with-input" and study["display_seconds"] == 3.0
  assert study["names"] == sorted(study_images.PHOTOS)
  pairings = {
    ("fool", "bicubic", "real"),
    ("fool", "noisy", "real"),
    ("method", "bicubic", "noisy"),
  }
  sides = []
  for rater, trials in study["raters"].items():
    assert len(trials) == 8 + 2
    assert len({t["id"] for t in trials}) == len(trials)
    kinds = [t["kind"] for t in trials]
    assert kinds.count("check") == 2
    seen = set()
    for t in trials:
      pair = tuple(sorted((t["left"], t["right"])))
      if t["kind"] == "check":
        assert pair == ("degraded", "real")
      else:
        assert (t["kind"],) + pair in pairings
        assert (t["name"], pair) not in seen  # no pair twice for one rater
        seen.add((t["name"], pair))
      sides.append(t["left"] == "real")
      for cond in (t["left"], t["right"], "input"):
        assert (path.parent / make.image_path(cond, t["name"])).is_file()
  assert 0.2 < np.mean(sides) < 0.8  # the real image is not always on one side
  # the copied images are the originals (the JPEG method decoded, written losslessly)
  orig = np.asarray(Image.open(folders["noisy"] / "coffee.jpg").convert("RGB"))
  np.testing.assert_array_equal(
    np.asarray(Image.open(path.parent / "images/noisy/coffee.png")), orig
  )
  # the degraded check image is far from the real one
  real = np.asarray(Image.open(path.parent / "images/real/coffee.png"), np.float64)
  bad = np.asarray(Image.open(path.parent / "images/degraded/coffee.png"), np.float64)
  assert np.abs(real - bad).mean() > 10


def test_same_seed_same_study(folders, tmp_path):
  a = json.loads(_make(folders, tmp_path / "a", seed=3).read_text())
  b = json.loads(_make(folders, tmp_path / "b", seed=3).read_text())
  c = json.loads(_make(folders, tmp_path / "c", seed=4).read_text())
  assert a["raters"] == b["raters"] and a["raters"] != c["raters"]
  assert a["raters"]["a"] != a["raters"]["b"]  # each rater gets an own order


def _copy(src, dst, skip=(), rename=None, resize=None):
  dst.mkdir()
  for p in src.iterdir():
    if p.stem in skip:
      continue
    im = Image.open(p)
    if resize and p.stem == resize:
      im = im.resize((40, 40))
    im.save(dst / ((rename or {}).get(p.stem, p.stem) + p.suffix))
  return dst


def test_bad_input_gets_one_clear_error(folders, tmp_path):
  real = folders["real"]
  missing = _copy(folders["bicubic"], tmp_path / "missing", skip=("coffee",))
  with pytest.raises(make.StudyError, match=r"method 'm'.*missing 1 \(coffee\)"):
    make.make(real, {"m": missing}, tmp_path / "s1")
  extra = _copy(folders["bicubic"], tmp_path / "extra", rename={"rocket": "rocket2"})
  with pytest.raises(make.StudyError, match=r"missing 1 \(rocket\); extra 1 \(rocket2\)"):
    make.make(real, {"m": extra}, tmp_path / "s2")
  small = _copy(folders["bicubic"], tmp_path / "small", resize="chelsea")
  with pytest.raises(make.StudyError, match=r"chelsea.png is 40×40 but the real .* is 48×48"):
    make.make(real, {"m": small}, tmp_path / "s3")
  (tmp_path / "empty").mkdir()
  with pytest.raises(make.StudyError, match="holds no images"):
    make.make(real, {"m": tmp_path / "empty"}, tmp_path / "s4")
  with pytest.raises(make.StudyError, match="give --input"):
    make.make(real, {"m": folders["bicubic"]}, tmp_path / "s5", task="with-input")
  with pytest.raises(make.StudyError, match="has 8 distinct pairs"):
    make.make(
      real,
      {"m": folders["bicubic"], "n": folders["noisy"]},
      tmp_path / "s6",
      trials_per_rater=13,
      method_pairs=False,
    )
  with pytest.raises(make.StudyError, match="method name 'real'"):
    make.make(real, {"real": folders["bicubic"]}, tmp_path / "s7")
  assert not any((tmp_path / f"s{i}").exists() for i in range(1, 8))  # nothing half-written
  _make(folders, tmp_path / "done")
  with pytest.raises(make.StudyError, match="already holds a study"):
    _make(folders, tmp_path / "done")


def test_cli_make_with_relative_paths(folders, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(folders["real"].parent)
  rc = cli.main(
    ["study", "make", "--real", "real", "--method", "bicubic=bicubic", "--method", "noisy=noisy",
     "--trials-per-rater", "5", "--raters", "2", "--display-seconds", "1.5", "--output", "study"]
  )  # fmt: skip
  assert rc == 0
  out = capsys.readouterr().out.strip()
  study = json.loads(open(out).read())
  assert list(study["raters"]) == ["r1", "r2"] and study["display_seconds"] == 1.5
  assert (
    cli.main(["study", "make", "--real", "real", "--method", "x=nowhere", "--output", "s2"]) == 2
  )
  assert "method 'x' folder" in capsys.readouterr().err
