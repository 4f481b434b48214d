"""`sr3 sweep --launch tpu` against a fake gcloud (tests/fake_gcloud.py): every run on its own
queued resource, trained with --distributed and evaluated; one run preempted mid-training is
re-queued, resumes from its checkpoint, and each run finishes exactly once."""

import json
import os
import pathlib
import subprocess
import sys

from sr3_jax import pods

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent

SWEEP = """
from sr3_jax import sweep


def get_sweep(arg=None):
  common = {"train.num_steps": 6, "train.batch_size": 4, "train.log_every": 1, "checkpoint.every": 2}
  runs = sweep.named({"l1": dict(common, **{"diffusion.loss": "l1"}),
                      "l2": dict(common, **{"diffusion.loss": "l2"})})
  return sweep.Sweep(config="experiments/configs/demo.py:runlocal", runs=runs,
                     eval=dict(num_images=1, samples=1, steps=2, image_size=32))
"""


def test_resource_names_are_gcloud_names():
  assert pods.resource_name("sr3", "loss=L1/v") == "sr3-loss-l1-v"
  assert len(pods.resource_name("sr3", "x" * 100)) <= 60


def test_sweep_on_fake_tpus_survives_a_preemption(tmp_path):
  state, root, bin_dir = tmp_path / "gcloud", tmp_path / "runs", tmp_path / "bin"
  for d in (state, bin_dir):
    d.mkdir()
  (bin_dir / "gcloud").write_text(
    f'#!/bin/sh\nexec {sys.executable} {HERE / "fake_gcloud.py"} "$@"\n'
  )
  (bin_dir / "sr3").write_text(f'#!/bin/sh\nexec {sys.executable} -m sr3_jax "$@"\n')
  for f in bin_dir.iterdir():
    f.chmod(0o755)
  (tmp_path / "tiny_sweep.py").write_text(SWEEP)
  # Run l1 is preempted once its step-2 checkpoint exists.
  qr_l1 = pods.resource_name("sr3", "l1")
  (state / "script.json").write_text(
    json.dumps({"preempt": {qr_l1: str(root / "l1" / "checkpoints" / "2")}})
  )
  env = dict(
    os.environ,
    PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    FAKE_GCLOUD_DIR=str(state),
    FAKE_GCLOUD_REPO=str(REPO),
  )
  cmd = [sys.executable, "-m", "sr3_jax", "sweep", "--sweep", str(tmp_path / "tiny_sweep.py")]
  cmd += ["--workdir", str(root), "--launch", "tpu", "--zone", "z1", "--type", "v5p-8", "--spot"]
  proc = subprocess.run(
    cmd + ["--poll", "0.5"], capture_output=True, text=True, timeout=1200, cwd=REPO, env=env
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  calls = [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]
  creates = [c[4] for c in calls if c[2:4] == ["queued-resources", "create"]]
  assert sorted(creates) == sorted([qr_l1, qr_l1, pods.resource_name("sr3", "l2")])
  assert all("--spot" in c for c in calls if c[2:4] == ["queued-resources", "create"])
  trains = [c for c in calls if c[2] == "tpu-vm" and "sr3 train" in c[-1]]
  assert all("--distributed" in c[-1] and "--worker=all" in c for c in trains)
  assert sorted(c[4] for c in trains) == sorted(creates)  # one launch per slice granted
  evals = [c for c in calls if c[2] == "tpu-vm" and "sr3 eval" in c[-1]]
  assert sorted(c[4] for c in evals) == sorted(set(creates)) and all(
    "--worker=0" in c for c in evals
  )
  assert not list((state / "qr").iterdir())  # every slice deleted
  for name in ("l1", "l2"):
    assert json.loads((root / name / "eval.json").read_text())
    assert pods.latest_step(root / name) == 6
  # The preempted run saved at SIGTERM and its second launch resumed from that checkpoint.
  log = (state / "nodes" / qr_l1 / f"sweep-{qr_l1}.train.log").read_text()
  assert "resumed" in log and "from step" in log, log[-2000:]
  assert "l1: 2 launch(es)" in proc.stderr and "l2: 1 launch(es)" in proc.stderr
  rows = (root / "results.csv").read_text().splitlines()
  assert len(rows) == 3 and rows[0].startswith("run,")


def test_dry_run_prints_every_gcloud_command():
  cmd = [sys.executable, "-m", "sr3_jax", "sweep", "--sweep", "experiments/sweeps/loss.py:runlocal"]
  cmd += ["--workdir", "gs://bucket/loss", "--launch", "tpu", "--zone", "z1", "--type", "v5p-8"]
  proc = subprocess.run(cmd + ["--dry-run"], capture_output=True, text=True, timeout=300, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = [x for x in proc.stderr.splitlines() if x.startswith("gcloud ")]
  assert sum("queued-resources create" in x for x in lines) == 2
  assert sum("--distributed" in x and "--worker=all" in x for x in lines) == 2
  assert sum("queued-resources delete" in x for x in lines) == 2
  bad = subprocess.run(cmd[:-4], capture_output=True, text=True, timeout=300, cwd=REPO)
  assert bad.returncode == 2 and "--zone and --type" in bad.stderr
