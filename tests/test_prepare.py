"""`sr3 prepare`: a folder with planted bad files → a TFDS dataset the loader reads, and a report."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sr3_jax import configs
from sr3_jax.data import loader, prepare


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  d = tmp_path_factory.mktemp("imgs")
  rng = np.random.default_rng(0)
  (d / "sub").mkdir()
  for i in range(5):
    Image.fromarray(rng.integers(0, 255, (40 + i, 48, 3), np.uint8)).save(d / f"ok{i}.png")
  Image.fromarray(rng.integers(0, 255, (40, 40, 3), np.uint8)).save(d / "sub" / "photo.jpg")
  Image.fromarray(rng.integers(0, 255, (40, 40), np.uint8)).save(d / "sub" / "gray.png")
  Image.fromarray(rng.integers(0, 255, (40, 40, 4), np.uint8)).save(d / "sub" / "rgba.png")
  Image.fromarray(rng.integers(0, 65535, (40, 40), np.uint16)).save(d / "sub" / "deep16.png")
  Image.fromarray(rng.integers(0, 255, (40, 40, 3), np.uint8)).convert("CMYK").save(
    d / "sub" / "cmyk.jpg"
  )
  Image.fromarray(rng.integers(0, 255, (12, 12, 3), np.uint8)).save(d / "small.png")
  (d / "notes.txt").write_text("not an image")
  data = (d / "ok0.png").read_bytes()
  (d / "truncated.png").write_bytes(data[: len(data) // 2])
  return d


def data_cfg(name, data_dir):
  d = configs.base_config().data
  d.update(dict(dataset=name, data_dir=str(data_dir), image_size=32, num_threads=1, prefetch=2))
  return d


def test_prepare_cli_reports_bad_files_and_the_good_ones_load(folder, tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "sr3_jax",
      "prepare",
      "--images",
      str(folder),
      "--name",
      "faces",
      "--data-dir",
      str(tmp_path),
      "--min-size",
      "32",
      "--val-fraction",
      "0.25",
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().splitlines()[-1] == str(tmp_path / "faces")
  report = json.loads((tmp_path / "faces" / prepare.REPORT_NAME).read_text())
  assert set(report["skipped"]) == {"small.png", "notes.txt", "truncated.png"}
  assert "min-size" in report["skipped"]["small.png"]
  for name in report["skipped"]:
    assert f"skipped {name}" in proc.stderr
  assert set(report["converted"]) == {
    "sub/gray.png",
    "sub/rgba.png",
    "sub/deep16.png",
    "sub/cmyk.jpg",
  }
  assert report["written"] == 10 and sum(report["splits"].values()) == 10
  # Every written image decodes to RGB through the loader, across the splits.
  n = 0
  for split in report["splits"]:
    for batch in loader.make_dataset(data_cfg("faces", tmp_path), split, 1, seed=0, train=False):
      assert batch["hr"].shape == (1, 32, 32, 3)
      n += 1
  assert n == 10
  # The original bytes of a clean PNG are kept, not re-encoded.
  import tensorflow_datasets as tfds

  src = tfds.data_source("faces", split="train", data_dir=str(tmp_path))
  by_name = {r["filename"].decode(): r for r in (src[i] for i in range(len(src)))}
  if "ok1.png" in by_name:
    assert bytes(by_name["ok1.png"]["image"]) == (folder / "ok1.png").read_bytes()


def test_same_file_same_split():
  assert prepare.split_of("a/b.png", 0.5) == prepare.split_of("a/b.png", 0.5)
  shares = [prepare.split_of(f"img{i}.png", 0.2) for i in range(2000)]
  assert 0.17 < shares.count("validation") / 2000 < 0.23


def test_empty_folder_and_bad_arguments(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="holds no files"):
    prepare.prepare(str(tmp_path / "empty"), "x", str(tmp_path))
  with pytest.raises(FileNotFoundError, match="no such folder"):
    prepare.prepare(str(tmp_path / "missing"), "x", str(tmp_path))
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "sr3_jax",
      "prepare",
      "--images",
      str(tmp_path / "empty"),
      "--name",
      "x",
      "--data-dir",
      str(tmp_path),
    ],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2 and "holds no files" in proc.stderr


def test_interrupted_prepare_leaves_nothing_loadable(folder, tmp_path, monkeypatch):
  calls = {"n": 0}
  real = prepare.split_of

  def failing(rel, frac):
    calls["n"] += 1
    if calls["n"] > 14:  # after the split list is built, while TFDS is writing examples
      raise KeyboardInterrupt
    return real(rel, frac)

  monkeypatch.setattr(prepare, "split_of", failing)
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare(str(folder), "halfdone", str(tmp_path), min_size=32, workers=1)
  with pytest.raises(FileNotFoundError, match="sr3 prepare"):
    loader.make_dataset(data_cfg("halfdone", tmp_path), "train", 1, seed=0)
  monkeypatch.setattr(prepare, "split_of", real)
  report = prepare.prepare(str(folder), "halfdone", str(tmp_path), min_size=32, workers=1)
  assert report["written"] == 10
