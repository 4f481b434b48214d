"""`sr3 sweep --launch tpu`: every run of a sweep on its own TPU slice, requested as a queued
resource, relaunched after a spot preemption until it finishes.

For each unfinished run (ROOT/NAME without eval.json) the scheduler keeps one queued resource
`{prefix}-{name}` (at most `max_slices` at a time; the rest wait their turn) and walks it through

    create → (poll) ACTIVE → [setup] → train on every worker with --distributed
           → eval on worker 0 → eval.json in ROOT/NAME → delete

Every gcloud call goes through `gcloud compute tpus …`. A queued resource that turns SUSPENDING,
SUSPENDED or FAILED (a spot preemption) is deleted and requested again; a train or eval process
that ends without its result (its exit code, written to ~/sweep-QR.*.exit, is non-zero, e.g.
after a SIGTERM save) is launched again on the same slice. Either way `sr3 train` resumes from the
run's last checkpoint. A run that needs more than `max_attempts` launches is given up and named.
`dry_run` prints the gcloud commands of each run's first pass instead of running them.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import subprocess
import sys
import time
from typing import Callable

from etils import epath

LOST = ("SUSPENDING", "SUSPENDED", "FAILED")


@dataclasses.dataclass
class PodOptions:
  zone: str
  accelerator_type: str  # e.g. v5p-8
  runtime_version: str = "v2-alpha-tpuv5"
  spot: bool = False
  max_slices: int = 0  # queued resources at once; 0: one per unfinished run
  prefix: str = "sr3"
  poll_s: float = 60.0
  repo: str = ""  # git URL to clone and install on each new slice; "": the image has sr3
  max_attempts: int = 5  # launches per run (first one included)
  dry_run: bool = False


@dataclasses.dataclass
class _Slot:
  qr: str
  attempts: int = 1
  phase: str = "queued"  # queued | training | evaluating


def resource_name(prefix: str, run: str) -> str:
  """A queued-resource / node name: lowercase letters, digits and hyphens, ≤ 60 characters."""
  slug = re.sub(r"[^a-z0-9-]+", "-", f"{prefix}-{run}".lower()).strip("-")
  return slug[:60].rstrip("-")


class Gcloud:
  """The gcloud commands the scheduler needs; `run` executes one (or prints it, dry)."""

  def __init__(self, opts: PodOptions, log, runner: Callable | None = None):
    self.opts, self.log = opts, log
    self.runner = runner or (lambda argv: subprocess.run(argv, capture_output=True, text=True))

  def run(self, *args: str, check: bool = True) -> str:
    argv = ["gcloud", "compute", "tpus", *args]
    if self.opts.dry_run:
      print(shlex.join(argv), file=self.log)
      return ""
    proc = self.runner(argv)
    if check and proc.returncode != 0:
      raise RuntimeError(f"`{shlex.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip()

  def create(self, qr: str) -> None:
    o = self.opts
    spot = ["--spot"] if o.spot else []
    self.run(
      "queued-resources", "create", qr, "--node-id", qr, "--zone", o.zone,
      "--accelerator-type", o.accelerator_type, "--runtime-version", o.runtime_version, *spot,
    )  # fmt: skip

  def state(self, qr: str) -> str:
    out = self.run(
      "queued-resources", "describe", qr, "--zone", self.opts.zone,
      "--format", "value(state.state)",
    )  # fmt: skip
    return out.strip().upper() or "UNKNOWN"

  def delete(self, qr: str) -> None:
    self.run(
      "queued-resources", "delete", qr, "--zone", self.opts.zone, "--force", "--quiet", check=False
    )

  def ssh(self, qr: str, command: str, worker: str = "all", check: bool = True) -> str:
    return self.run(
      "tpu-vm", "ssh", qr, "--zone", self.opts.zone, f"--worker={worker}", "--command", command,
      check=check,
    )  # fmt: skip


def _background(tag: str, command: str) -> str:
  """A worker command line that runs `command` detached from ssh, logging to ~/sweep-TAG.log and
  writing its exit code to ~/sweep-TAG.exit when it ends."""
  inner = f"{command}; echo $? > ~/sweep-{tag}.exit"
  return (
    f"rm -f ~/sweep-{tag}.exit; cd sr3_jax && "
    f"(nohup bash -c {shlex.quote(inner)} > ~/sweep-{tag}.log 2>&1 &)"
  )


def setup_command(repo: str) -> str:
  return (
    f"set -e; if [ ! -d sr3_jax ]; then git clone {shlex.quote(repo)} sr3_jax; fi; "
    "cd sr3_jax && git pull --ff-only && python3 -m pip install -q -e . 'jax[tpu]'"
  )


def latest_step(workdir) -> int:
  """The last checkpointed step under WORKDIR/checkpoints (0 if none)."""
  ckpts = epath.Path(workdir) / "checkpoints"
  steps = [int(p.name) for p in ckpts.iterdir() if p.name.isdigit()] if ckpts.exists() else []
  return max(steps, default=0)


def launch_tpu(
  runs: list[tuple[str, list[str], list[str], int]],
  root: str,
  opts: PodOptions,
  log=None,
  gcloud: Gcloud | None = None,
  sleep: Callable[[float], None] = time.sleep,
) -> dict[str, int]:
  """Runs (name, train argv, eval argv, train steps) on TPU slices until each has
  ROOT/NAME/eval.json.

  Returns each run's number of launches; raises RuntimeError naming the runs given up."""
  log = log or sys.stderr
  g = gcloud or Gcloud(opts, log)
  spec = {name: (train, ev, steps) for name, train, ev, steps in runs}
  done = lambda name: (epath.Path(root) / name / "eval.json").exists()
  pending = [name for name, *_ in runs if opts.dry_run or not done(name)]
  slots: dict[str, _Slot] = {}
  attempts: dict[str, int] = {}
  failed: list[str] = []

  def launch_train(name: str, slot: _Slot) -> None:
    train = shlex.join(spec[name][0] + ["--distributed"])
    g.ssh(slot.qr, _background(f"{slot.qr}.train", train))
    slot.phase = "training"
    print(f"sweep: {name}: training on {slot.qr} (launch {slot.attempts})", file=log)

  def relaunch(name: str, slot: _Slot, why: str) -> bool:
    if slot.attempts >= opts.max_attempts:
      print(f"sweep: {name}: {why}; given up after {slot.attempts} launches", file=log)
      g.delete(slot.qr)
      failed.append(name)
      return False
    slot.attempts += 1
    print(f"sweep: {name}: {why}; launching again ({slot.attempts})", file=log)
    return True

  if opts.dry_run:  # each run's first pass, in order
    for name in pending:
      qr = resource_name(opts.prefix, name)
      g.create(qr)
      g.state(qr)
      if opts.repo:
        g.ssh(qr, setup_command(opts.repo))
      launch_train(name, _Slot(qr))
      g.ssh(qr, f"cat ~/sweep-{qr}.train.exit 2>/dev/null || true", worker="0", check=False)
      g.ssh(qr, _background(f"{qr}.eval", shlex.join(spec[name][1])), worker="0")
      g.delete(qr)
    return {name: 1 for name in pending}

  while pending or slots:
    while pending and (not opts.max_slices or len(slots) < opts.max_slices):
      name = pending.pop(0)
      slots[name] = _Slot(resource_name(opts.prefix, name))
      g.create(slots[name].qr)
      print(f"sweep: {name}: requested {slots[name].qr} ({opts.accelerator_type})", file=log)
    for name, slot in list(slots.items()):
      attempts[name] = slot.attempts
      if done(name):
        print(f"sweep: {name}: done; deleting {slot.qr}", file=log)
        g.delete(slot.qr)
        del slots[name]
        continue
      state = g.state(slot.qr)
      if state in LOST:
        g.delete(slot.qr)
        if relaunch(name, slot, f"{slot.qr} is {state} (preempted)"):
          g.create(slot.qr)
          slot.phase = "queued"
        else:
          del slots[name]
        continue
      if state != "ACTIVE":
        continue
      if slot.phase == "queued":
        if opts.repo:
          g.ssh(slot.qr, setup_command(opts.repo))
        launch_train(name, slot)
        continue
      tag = f"{slot.qr}.{'train' if slot.phase == 'training' else 'eval'}"
      code = g.ssh(slot.qr, f"cat ~/sweep-{tag}.exit 2>/dev/null || true", worker="0", check=False)
      if not code:
        continue  # still running
      if code.strip() != "0":
        if relaunch(name, slot, f"{tag} exited with {code.strip()}"):
          launch_train(name, slot)  # a failed eval retrains nothing: train resumes at its end
        else:
          del slots[name]
      elif slot.phase == "training" and latest_step(f"{root}/{name}") < spec[name][2]:
        # sr3 train exits 0 after a preemption save too: it stopped before its last step.
        step = latest_step(f"{root}/{name}")
        if relaunch(name, slot, f"train stopped at step {step} of {spec[name][2]}"):
          launch_train(name, slot)
        else:
          del slots[name]
      elif slot.phase == "training":
        g.ssh(slot.qr, _background(f"{slot.qr}.eval", shlex.join(spec[name][1])), worker="0")
        slot.phase = "evaluating"
        print(f"sweep: {name}: trained; evaluating on worker 0", file=log)
      elif not done(name):  # eval ended well but its eval.json is not in ROOT/NAME
        if relaunch(name, slot, f"eval exited but wrote no {root}/{name}/eval.json"):
          launch_train(name, slot)
        else:
          del slots[name]
    if pending or slots:
      sleep(opts.poll_s)
  if failed:
    raise RuntimeError(f"runs given up after {opts.max_attempts} launches each: {failed}")
  return attempts
