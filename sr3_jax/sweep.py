"""`sr3 sweep`: ablation grids of config overrides → named runs, run or printed, then tabulated.

A sweep file (experiments/sweeps/*.py) defines `get_sweep(arg=None)` returning a `Sweep`: the base
config spec, the runs (each a dict of dotted overrides, built with `product`, `zip_runs` and
`named`), and how to evaluate them. `sr3 sweep --sweep FILE[:arg] --workdir ROOT`:

- `--dry-run` lists the runs with their status (done / partial / pending);
- `--local` trains and evaluates each unfinished run in ROOT/NAME one after another (a run with
  an eval.json is done and skipped; a partial one resumes from its checkpoint);
- `--print-commands` prints each run's `tpu/pod.sh launch … sr3 train … --distributed` and
  `sr3 eval` commands;
- `--launch tpu` runs every run on its own TPU slice, requested as a queued resource and
  relaunched after a spot preemption (sr3_jax/pods.py);

and afterwards (always, from whatever is finished) gathers every run's eval.json into
ROOT/results.csv and ROOT/results.md and plots loss and eval curves per run into ROOT/curves.png.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import itertools
import json
import pathlib
import re
import shlex
import sys
from typing import Any

import matplotlib
import matplotlib.pyplot as plt

from sr3_jax import configs, evaluate, paths, pods, train


@dataclasses.dataclass
class Sweep:
  config: str  # experiments/configs/FILE.py[:arg]
  runs: list[dict[str, Any]]  # dotted overrides per run; "_name" names a run
  eval: dict[str, Any] = dataclasses.field(
    default_factory=lambda: dict(num_images=4, samples=2, steps=None)
  )


def on_demo(arg: str | None, runs: list[dict]) -> Sweep:
  """A sweep over the demo config: `arg` "runlocal" (smoke run, tiny eval) or "steps=N"; otherwise
  the demo's 500 steps, evaluated on 2 held-out 192-pixel crops with the mean of 4 samples."""
  a = configs.parse_arg(arg, runlocal=False, steps=0)
  spec = "experiments/configs/demo.py" + (
    ":runlocal" if a.runlocal else f":steps={a.steps}" if a.steps else ""
  )
  ev = (
    dict(num_images=2, samples=2, steps=None)
    if a.runlocal
    else dict(num_images=2, samples=4, image_size=192)
  )
  return Sweep(config=spec, runs=runs, eval=ev)


def product(**axes) -> list[dict]:
  """Every combination: product(**{"diffusion.loss": ["l1", "l2"], "optim.lr": [1e-4, 3e-4]})."""
  keys = list(axes)
  return [dict(zip(keys, combo)) for combo in itertools.product(*axes.values())]


def zip_runs(**axes) -> list[dict]:
  """Values taken together, position by position (all lists of one length)."""
  lengths = {len(v) for v in axes.values()}
  if len(lengths) > 1:
    raise ValueError(f"zip_runs needs lists of one length, got {sorted(lengths)}")
  return [dict(zip(axes, combo)) for combo in zip(*axes.values())]


def named(variants: dict[str, dict]) -> list[dict]:
  """Runs whose overrides change several fields together, each under a given name."""
  return [dict(overrides, _name=name) for name, overrides in variants.items()]


def run_name(overrides: dict) -> str:
  if "_name" in overrides:
    return overrides["_name"]
  parts = [f"{k.split('.')[-1]}={v}" for k, v in overrides.items()]
  return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", ",".join(parts)) or "base"


def load(spec: str) -> Sweep:
  path_str, _, arg = spec.partition(":")
  path = pathlib.Path(path_str)
  if not path.exists():
    if (configs.repo_root() / path).exists():
      path = configs.repo_root() / path
    else:
      raise FileNotFoundError(f"--sweep {path_str} not found")
  module_spec = importlib.util.spec_from_file_location(f"sr3_sweep_{path.stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  sweep = module.get_sweep(arg or None)
  names = [run_name(r) for r in sweep.runs]
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    raise ValueError(f"{spec}: runs {dup} share a name; give them `_name`s")
  return sweep


def _overrides(run: dict) -> dict:
  return {k: v for k, v in run.items() if k != "_name"}


def status(workdir: pathlib.Path) -> str:
  if (workdir / "eval.json").exists():
    return "done"
  return "partial" if (workdir / "checkpoints").exists() else "pending"


def _flag_values(key: str, value) -> list[tuple[str, Any]]:
  if isinstance(value, dict):
    return [kv for k, v in value.items() for kv in _flag_values(f"{key}.{k}", v)]
  return [(key, value)]


def run_argv(sweep: Sweep, root: str, run: dict) -> tuple[str, list[str], list[str]]:
  """(name, `sr3 train` argv with --config.* flags, `sr3 eval` argv) of one run under ROOT."""
  name = run_name(run)
  workdir = f"{root.rstrip('/')}/{name}"
  flags = [
    f"--config.{k}={v if isinstance(v, str) else repr(v)}"
    for key, value in _overrides(run).items()
    for k, v in _flag_values(key, value)
  ]
  train_cmd = ["sr3", "train", "--config", sweep.config, "--workdir", workdir, *flags]
  ev = sweep.eval
  eval_cmd = (
    ["sr3", "eval", "--checkpoint", workdir]
    + ["--num-images", str(ev.get("num_images", 4)), "--samples", str(ev.get("samples", 2))]
    + (["--steps", str(ev["steps"])] if ev.get("steps") else [])
    + (["--image-size", str(ev["image_size"])] if ev.get("image_size") else [])
  )
  return name, train_cmd, eval_cmd


def commands(sweep: Sweep, root: str, tpu: str = "$TPU_NAME", zone: str = "$ZONE") -> list[str]:
  """Per run: a pod launch of `sr3 train --distributed` with --config.* flags, then `sr3 eval`."""
  out = []
  for run in sweep.runs:
    _, train_cmd, eval_cmd = run_argv(sweep, root, run)
    train_cmd = train_cmd + ["--distributed"]
    out.append(
      " ".join(
        ["tpu/pod.sh", "launch", "--name", tpu, "--zone", zone, "--"]
        + [shlex.quote(x) if not x.startswith("$") else x for x in train_cmd]
      )
    )
    out.append(" ".join(shlex.quote(x) for x in eval_cmd))
  return out


def run_local(sweep: Sweep, root: pathlib.Path, log=None) -> list[str]:
  """Trains and evaluates each unfinished run in turn; returns the names it ran."""
  log = log or sys.stderr
  ran = []
  for run in sweep.runs:
    name = run_name(run)
    workdir = root / name
    if status(workdir) == "done":
      print(f"sweep: {name} is done; skipped", file=log)
      continue
    print(f"sweep: {name}: training {sweep.config} with {_overrides(run)}", file=log)
    config = configs.load(sweep.config, _overrides(run))
    train.train_and_evaluate(config, workdir, log)
    ev = sweep.eval
    evaluate.evaluate(
      str(workdir),
      num_images=ev.get("num_images", 4),
      samples=ev.get("samples", 2),
      steps=ev.get("steps"),
      output=str(workdir),
      log=log,
      image_size=ev.get("image_size"),
    )
    ran.append(name)
  return ran


COLUMNS = (
  "run",
  "status",
  "step",
  "final_loss",
  "psnr_mean_of_k",
  "ssim_mean_of_k",
  "psnr_sample",
  "consistency_x1e5",
  "psnr_bicubic",
)


def gather(sweep: Sweep, root: pathlib.Path) -> list[dict]:
  """results.csv / results.md from every run's eval.json and metrics.jsonl; curves.png."""
  rows = []
  for run in sweep.runs:
    name = run_name(run)
    workdir = root / name
    row = {
      "run": name,
      "status": status(workdir),
      "overrides": json.dumps(_overrides(run), default=str),
    }
    losses = _metrics(workdir)
    if losses:
      row["final_loss"] = next((r["loss"] for r in reversed(losses) if "loss" in r), None)
    if row["status"] == "done":
      r = json.loads((workdir / "eval.json").read_text())
      m = r["metrics"]
      row.update(
        step=r["step"],
        psnr_mean_of_k=m["sr3_mean"]["psnr"]["mean"],
        ssim_mean_of_k=m["sr3_mean"]["ssim"]["mean"],
        psnr_sample=m["sr3_sample"]["psnr"]["mean"],
        consistency_x1e5=m["sr3_sample"]["consistency"]["mean"] * 1e5,
        psnr_bicubic=m["bicubic"]["psnr"]["mean"],
      )
    rows.append(row)
  root.mkdir(parents=True, exist_ok=True)
  with open(root / "results.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(COLUMNS) + ["overrides"])
    w.writeheader()
    for row in rows:
      w.writerow({k: row.get(k, "") for k in list(COLUMNS) + ["overrides"]})
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))
  lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  lines += ["| " + " | ".join(fmt(row.get(k)) for k in COLUMNS) + " |" for row in rows]
  (root / "results.md").write_text(f"sweep over {sweep.config}\n\n" + "\n".join(lines) + "\n")
  plot(sweep, root)
  return rows


def _metrics(workdir: pathlib.Path) -> list[dict]:
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot(sweep: Sweep, root: pathlib.Path) -> pathlib.Path:
  """Training loss per run, and the periodic eval PSNR (SR3 and bicubic) where logged."""
  matplotlib.use("Agg")  # files only; no display
  fig, (ax_loss, ax_eval) = plt.subplots(1, 2, figsize=(11, 4))
  for run in sweep.runs:
    name = run_name(run)
    rows = _metrics(root / name)
    pts = [(r["step"], r["loss"]) for r in rows if "loss" in r and "step" in r]
    if pts:
      ax_loss.plot(*zip(*pts), label=name)
    ev = [(r["step"], r["eval/sr3_psnr"]) for r in rows if "eval/sr3_psnr" in r]
    if ev:
      ax_eval.plot(*zip(*ev), marker="o", label=name)
  ax_loss.set(xlabel="step", ylabel="training loss", title="loss")
  ax_eval.set(
    xlabel="step", ylabel="PSNR (dB)", title="held-out PSNR during training (train.sample_every)"
  )
  for ax in (ax_loss, ax_eval):
    if ax.lines:
      ax.legend(fontsize=7)
  fig.tight_layout()
  out = root / "curves.png"
  fig.savefig(out, dpi=100)
  plt.close(fig)
  return out


def main(
  spec: str,
  root: str,
  mode: str,
  tpu: str = "$TPU_NAME",
  zone: str = "$ZONE",
  log=None,
  pod: pods.PodOptions | None = None,
) -> int:
  log = log or sys.stderr
  sweep = load(spec)
  if mode == "launch-tpu":
    if not paths.is_remote(root):
      print(
        f"sr3 sweep: {root} is a local folder; TPU workers write to a bucket (--workdir gs://BUCKET/ROOT)",
        file=log,
      )
    root = paths.resolve(root)
    runs = [
      (*run_argv(sweep, root, run), configs.load(sweep.config, _overrides(run)).train.num_steps)
      for run in sweep.runs
    ]
    attempts = pods.launch_tpu(runs, root, pod, log)
    if pod.dry_run:
      return 0
    for name, n in attempts.items():
      print(f"sweep: {name}: {n} launch(es)", file=log)
    if not paths.is_remote(root):
      gather(sweep, pathlib.Path(root))
      print(pathlib.Path(root) / "results.md")
    return 0
  if mode == "print-commands":
    if not paths.is_remote(root):
      print(
        f"sr3 sweep: {root} is a local folder; pod workers write to a bucket (--workdir gs://BUCKET/ROOT)",
        file=log,
      )
    for line in commands(sweep, root, tpu, zone):
      print(line)
    return 0
  root_path = pathlib.Path(paths.resolve(root))
  if mode == "dry-run":
    for run in sweep.runs:
      print(
        f"{run_name(run)}\t{status(root_path / run_name(run))}\t{json.dumps(_overrides(run), default=str)}"
      )
    return 0
  run_local(sweep, root_path, log)
  gather(sweep, root_path)
  print(root_path / "results.md")
  return 0
