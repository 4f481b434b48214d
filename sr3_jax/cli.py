"""The `sr3` command line. Logs and progress go to stderr; results (a path, a JSON line) to stdout."""
from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
  from sr3_jax import demo
  out = demo.run(args.output, steps=args.steps, runlocal=args.runlocal)
  print(out)
  return 0


def _bench(args) -> int:
  from sr3_jax import bench
  result = bench.run(args.config, what=args.what, batch=args.batch, iters=args.iters,
                     dtype=args.dtype, steps=args.steps, sampler=args.sampler)
  bench.report(result, args.json)
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="sr3", description="SR3-style diffusion super-resolution in JAX")
  sub = parser.add_subparsers(dest="command", required=True)

  p = sub.add_parser("demo", help="train on the embedded photographs and super-resolve the held-out ones")
  p.add_argument("--output", default="demo_out", help="folder for the grids and metrics.json")
  p.add_argument("--steps", type=int, default=0, help="training steps (default: the demo config's)")
  p.add_argument("--runlocal", action="store_true", help="a seconds-long smoke run")
  p.set_defaults(fn=_demo)

  p = sub.add_parser("bench", help="time the train step, a forward pass, a sampler or the loader")
  p.add_argument("--config", required=True, help="experiments/configs/FILE.py[:arg,...]")
  p.add_argument("--what", default="train", choices=("train", "sample", "forward", "data"))
  p.add_argument("--batch", type=int, default=None, help="global batch (default: the config's)")
  p.add_argument("--iters", type=int, default=5, help="timed iterations after one warm-up")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None, help="compute dtype")
  p.add_argument("--steps", type=int, default=None, help="sampling steps for --what sample")
  p.add_argument("--sampler", choices=("ddpm", "ddim", "dpmpp"), default=None)
  p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
  p.set_defaults(fn=_bench)

  args = parser.parse_args(argv)
  return args.fn(args)


if __name__ == "__main__":
  sys.exit(main())
