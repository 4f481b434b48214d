"""The TPU table: every paper config compiled ahead of time for v4, v5e, v5p and v6e with `sr3 aot`.

Each cell is one `sr3 aot … --json` subprocess, appended as one JSON line to --out as soon as it
ends, so the table survives an interrupted run and a rerun compiles only the cells it lacks:

- max:    the train step, `--max-batch --batch-multiple M` on the generation's 8-chip-name slice
          (v4-8 and v5p-8 are 4 chips, v5e-8 and v6e-8 are 8): the largest per-chip batch that fits;
          `--known --out` hands it the paper cell's compile there, so the search starts above it;
- paper:  the train step at the paper's global batch of 256 on the smallest slice that holds it
          (slices tried in order; a refusal costs little, the compiler stops at memory assignment);
- sample: the 100-step sampler at 16 images per chip, `--what sample --steps 100 --batch B`
          (8, 4, 2, 1 per chip in turn where the chip cannot hold 16); its largest batch is
          estimated from memory's affine fit (marked "est."), not searched.

  .venv/bin/python benchmarks/tpu_table.py --out tpu_table.jsonl [--configs 16_128,64_256]
      [--chips v5p,v4] [--cells paper,max,sample] [--multiple 8]   (--configs takes files too)
      [--start v4:4x4x4]   (paper cells skip the slices a run before this one saw refused)
  .venv/bin/python benchmarks/tpu_table.py --out tpu_table.jsonl --markdown

--compiler-option KEY=VALUE (repeatable) goes to every `sr3 aot`; such cells are kept apart from
the default compile's in --out. `--compiler-option xla_tpu_sliced_prefetch_max_slices=0` gives
v4, v5e and v6e train steps a time (BENCHMARKS.md, "Ops the TPU cost model cannot price").

A paper config's train step takes 15–30 minutes to compile on a 2-core host; the whole table is
about 16 such compiles per cell kind, more with the max-batch searches.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

CONFIGS = {
  "16_128": "experiments/configs/sr3_faces_16_128.py",
  "64_256": "experiments/configs/sr3_imagenet_64_256.py",
  "64_512": "experiments/configs/sr3_64_512.py",
  "256_1024": "experiments/configs/sr3_256_1024.py",
}
# Slices of each generation from its "-8" name upwards; the first is the table's slice.
SLICES = {
  "v4": ("v4:2x2x1", "v4:2x2x2", "v4:2x2x4", "v4:2x4x4", "v4:4x4x4", "v4:4x4x8"),
  "v5e": ("v5e:2x4", "v5e:4x4", "v5e:4x8", "v5e:8x8", "v5e:8x16"),
  "v5p": ("v5p:2x2x1", "v5p:2x2x2", "v5p:2x2x4", "v5p:2x4x4", "v5p:4x4x4"),
  "v6e": ("v6e:2x4", "v6e:4x4", "v6e:4x8", "v6e:8x8", "v6e:8x16"),
}
PAPER_BATCH = 256
SAMPLE_PER_CHIP = 16
GIB = 1024**3


def run_aot(args: list[str], timeout: int) -> dict:
  """One `sr3 aot` subprocess: its JSON, or the error it printed."""
  cmd = [sys.executable, "-m", "sr3_jax", "aot", *args, "--json"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", ALLOW_MULTIPLE_LIBTPU_LOAD="1")
  t = time.perf_counter()
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
  except subprocess.TimeoutExpired:
    return dict(timed_out=True, wall_s=time.perf_counter() - t)
  wall = time.perf_counter() - t
  lines = proc.stdout.strip().splitlines()
  if proc.returncode == 0 and lines:
    return dict(json.loads(lines[-1]), wall_s=wall, command="sr3 aot " + " ".join(args))
  if proc.returncode < 0:  # killed (SIGKILL: most often the host's out-of-memory killer)
    return dict(killed=-proc.returncode, wall_s=wall)
  err = [x for x in proc.stderr.strip().splitlines() if x.startswith("sr3 aot:")]
  return dict(error=(err or proc.stderr.strip().splitlines()[-1:] or ["?"])[-1], wall_s=wall)


def options_key(options: dict) -> str:
  return json.dumps(options or {}, sort_keys=True)


def cells(configs, chips, kinds, multiple, out, options=(), start=()):
  """((config, chip, kind), [sr3 aot arguments to try in order]) for every cell; a paper cell
  starts at its generation's slice in `start`, if any (the slices below it were refused before)."""
  extra = [a for pair in options for a in ("--compiler-option", pair)]
  for name in configs:
    for chip in chips:
      first = SLICES[chip][0]
      chips_in_slice = 4 if chip in ("v4", "v5p") else 8
      for kind in kinds:
        base = ["--config", CONFIGS.get(name, name), *extra]
        if kind == "max":
          search = ["--max-batch", "--batch-multiple", str(multiple)]
          search += ["--known", str(out)] if out.exists() else []
          tries = [[*base, "--topology", first, *search]]
        elif kind == "paper":
          slices = SLICES[chip]
          slices = next((slices[slices.index(s) :] for s in start if s in slices), slices)
          tries = [[*base, "--topology", s, "--batch", str(PAPER_BATCH)] for s in slices]
        else:
          sample = ["--what", "sample", "--steps", "100"]
          per_chip = [SAMPLE_PER_CHIP >> k for k in range(SAMPLE_PER_CHIP.bit_length())]
          tries = [
            [*base, "--topology", first, *sample, "--batch", str(b * chips_in_slice)]
            for b in per_chip  # 16 per chip, halved while the chip cannot hold it
          ]
        yield (name, chip, kind), tries


def measure(args) -> None:
  out = pathlib.Path(args.out)
  from sr3_jax.aot import compiler_options  # the parse `sr3 aot` records, so reruns match it

  options = compiler_options(args.compiler_option)
  done = {  # a cell whose largest slice compiled but did not fit is tried again (with --start)
    (tuple(r["cell"]), options_key(r.get("compiler_options")))
    for r in read(out)
    if r.get("fits") is not False
  }
  todo = cells(
    args.configs, args.chips, args.cells, args.multiple, out, args.compiler_option, args.start
  )
  for cell, tries in todo:
    if (cell, options_key(options)) in done:
      continue
    for aot_args in tries:  # the paper cell moves to the next slice while the batch does not fit
      print(f"{cell}: sr3 aot {' '.join(aot_args)}", file=sys.stderr, flush=True)
      r = run_aot(aot_args, args.timeout)
      refused = "does not fit" in r.get("error", "")
      if not refused and r.get("fits") is not False:  # compiled, yet over the usable HBM: next
        break
    if r.get("timed_out"):  # not recorded: a rerun with a larger --timeout compiles it again
      print(f"{cell}: no answer within --timeout {args.timeout} s; skipped", file=sys.stderr)
      continue
    if r.get("killed"):  # not recorded either: a rerun on a quieter host compiles it again
      print(
        f"{cell}: the compile was killed by signal {r['killed']} after {r['wall_s']:.0f} s "
        "(9: most often out of host memory; a paper config's compile needs about 12 GB); skipped",
        file=sys.stderr,
      )
      continue
    with out.open("a") as f:
      f.write(json.dumps(dict(r, cell=list(cell), compiler_options=options)) + "\n")
    print(f"{cell}: {r.get('error') or summary(r)}", file=sys.stderr, flush=True)


def read(path: pathlib.Path) -> list[dict]:
  return (
    [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
  )


def summary(r: dict) -> str:
  mfu = "—" if r.get("mfu_bound") is None else f"{100 * r['mfu_bound']:.1f}%"
  return (
    f"{r['topology']} ({r['devices']} chips), {r['per_device_batch']:g}/chip: "
    f"{r['peak_hbm_bytes'] / GIB:.1f} of {r['hbm_per_device_bytes'] / GIB:.0f} GiB, MFU bound "
    f"{mfu}, compile {r['compile_s']:.0f} s"
  )


def markdown(rows: list[dict]) -> str:
  head = {
    "max": "largest train batch per chip (bf16)",
    "paper": f"train step at global batch {PAPER_BATCH}, smallest slice that holds it",
    "sample": "100-step sampler",
  }
  lines = [
    "| config | chip | cell | slice (chips) | batch per chip | peak HBM per chip | MFU bound "
    "| images/s per chip (bound) | compile |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    name, chip, kind = r["cell"]
    if r.get("compiler_options"):  # not the default compile: say which
      kind_note = ", ".join(f"{k}={v}" for k, v in r["compiler_options"].items())
      name = f"{name} ({kind_note})"
    if "error" in r:
      lines.append(f"| {name} | {chip} | {head[kind]} | — | — | {r['error']} | — | — | — |")
      continue
    mfu = "—" if r.get("mfu_bound") is None else f"{100 * r['mfu_bound']:.1f}%"
    per_chip = f"{r['per_device_batch']:g}"
    if kind == "sample":  # the batch that memory's affine fit through this program would allow
      slope = (r["peak_hbm_bytes"] - r["argument_bytes"]) / r["per_device_batch"]
      est = (r["hbm_per_device_bytes"] - r["argument_bytes"]) / slope
      per_chip += f" (largest ≈ {est:.0f}, est.)"
    over = ", over the usable HBM: no slice tried holds it" if r.get("fits") is False else ""
    rate = "—"
    if r.get("optimal_seconds"):
      rate = f"{r['per_device_batch'] / r['optimal_seconds']:.3g}"
    lines.append(
      f"| {name} | {chip} | {head[kind]} | {r['topology']} ({r['devices']}) | {per_chip} | "
      f"{r['peak_hbm_bytes'] / GIB:.1f} of {r['hbm_per_device_bytes'] / GIB:.0f} GiB{over} | {mfu} | "
      f"{rate} | {r['compile_s']:.0f} s |"
    )
  return "\n".join(lines)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--out", required=True, help="JSON lines, one per cell; appended to")
  ap.add_argument("--configs", default=",".join(CONFIGS))
  ap.add_argument("--chips", default=",".join(SLICES))
  ap.add_argument("--cells", default="paper,max,sample", help="in this order, per config and chip")
  ap.add_argument("--multiple", type=int, default=8, help="--max-batch searches multiples of it")
  ap.add_argument("--timeout", type=int, default=6 * 3600, help="seconds per sr3 aot")
  ap.add_argument(
    "--start",
    default="",
    metavar="SLICE,…",
    help="paper cells start at these slices, e.g. v4:4x4x4 (the smaller ones were refused before)",
  )
  ap.add_argument("--markdown", action="store_true", help="print the table from --out and stop")
  ap.add_argument(
    "--compiler-option", action="append", default=[], metavar="KEY=VALUE", help="to sr3 aot"
  )
  args = ap.parse_args()
  if args.markdown:
    print(markdown(read(pathlib.Path(args.out))))
    return
  args.configs, args.chips, args.cells = (
    v.split(",") for v in (args.configs, args.chips, args.cells)
  )
  args.start = [s for s in args.start.split(",") if s]
  for s in args.start:
    if not any(s in slices for slices in SLICES.values()):
      ap.error(
        f"--start {s}: not a slice this table tries; one of {', '.join(sum(SLICES.values(), ()))}"
      )
  for name in args.configs:
    if name not in CONFIGS and not pathlib.Path(name.partition(":")[0]).exists():
      ap.error(f"--configs {name}: a config file, or one of {', '.join(CONFIGS)}")
  for chip in args.chips:
    if chip not in SLICES:
      ap.error(f"--chips {chip}: choose from {', '.join(SLICES)}")
  measure(args)


if __name__ == "__main__":
  main()
