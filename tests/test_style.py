"""The house style (pyproject.toml [tool.ruff]): the formatter and the linter leave the tree as it is."""

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
TREES = ["sr3_jax", "tests", "benchmarks", "experiments"]


def _ruff() -> list[str]:
  exe = shutil.which("ruff", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("ruff")
  if exe is None:
    pytest.fail("ruff is not installed: it is in the test extras (pip install -e '.[test]')")
  return [exe]


def test_code_is_formatted():
  proc = subprocess.run(
    _ruff() + ["format", "--check", *TREES], cwd=ROOT, capture_output=True, text=True
  )
  assert proc.returncode == 0, f"run `ruff format {' '.join(TREES)}`:\n{proc.stdout[-2000:]}"


def test_linter_finds_nothing():
  proc = subprocess.run(_ruff() + ["check", *TREES], cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout[-3000:]
