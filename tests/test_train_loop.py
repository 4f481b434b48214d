"""The training loop: exact resume, preemption, config and checkpoint mismatches, NaN stops."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from sr3_jax import configs, sharding, train
from sr3_jax.data import loader

CFG = "experiments/configs/demo.py:runlocal"
CFG_FILE = str(pathlib.Path(__file__).resolve().parent.parent / CFG)  # for runs from another folder


def small_config(**over):
  c = configs.load(CFG)
  c.train.update(dict(batch_size=4, num_steps=6, log_every=1))
  c.checkpoint.update(dict(every=3, keep=5))
  for k, v in over.items():
    parent = c
    *head, last = k.split(".")
    for h in head:
      parent = parent[h]
    parent[last] = v
  return c


def losses(workdir):
  lines = pathlib.Path(workdir, "metrics.jsonl").read_text().splitlines()
  return {r["step"]: r["loss"] for r in map(json.loads, lines)}


def wait_for_logged_steps(workdir, n, timeout=300):
  """Waits until a running `sr3 train` has logged n steps to metrics.jsonl."""
  deadline = time.time() + timeout
  p = pathlib.Path(workdir) / "metrics.jsonl"
  while time.time() < deadline:
    if p.exists() and len(p.read_text().splitlines()) >= n:
      return
    time.sleep(0.2)


def test_exact_resume_matches_a_straight_run(tmp_path):
  straight = train.train_and_evaluate(small_config(), tmp_path / "a")
  train.train_and_evaluate(small_config(**{"train.num_steps": 3}), tmp_path / "b")
  resumed = train.train_and_evaluate(small_config(), tmp_path / "b")  # continues from step 3
  assert int(resumed.step) == 6
  jax.tree_util.tree_map(
    lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), straight.params, resumed.params
  )
  la, lb = losses(tmp_path / "a"), losses(tmp_path / "b")
  assert sorted(lb) == list(range(1, 7))
  for s in range(1, 7):  # the same batches and noise, in the same order
    assert la[s] == pytest.approx(lb[s], abs=1e-6)
  assert (tmp_path / "a" / "config.json").exists() and (tmp_path / "a" / "tensorboard").is_dir()


def test_config_change_in_a_workdir_is_named(tmp_path):
  train.train_and_evaluate(small_config(**{"train.num_steps": 2}), tmp_path)
  with pytest.raises(ValueError, match="optim.lr"):
    train.train_and_evaluate(small_config(**{"optim.lr": 0.5}), tmp_path)


def test_checkpoint_of_another_model_names_the_parameter(tmp_path):
  train.train_and_evaluate(small_config(**{"train.num_steps": 2}), tmp_path)
  other = small_config(**{"model.channels": 16, "allow_config_change": True})
  with pytest.raises(ValueError, match=r"different model: .*conv_in.*shape"):
    train.train_and_evaluate(other, tmp_path)


def test_leftover_temporary_save_is_ignored(tmp_path):
  train.train_and_evaluate(small_config(**{"train.num_steps": 3}), tmp_path)
  junk = tmp_path / "checkpoints" / "5.orbax-checkpoint-tmp-1234"
  junk.mkdir()
  (junk / "garbage").write_text("half a save")
  state = train.train_and_evaluate(small_config(**{"train.num_steps": 4}), tmp_path)
  assert int(state.step) == 4
  assert min(losses(tmp_path)) == 1 and 4 in losses(tmp_path)


def test_repeated_non_finite_steps_stop_the_run(tmp_path, monkeypatch):
  real = loader.global_batch
  monkeypatch.setattr(
    loader, "global_batch", lambda local, s: real({"hr": local["hr"] * np.nan}, s)
  )
  c = small_config(**{"train.num_steps": 10, "train.max_consecutive_skips": 3})
  with pytest.raises(FloatingPointError, match="non-finite"):
    train.train_and_evaluate(c, tmp_path)
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert rows[-1]["skipped"] == 3 and rows[-1]["consecutive_skips"] == 3


def test_batch_not_divisible_by_devices_is_named(tmp_path):
  c = small_config(**{"train.batch_size": 3, "mesh.data": 1})
  mesh = sharding.make_mesh(c)
  if mesh.size == 1:
    c.train.batch_size = 3
    train.validate_for_mesh(c, mesh)  # one device divides everything
  with pytest.raises(ValueError, match="data.factor"):
    train.train_and_evaluate(small_config(**{"data.factor": 3}), tmp_path)


def test_sigterm_saves_the_step_exits_zero_and_resumes(tmp_path):
  """Run as a user types it: a relative --workdir, from the folder that will hold it."""
  work = tmp_path / "run"
  cmd = [
    sys.executable,
    "-m",
    "sr3_jax",
    "train",
    "--config",
    CFG_FILE,
    "--workdir",
    "run",
    "--config.train.num_steps=100000",
    "--config.train.log_every=1",
    "--config.checkpoint.every=1000",
  ]
  proc = subprocess.Popen(
    cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
  )
  wait_for_logged_steps(work, 3)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-2000:]
  assert "preempted: saved step" in err
  saved = sorted(int(d.name) for d in (work / "checkpoints").iterdir() if d.name.isdigit())
  assert saved and saved[-1] >= 3 and saved[-1] != 1000  # off the save interval
  assert (work / "checkpoints" / str(saved[-1]) / "commit_success.txt").exists()
  again = subprocess.run(
    cmd[:-3]
    + [
      f"--config.train.num_steps={saved[-1] + 2}",
      "--config.train.log_every=1",
      "--config.checkpoint.every=1000",
    ],
    capture_output=True,
    text=True,
    timeout=300,
    cwd=tmp_path,
  )
  assert again.returncode == 0, again.stderr[-2000:]
  assert f"resumed {work} from step {saved[-1]}" in again.stderr
  assert again.stdout.strip().splitlines()[-1] == str(work)


def test_sigkill_at_any_moment_leaves_a_restorable_run(tmp_path):
  """Saves every step, killed with SIGKILL mid-run (possibly mid-save): the rerun restores the
  latest complete checkpoint and goes on."""
  work = tmp_path / "run"
  base = [
    sys.executable,
    "-m",
    "sr3_jax",
    "train",
    "--config",
    CFG,
    "--workdir",
    str(work),
    "--config.train.log_every=1",
    "--config.checkpoint.every=1",
    "--config.checkpoint.keep=2",
  ]
  proc = subprocess.Popen(
    base + ["--config.train.num_steps=100000"],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  wait_for_logged_steps(work, 4)
  proc.kill()
  proc.communicate(timeout=60)
  complete = sorted(
    int(d.name)
    for d in (work / "checkpoints").iterdir()
    if d.name.isdigit() and (d / "commit_success.txt").exists()
  )
  assert complete
  again = subprocess.run(
    base + [f"--config.train.num_steps={complete[-1] + 1}"],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert again.returncode == 0, again.stderr[-2000:]
  assert "resumed" in again.stderr


def test_sample_grids_are_written(tmp_path):
  from PIL import Image

  c = small_config(**{"train.num_steps": 2, "train.sample_every": 2, "train.sample_steps": 2})
  train.train_and_evaluate(c, tmp_path)
  grid = tmp_path / "samples" / "step_00000002.png"
  with Image.open(grid) as im:
    # Up to 4 held-out crops as rows (the embedded test split has 2); LR | bicubic | sample | HR.
    assert im.size == (4 * c.data.image_size, 2 * c.data.image_size)
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  ev = [r for r in rows if "eval/sr3_psnr" in r]
  assert len(ev) == 1 and ev[0]["step"] == 2
  assert ev[0]["eval/bicubic_psnr"] > 15 and 0 < ev[0]["eval/sr3_ssim"] <= 1


def _make_unwritable(folder) -> str | None:
  """Makes `folder` refuse new entries (chattr +i as root, who ignores modes; chmod otherwise);
  returns the command that undoes it, or None where neither works here."""
  if os.geteuid() != 0:
    os.chmod(folder, 0o555)
    return f"chmod 755 {folder}"
  if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
    return f"chattr -i {folder}"
  return None


def test_unwritable_checkpoint_folder_stops_the_run_at_once(tmp_path):
  """The checkpoint folder becomes unwritable mid-run: the run stops at the next save (not at the
  end of training) with exit status 2 and one message naming the folder and the cause; the
  checkpoint completed before stays restorable."""
  work = tmp_path / "run"
  cmd = [
    sys.executable,
    "-m",
    "sr3_jax",
    "train",
    "--config",
    CFG,
    "--workdir",
    str(work),
    "--config.train.num_steps=100000",
    "--config.train.log_every=1",
    "--config.checkpoint.every=5",
  ]
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  undo = None
  try:
    first = work / "checkpoints" / "1" / "commit_success.txt"  # Orbax saves a run's first step
    deadline = time.time() + 300
    while not first.exists() and time.time() < deadline and proc.poll() is None:
      time.sleep(0.05)
    undo = _make_unwritable(work / "checkpoints")
    if undo is None:
      proc.kill()
      pytest.skip("neither chattr +i nor a non-root chmod can make a folder unwritable here")
    locked_at = len((work / "metrics.jsonl").read_text().splitlines())
    out, err = proc.communicate(timeout=300)
  finally:
    if proc.poll() is None:
      proc.kill()
    if undo:
      subprocess.run(undo.split(), check=True)
  assert proc.returncode == 2, err[-2000:]
  last = err.strip().splitlines()[-1]
  m = re.match(
    rf"sr3 train: saving step (\d+) to {re.escape(str(work / 'checkpoints'))} failed: PermissionError",
    last,
  )
  assert m, last
  failed = int(m.group(1))  # the first save due after the folder was locked
  assert failed % 5 == 0 and failed >= locked_at, (failed, locked_at)
  assert f"up to step {failed - 5 if failed > 5 else 1} are complete and kept" in last
  steps = len((work / "metrics.jsonl").read_text().splitlines())
  # Stopped at the failed save, or a few steps later where Orbax's background save reports late
  # (a loaded machine): not 100000 steps later.
  assert steps <= failed + 25
  assert (work / "checkpoints" / "1" / "commit_success.txt").exists()
  again = subprocess.run(
    cmd[:-3]
    + [
      f"--config.train.num_steps={failed + 1}",
      "--config.train.log_every=1",
      "--config.checkpoint.every=5",
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert again.returncode == 0 and "resumed" in again.stderr, again.stderr[-2000:]
