import os
import tempfile

# Tests run on the CPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Identical programs compiled by several tests and their subprocesses are compiled once: JAX's
# persistent cache, shared through the environment with every `sr3` subprocess a test starts.
_CACHE = os.path.join(tempfile.gettempdir(), "sr3_jax_test_jit_cache")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
