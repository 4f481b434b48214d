"""Paths as typed: relative and ~ become absolute local paths; URLs pass through."""

import os

from sr3_jax import paths


def test_relative_paths_are_taken_from_the_current_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert paths.resolve("demo_out/run") == os.path.join(str(tmp_path), "demo_out", "run")
  assert paths.resolve("./a/../b") == os.path.join(str(tmp_path), "b")


def test_home_is_expanded(monkeypatch, tmp_path):
  monkeypatch.setenv("HOME", str(tmp_path))
  assert paths.resolve("~/tensorflow_datasets") == os.path.join(
    str(tmp_path), "tensorflow_datasets"
  )


def test_urls_and_unset_paths_pass_through():
  assert paths.resolve("gs://bucket/runs/a") == "gs://bucket/runs/a"
  assert (
    paths.is_remote("s3://b/x") and not paths.is_remote("/tmp/x") and not paths.is_remote("c:x")
  )
  assert paths.resolve(None) is None and paths.resolve("") == ""
  assert paths.resolve("/abs/path") == "/abs/path"
