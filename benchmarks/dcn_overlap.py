"""The modelled multi-slice step at several DCN bandwidths, from a program `sr3 aot` already compiled.

`sr3 aot --num-slices N --hlo FILE --json` writes the scheduled program and its figures; this
re-reads both and prints, per DCN bandwidth per chip, the step that `hlo_schedule.dcn_step_model`
gives (the same model as the JSON's `dcn_step_seconds_model`, which is at one bandwidth), with no
new compile:

  .venv/bin/python benchmarks/dcn_overlap.py --hlo two_slice.hlo --aot two_slice.json \
      --gbps 25 50 100 200 [--weights cycles]

The model, and why it is one: sr3_jax/hlo_schedule.py.
"""

import argparse
import json
import pathlib
import sys

from sr3_jax import aot, bench, hlo_schedule


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--hlo", required=True, help="the program's HLO text (sr3 aot --hlo)")
  p.add_argument("--aot", required=True, help="its `sr3 aot --json` output (the last line is read)")
  p.add_argument("--gbps", type=float, nargs="+", default=[25.0, 50.0, 100.0, 200.0])
  p.add_argument(
    "--weights",
    choices=("roofline", "cycles"),
    default="roofline",
    help="op times: rooflines (the model's), or the compiler's estimated_cycles (a cross-check)",
  )
  args = p.parse_args(argv)
  lines = [ln for ln in pathlib.Path(args.aot).read_text().splitlines() if ln.startswith("{")]
  if not lines:
    sys.exit(f"dcn_overlap: {args.aot} holds no JSON line; give the file `sr3 aot --json` wrote")
  r = json.loads(lines[-1])
  if not r.get("optimal_seconds"):
    sys.exit(f"dcn_overlap: {args.aot} has no optimal_seconds; the model scales to the step's time")
  kind = r["device_kind"]
  peak = bench.peak_tflops(kind, "bfloat16") * 1e12
  bandwidth = aot.hbm_bytes(kind, aot.HBM_BYTES_PER_S)
  text = pathlib.Path(args.hlo).read_text()
  try:
    events = hlo_schedule.dcn_events(text, peak, bandwidth, args.weights)
  except ValueError as e:
    sys.exit(f"dcn_overlap: {args.hlo}: {e}; the model times straight-line programs only")
  sent = sum(e[2] for e in events if e[0] == "send")
  step, flops = r["optimal_seconds"], r["flops_per_step"]
  print(
    f"{r['config']} on {r['topology']} × {r['num_slices']}, batch {r['global_batch']}: chips' work "
    f"{step:.4g} s ({100 * flops / step / peak:.1f}% MFU bound), {sent / 1e6:.1f} MB/chip over DCN"
  )
  print("| DCN per chip | wire time | modelled step | not hidden | MFU bound |")
  print("|---|---|---|---|---|")
  for gbps in args.gbps:
    m = hlo_schedule.simulate(events, step, gbps * 1e9 / 8)
    print(
      f"| {gbps:g} Gbit/s | {1e3 * m.wire_seconds:.1f} ms | {m.step_seconds:.4f} s | "
      f"{1e3 * m.exposed_seconds:.1f} ms ({m.exposed_seconds / m.wire_seconds:.0%}) | "
      f"{100 * flops / m.step_seconds / peak:.1f}% |"
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
