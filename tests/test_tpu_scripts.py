"""tpu/pod.sh prints the gcloud commands it would run with --dry-run."""

import pathlib
import subprocess

POD = pathlib.Path(__file__).resolve().parent.parent / "tpu" / "pod.sh"


def pod(*args):
  return subprocess.run(["bash", str(POD), *args], capture_output=True, text=True, timeout=60)


def test_dry_run_prints_each_command():
  p = pod(
    "create", "--name", "s", "--zone", "us-central2-b", "--type", "v5p-64", "--spot", "--dry-run"
  )
  assert p.returncode == 0 and "queued-resources create s" in p.stdout and "--spot" in p.stdout
  p = pod("setup", "--name", "s", "--zone", "z", "--repo", "file:///src/sr3_jax", "--dry-run")
  assert (
    p.returncode == 0 and "--worker=all" in p.stdout and "pip" in p.stdout and "install" in p.stdout
  )
  p = pod(
    "launch",
    "--name",
    "s",
    "--zone",
    "z",
    "--dry-run",
    "--",
    "sr3",
    "train",
    "--workdir",
    "gs://b/w",
  )
  assert p.returncode == 0 and "--worker=all" in p.stdout and "gs://b/w" in p.stdout
  p = pod("delete", "--name", "s", "--zone", "z", "--dry-run")
  assert p.returncode == 0 and "queued-resources delete s" in p.stdout


def test_missing_arguments_are_named():
  p = pod("create", "--name", "s", "--zone", "z", "--dry-run")
  assert p.returncode == 2 and "--type" in p.stderr
  p = pod("setup", "--name", "s", "--zone", "z", "--dry-run")
  assert p.returncode == 2 and "--repo" in p.stderr
