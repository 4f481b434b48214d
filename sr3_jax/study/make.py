"""`sr3 study make`: a 2AFC study folder from a folder of real HR images and one folder per method.

The folder holds `study.json` (task, timing, and each rater's trials in order, sides already
randomised) and `images/<condition>/<name>.png`, one PNG per condition (`real`, each method,
`input` for the with-input task, `degraded` for the attention checks). Every trial pairs two
conditions of one image: a method against the real image (SR3's fool-rate trials), two methods
against each other, or the real image against a deliberately degraded copy (an attention check:
a rater who attends picks the real one).
"""

from __future__ import annotations

import itertools
import json
import pathlib
import re
import shutil

import numpy as np
from PIL import Image

from sr3_jax import images

FORMAT = 1
REAL, INPUT, DEGRADED = "real", "input", "degraded"
RESERVED = (REAL, INPUT, DEGRADED)
TASKS = ("with-input", "no-input")
QUESTIONS = {
  "no-input": "Which image, would you guess, was taken by a camera?",
  "with-input": "Which image is the better high-resolution version of the small image above?",
}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class StudyError(ValueError):
  """A study that cannot be made, served or analysed as asked."""


def _listing(folder: pathlib.Path, what: str) -> dict[str, pathlib.Path]:
  """{stem: path} of the images directly in `folder`."""
  if not folder.is_dir():
    raise StudyError(f"{what} folder {folder} does not exist; pass a folder of PNG/JPEG images")
  found = {}
  for p in sorted(folder.iterdir()):
    if p.suffix.lower() in images.IMAGE_SUFFIXES and p.is_file():
      if p.stem in found:
        raise StudyError(f"{what} folder {folder} has two images named {p.stem!r}: keep one")
      found[p.stem] = p
  if not found:
    raise StudyError(f"{what} folder {folder} holds no images (PNG/JPEG); fill it or fix the path")
  return found


def _check_names(real: dict, other: dict, what: str, folder: pathlib.Path) -> None:
  missing, extra = sorted(set(real) - set(other)), sorted(set(other) - set(real))
  if missing or extra:
    parts = []
    if missing:
      parts.append(
        f"missing {len(missing)} ({', '.join(missing[:5])}{'…' if len(missing) > 5 else ''})"
      )
    if extra:
      parts.append(f"extra {len(extra)} ({', '.join(extra[:5])}{'…' if len(extra) > 5 else ''})")
    raise StudyError(
      f"{what} folder {folder} does not hold the real folder's image names: {'; '.join(parts)}; "
      "every folder needs one image per real image, with the same file name"
    )


def degrade_for_check(rgb: np.ndarray, seed: int) -> np.ndarray:
  """A plainly worse copy: 8× bicubic down and up, plus Gaussian noise of σ = 20 (of 255)."""
  h, w = rgb.shape[:2]
  small = Image.fromarray(rgb).resize((max(1, w // 8), max(1, h // 8)), Image.BICUBIC)
  up = np.asarray(small.resize((w, h), Image.BICUBIC), np.float64)
  noise = np.random.default_rng(seed).normal(0.0, 20.0, up.shape)
  return np.clip(np.round(up + noise), 0, 255).astype(np.uint8)


def make(
  real: str,
  methods: dict[str, str],
  output: str,
  task: str = "no-input",
  input_dir: str | None = None,
  trials_per_rater: int = 20,
  raters: list[str] | None = None,
  checks: int | None = None,
  display_seconds: float = 3.0,
  method_pairs: bool = True,
  seed: int = 0,
) -> pathlib.Path:
  """Writes the study folder and returns the path of its study.json."""
  if task not in TASKS:
    raise StudyError(f"--task {task!r}: use one of {', '.join(TASKS)}")
  if not methods:
    raise StudyError("give at least one --method NAME=DIR")
  for name in methods:
    if not _NAME.match(name) or name in RESERVED:
      raise StudyError(
        f"method name {name!r}: use letters, digits, '_', '.', '-' and not {', '.join(RESERVED)}"
      )
  if task == "with-input" and not input_dir:
    raise StudyError("--task with-input shows the LR input beside each pair: give --input DIR")
  if display_seconds <= 0:
    raise StudyError(f"--display-seconds {display_seconds}: give a positive time")
  raters = raters or [f"r{i + 1}" for i in range(4)]
  for r in raters:
    if not _NAME.match(r):
      raise StudyError(f"rater id {r!r}: use letters, digits, '_', '.', '-'")
  if len(set(raters)) != len(raters):
    raise StudyError("rater ids must differ from one another")
  out = pathlib.Path(output)
  if (out / "study.json").exists():
    raise StudyError(f"{out} already holds a study; choose a new --output (answers are kept there)")

  real_files = _listing(pathlib.Path(real), "real")
  folders = {m: pathlib.Path(d) for m, d in methods.items()}
  if input_dir and task == "with-input":
    folders[INPUT] = pathlib.Path(input_dir)
  loaded = {REAL: {n: images.load_image(p).rgb for n, p in real_files.items()}}
  for cond, folder in folders.items():
    files = _listing(folder, "input" if cond == INPUT else f"method {cond!r}")
    _check_names(real_files, files, "input" if cond == INPUT else f"method {cond!r}", folder)
    loaded[cond] = {}
    for n, p in files.items():
      rgb = images.load_image(p).rgb
      if cond != INPUT and rgb.shape != loaded[REAL][n].shape:
        raise StudyError(
          f"{p} is {rgb.shape[1]}×{rgb.shape[0]} but the real {real_files[n]} is "
          f"{loaded[REAL][n].shape[1]}×{loaded[REAL][n].shape[0]}: a pair shows images of one size"
        )
      loaded[cond][n] = rgb
  names = sorted(real_files)
  loaded[DEGRADED] = {n: degrade_for_check(loaded[REAL][n], seed + i) for i, n in enumerate(names)}

  method_names = list(methods)
  kinds = [("fool", m, REAL) for m in method_names]
  if method_pairs:
    kinds += [("method", a, b) for a, b in itertools.combinations(method_names, 2)]
  pool = [(n, kind, a, b) for n in names for kind, a, b in kinds]
  if trials_per_rater < 1 or trials_per_rater > len(pool):
    raise StudyError(
      f"--trials-per-rater {trials_per_rater}: this study has {len(pool)} distinct pairs "
      f"({len(names)} images × {len(kinds)} pairings); ask for 1 to {len(pool)}"
    )
  checks = max(1, trials_per_rater // 10) if checks is None else checks
  if checks < 0:
    raise StudyError(f"--checks {checks}: give 0 or more attention checks per rater")

  plan = {}
  for ri, rater in enumerate(raters):
    rng = np.random.default_rng([seed, ri])
    chosen = [pool[i] for i in rng.permutation(len(pool))[:trials_per_rater]]
    chosen += [(names[i], "check", REAL, DEGRADED) for i in rng.integers(0, len(names), checks)]
    trials = []
    for t, j in enumerate(rng.permutation(len(chosen))):
      name, kind, a, b = chosen[j]
      left, right = (a, b) if rng.random() < 0.5 else (b, a)
      trials.append({"id": f"t{t:03d}", "name": name, "kind": kind, "left": left, "right": right})
    plan[rater] = trials

  tmp = out.with_name(out.name + ".partial")
  shutil.rmtree(tmp, ignore_errors=True)
  for cond, imgs in loaded.items():
    (tmp / "images" / cond).mkdir(parents=True, exist_ok=True)
    for n, rgb in imgs.items():
      images.save_png(tmp / "images" / cond / f"{n}.png", rgb)
  study = {
    "format": FORMAT,
    "task": task,
    "question": QUESTIONS[task],
    "display_seconds": float(display_seconds),
    "seed": seed,
    "methods": method_names,
    "names": names,
    "raters": plan,
  }
  (tmp / "study.json").write_text(json.dumps(study, indent=1) + "\n")
  out.mkdir(parents=True, exist_ok=True)
  for p in tmp.iterdir():
    shutil.move(str(p), out / p.name)
  tmp.rmdir()
  return out / "study.json"


def load(study_dir) -> dict:
  """study.json of a study folder, checked."""
  path = pathlib.Path(study_dir) / "study.json"
  if not path.is_file():
    raise StudyError(
      f"{study_dir} is not a study folder (no study.json); make one with sr3 study make"
    )
  try:
    study = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise StudyError(
      f"{path} is not valid JSON ({e}); remake the study with sr3 study make"
    ) from None
  if study.get("format") != FORMAT:
    raise StudyError(f"{path}: study format {study.get('format')!r}, this sr3_jax reads {FORMAT}")
  return study


def image_path(cond: str, name: str) -> str:
  """The path of a condition's image inside the study folder (and its URL on the server)."""
  return f"images/{cond}/{name}.png"
