import os
import tempfile

# Tests run on the CPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The TPU compiler (tests/test_aot.py) is loaded by the test process and by `sr3 aot` subprocesses.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
# `sr3` subprocesses leave glibc's malloc as it is: with one arena, the many small compiles of the
# suite take longer (host_malloc; docs/cpu_performance.md). test_host_malloc and test_bench set it themselves.
os.environ.setdefault("SR3_MALLOC", "system")
# Identical programs compiled by several tests and their subprocesses are compiled once: JAX's
# persistent cache, shared through the environment with every `sr3` subprocess a test starts.
_CACHE = os.path.join(tempfile.gettempdir(), "sr3_jax_test_jit_cache")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory):
  """A workdir holding a 2-step run of the demo's runlocal config: checkpoints/2, config.json."""
  from sr3_jax import configs, train

  w = tmp_path_factory.mktemp("tiny_run")
  c = configs.load("experiments/configs/demo.py:runlocal")
  c.train.update(dict(batch_size=4, num_steps=2, log_every=1))
  train.train_and_evaluate(c, w)
  return w
