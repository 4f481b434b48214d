"""Independent vs joint fine-tuning of the runlocal face cascade (8→16→32→64, embedded photographs),
and the cascade trained without conditioning augmentation.

Trains the four stages (and, as the CDM control, the SR stages again with `augment=False`),
fine-tunes sr32+sr64 from them in four arms of the same length, then runs `sr3 cascade
--propagation --lpips` for the stages alone, the control and every arm over several seeds, and
prints the README's two tables (means over seeds):

  python experiments/joint_finetune.py --root runs/joint_result            # everything (~1 h, 2 cores)
  python experiments/joint_finetune.py --root runs/joint_result --summarize  # the tables only

Arms: indep (joint.feed=False, joint.weight=0: each stage fine-tuned alone on its own pairs),
stop (the lower stage's sample feeds the upper, inter-stage term, gradient stopped), shared
(stop + shared hierarchical noise), unroll (gradient through the sampler steps).
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

C = "experiments/configs/cascade_faces_16_32_64_128.py"
ARMS = {
  "indep": ["--config.joint.feed=False", "--config.joint.weight=0"],
  "stop": [],
  "shared": ["--config.joint.shared_noise=True"],
  "unroll": ["--config.joint.grad=unroll"],
}
STAGES = {"base16": 10, "sr32": 2000, "sr64": 2000, "sr128": 1200}  # training steps
ENV = {"JAX_PLATFORMS": "cpu"}


def _run(cmd: list[str], log: pathlib.Path) -> float:
  t = time.time()
  with open(log, "w") as f:
    done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=os.environ | ENV)
  if done.returncode:
    sys.exit(f"{' '.join(cmd)} failed: see {log}")
  return time.time() - t


def train(sr3: list[str], workdir: pathlib.Path, steps: int, args: list[str]) -> None:
  if (workdir.parent / f"{workdir.name}.done").exists():
    return
  cmd = [*sr3, "train", "--workdir", str(workdir), *args, f"--config.train.num_steps={steps}"]
  s = _run(cmd, workdir.parent / f"{workdir.name}.log")
  (workdir.parent / f"{workdir.name}.done").write_text(f"{s:.0f}\n")
  print(f"{workdir}: {steps} steps, {s:.0f} s", flush=True)


def propagate(sr3: list[str], root: pathlib.Path, label: str, seed: int, steps: int) -> None:
  out = root / f"prop{steps}" / f"{label}_{seed}"
  if (out / "propagation.json").exists():
    return
  spec = f"{C}:runlocal,steps={steps}"
  spec += {"base": "", "noaug": ",augment=False"}.get(label, ",use_joint=sr32+sr64")
  stages = root / label if label in ("base", "noaug") else root / f"root_{label}"
  if label not in ("base", "noaug"):  # the arm's joint run beside the stages it did not tune
    stages.mkdir(exist_ok=True)
    for name in STAGES:
      (stages / name).unlink(missing_ok=True)
      (stages / name).symlink_to((root / "base" / name).resolve())
    link = stages / "joint_sr32_sr64"
    link.unlink(missing_ok=True)
    link.symlink_to((root / "arms" / label).resolve())
  cmd = [*sr3, "cascade", "--config", spec, "--workdir", str(stages), "--propagation", "--lpips"]
  cmd += ["--seed", str(seed), "--output", str(out)]
  out.parent.mkdir(exist_ok=True)
  _run(cmd, out.parent / f"{label}_{seed}.log")
  print(f"{out} done", flush=True)


def summarize(root: pathlib.Path, seeds: list[int], steps: int) -> str:
  """Means over seeds of the with-augmentation run; the final stage's PSNR and cascade
  consistency also as differences from `indep` on the same seed (same random numbers)."""
  reps = {}
  for label in ["base", *ARMS]:
    runs = [root / f"prop{steps}" / f"{label}_{s}" / "propagation.json" for s in seeds]
    if all(p.exists() for p in runs):
      reps[label] = [json.loads(p.read_text())["with_augmentation"] for p in runs]

  def values(label, stage, key, fed="fed_cascade"):
    return [r[stage][fed][key] if fed else r[stage][key] for r in reps[label]]

  def paired(label, key, fed, better):
    if "indep" not in reps or label == "indep":
      return ""
    d = [
      a - b for a, b in zip(values(label, "sr128", key, fed), values("indep", "sr128", key, fed))
    ]
    wins = sum(better(x) for x in d)
    return f" ({statistics.mean(d):+.3g}, {wins}/{len(d)} better)"

  rows = []
  for label in reps:
    done = root / "arms" / f"{label}.done"
    secs = float(done.read_text() or 0) if done.exists() else None
    psnr = values(label, "sr128", "psnr")
    cell = [
      f"{statistics.mean(values(label, 'sr64', 'psnr')):.2f} / "
      f"{statistics.mean(values(label, 'sr64', 'ssim')):.3f}",
      f"{statistics.mean(psnr):.2f} ± {statistics.stdev(psnr) if len(psnr) > 1 else 0:.2f}"
      + paired(label, "psnr", "fed_cascade", lambda x: x > 0),
      f"{statistics.mean(values(label, 'sr128', 'ssim')):.3f}",
      f"{statistics.mean(values(label, 'sr128', 'lpips')):.3f}",
      f"{statistics.mean(values(label, 'sr128', 'cascade_consistency', None)):.3f}"
      + paired(label, "cascade_consistency", None, lambda x: x < 0),
      f"{statistics.mean(values(label, 'sr64', 'inherited_psnr', None)):+.2f}",
      f"{secs:.0f} s" if secs else "—",
    ]
    rows.append(f"| {label} | " + " | ".join(cell) + " |")
  head = (
    "| arm | sr64 chained PSNR / SSIM | final 64² PSNR (vs indep) | final SSIM | final LPIPS | "
    "cascade consistency (vs indep) | sr64 PSNR inherited | fine-tuning |\n|" + "---|" * 8
  )
  return head + "\n" + "\n".join(rows)


def augmentation(root: pathlib.Path, seeds: list[int], steps: int) -> str:
  """The CDM comparison: each SR stage fed the truth and fed the cascade, for stages trained
  with conditioning augmentation (sampled with it and at level 0) and for stages trained
  without; means over seeds."""
  arms = [
    ("trained with augmentation, sampled with it", "base", "with_augmentation"),
    ("trained with augmentation, sampled at level 0", "base", "without_augmentation"),
    ("trained without augmentation", "noaug", "with_augmentation"),
  ]
  rows = []
  for title, label, run in arms:
    runs = [root / f"prop{steps}" / f"{label}_{s}" / "propagation.json" for s in seeds]
    if not all(p.exists() for p in runs):
      continue
    reps = [json.loads(p.read_text())[run] for p in runs]

    def m(stage, fed, key):
      return statistics.mean(r[stage][fed][key] if fed else r[stage][key] for r in reps)

    cells = []
    for stage in ("sr64", "sr128"):
      truth, chain = m(stage, "fed_truth", "psnr"), m(stage, "fed_cascade", "psnr")
      cells += [f"{truth:.2f}", f"{chain:.2f}", f"{truth - chain:+.2f}"]
    cells.append(f"{m('sr128', None, 'cascade_consistency'):.3f}")
    rows.append(f"| {title} | " + " | ".join(cells) + " |")
  head = (
    "| stages | sr64 fed truth | sr64 fed cascade | sr64 inherited | final fed truth | "
    "final fed cascade | final inherited | cascade consistency |\n|" + "---|" * 8
  )
  return head + "\n" + "\n".join(rows)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--root", required=True, help="folder for every run and report")
  p.add_argument("--steps", type=int, default=600, help="fine-tuning steps per arm")
  p.add_argument("--seeds", default="0,1,2", help="sampling seeds of the propagation runs")
  p.add_argument("--sample-steps", type=int, default=50, help="each stage's sampling steps")
  p.add_argument("--summarize", action="store_true", help="print the table of finished runs only")
  a = p.parse_args()
  root, seeds = pathlib.Path(a.root), [int(s) for s in a.seeds.split(",")]
  sr3 = [sys.executable, "-m", "sr3_jax"]  # this interpreter's sr3
  if not a.summarize:
    (root / "base").mkdir(parents=True, exist_ok=True)
    (root / "arms").mkdir(exist_ok=True)
    for name, steps in STAGES.items():
      train(sr3, root / "base" / name, steps, ["--config", f"{C}:stage={name},runlocal"])
    for name, steps in STAGES.items():  # the control: no conditioning augmentation
      if name == "base16":  # the base has none either way
        (root / "noaug").mkdir(exist_ok=True)
        link = root / "noaug" / name
        link.unlink(missing_ok=True)
        link.symlink_to((root / "base" / name).resolve())
        continue
      spec = f"{C}:stage={name},runlocal,augment=False"
      train(sr3, root / "noaug" / name, steps, ["--config", spec])
    for arm, extra in ARMS.items():
      joint = ["--config", f"{C}:joint=sr32+sr64,runlocal"]
      joint += [f"--config.joint.init_root={(root / 'base').resolve()}", *extra]
      train(sr3, root / "arms" / arm, a.steps, joint)
    for s in seeds:
      for label in ["base", "noaug", *ARMS]:
        propagate(sr3, root, label, s, a.sample_steps)
  print(summarize(root, seeds, a.sample_steps))
  print()
  print(augmentation(root, seeds, a.sample_steps))


if __name__ == "__main__":
  main()
