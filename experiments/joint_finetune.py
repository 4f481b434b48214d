"""Independent vs joint fine-tuning of the runlocal face cascade (8→16→32→64, embedded photographs).

Trains the four stages, fine-tunes sr32+sr64 from them in four arms of the same length, then runs
`sr3 cascade --propagation --lpips` for the stages alone and for every arm over several seeds,
and prints the README's table (means over seeds, with-augmentation run, chained outputs):

  python experiments/joint_finetune.py --root runs/joint_result            # everything (~45 min, 2 cores)
  python experiments/joint_finetune.py --root runs/joint_result --summarize  # the table only

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


def train(sr3: str, workdir: pathlib.Path, steps: int, args: list[str]) -> None:
  if (workdir.parent / f"{workdir.name}.done").exists():
    return
  cmd = [sr3, "train", "--workdir", str(workdir), *args, f"--config.train.num_steps={steps}"]
  s = _run(cmd, workdir.parent / f"{workdir.name}.log")
  (workdir.parent / f"{workdir.name}.done").write_text(f"{s:.0f}\n")
  print(f"{workdir}: {steps} steps, {s:.0f} s", flush=True)


def propagate(sr3: str, root: pathlib.Path, label: str, seed: int, steps: int) -> None:
  out = root / f"prop{steps}" / f"{label}_{seed}"
  if (out / "propagation.json").exists():
    return
  spec = f"{C}:runlocal,steps={steps}" + ("" if label == "base" else ",use_joint=sr32+sr64")
  stages = root / "base" if label == "base" else root / f"root_{label}"
  if label != "base":  # the arm's joint run beside links to the stages it did not fine-tune
    stages.mkdir(exist_ok=True)
    for name in STAGES:
      (stages / name).unlink(missing_ok=True)
      (stages / name).symlink_to((root / "base" / name).resolve())
    link = stages / "joint_sr32_sr64"
    link.unlink(missing_ok=True)
    link.symlink_to((root / "arms" / label).resolve())
  cmd = [sr3, "cascade", "--config", spec, "--workdir", str(stages), "--propagation", "--lpips"]
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


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--root", required=True, help="folder for every run and report")
  p.add_argument("--steps", type=int, default=600, help="fine-tuning steps per arm")
  p.add_argument("--seeds", default="0,1,2", help="sampling seeds of the propagation runs")
  p.add_argument("--sample-steps", type=int, default=50, help="each stage's sampling steps")
  p.add_argument("--summarize", action="store_true", help="print the table of finished runs only")
  a = p.parse_args()
  root, seeds = pathlib.Path(a.root), [int(s) for s in a.seeds.split(",")]
  sr3 = str(pathlib.Path(sys.executable).with_name("sr3"))
  if not a.summarize:
    (root / "base").mkdir(parents=True, exist_ok=True)
    (root / "arms").mkdir(exist_ok=True)
    for name, steps in STAGES.items():
      train(sr3, root / "base" / name, steps, ["--config", f"{C}:stage={name},runlocal"])
    for arm, extra in ARMS.items():
      joint = ["--config", f"{C}:joint=sr32+sr64,runlocal"]
      joint += [f"--config.joint.init_root={(root / 'base').resolve()}", *extra]
      train(sr3, root / "arms" / arm, a.steps, joint)
    for s in seeds:
      for label in ["base", *ARMS]:
        propagate(sr3, root, label, s, a.sample_steps)
  print(summarize(root, seeds, a.sample_steps))


if __name__ == "__main__":
  main()
