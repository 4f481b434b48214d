"""The `sr3` command line. Logs and progress go to stderr; results (a path, a JSON line) to stdout."""
from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
  from sr3_jax import demo
  out = demo.run(args.output, steps=args.steps, runlocal=args.runlocal)
  print(out)
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="sr3", description="SR3-style diffusion super-resolution in JAX")
  sub = parser.add_subparsers(dest="command", required=True)

  p = sub.add_parser("demo", help="train on the embedded photographs and super-resolve the held-out ones")
  p.add_argument("--output", default="demo_out", help="folder for the grids and metrics.json")
  p.add_argument("--steps", type=int, default=0, help="training steps (default: the demo config's)")
  p.add_argument("--runlocal", action="store_true", help="a seconds-long smoke run")
  p.set_defaults(fn=_demo)

  args = parser.parse_args(argv)
  return args.fn(args)


if __name__ == "__main__":
  sys.exit(main())
