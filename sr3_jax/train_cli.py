"""`sr3 train --config FILE.py[:arg] --workdir DIR [--config.a.b=v ...]` (absl flags + config_flags).

Several processes (a TPU pod, or local processes in tests) call `jax.distributed.initialize`
first: with no flags on TPU VMs, or with --coordinator, --num_processes and --process_id.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "experiment config: FILE.py[:arg]", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "folder of the run (local path or gs://)")
_COORD = flags.DEFINE_string(
  "coordinator", None, "host:port of process 0, for multi-process runs off TPU"
)
_NPROC = flags.DEFINE_integer("num_processes", None, "number of processes (with --coordinator)")
_PID = flags.DEFINE_integer("process_id", None, "this process's index (with --coordinator)")
_DIST = flags.DEFINE_bool(
  "distributed", False, "call jax.distributed.initialize() with no arguments (TPU pods)"
)
_CPU_DEVICES = flags.DEFINE_integer(
  "cpu_devices", 0, "simulate this many CPU devices (tests, laptops)"
)


def _main(argv) -> None:
  del argv
  from absl import logging

  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  import jax

  if _CPU_DEVICES.value:
    jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
  if _COORD.value:
    jax.distributed.initialize(
      coordinator_address=_COORD.value, num_processes=_NPROC.value, process_id=_PID.value
    )
  elif _DIST.value:
    jax.distributed.initialize()
  from sr3_jax import checkpoint, paths, train

  if _WORKDIR.value is None:
    raise app.UsageError("--workdir is required")
  workdir = paths.resolve(_WORKDIR.value)
  config = _CONFIG.value
  if config.data.get("data_dir"):
    config.data.data_dir = paths.resolve(config.data.data_dir)
  try:
    train.train_and_evaluate(config, workdir)
  except (ValueError, FloatingPointError, FileNotFoundError, checkpoint.SaveError) as e:
    print(f"sr3 train: {e}", file=sys.stderr)
    sys.exit(2)
  print(workdir)


def main(argv: list[str]) -> None:
  """argv as absl expects it: [program, flags...]."""
  flags.mark_flag_as_required("config")
  app.run(_main, argv=argv)
