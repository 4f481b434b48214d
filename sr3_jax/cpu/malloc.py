"""glibc malloc settings for XLA's CPU runtime: keep freed memory in the process for the next step.

XLA's CPU runtime allocates each execution's temporaries afresh (several GB per train step of the
reference net). With glibc's default settings, blocks that large come from mmap (always so from a
worker thread's arena, which cannot hold a block above 64 MB), go back to the kernel when freed, and
every page faults in zero-filled again on the next step: ~800,000 minor faults per step of the
reference net on a 2-core CPU, whose step these settings make 1.16–1.30× faster (docs/cpu_performance.md).
Three mallopt(3) settings keep that memory instead:

- M_ARENA_MAX = 1: every thread allocates from the main arena, which grows with brk and has no
  size limit on a block;
- M_MMAP_MAX = 0: no block is mmap'ed on its own;
- M_TRIM_THRESHOLD = SIZE_MAX: freed memory at the top of the heap is never handed back.

Costs: freed memory stays in the process, and the heap grows until it holds every layout the steps
need (a step that starts before the last one's temporaries are freed takes new memory once: 6.5
then 9.8 GB for the reference net, where glibc's defaults peak at 7.2 GB); compilation, whose
threads now share one arena, takes longer: 37–50% with glibc's default thread caches, 13–19% with
the deeper ones below. A thread binds to an arena at its first malloc, so these only take effect when set
before JAX starts its backend: `sr3` does it first thing; a script calls `keep_freed_memory()`
before any JAX computation.

SR3_MALLOC (environment): `auto` (default: keep, where glibc's malloc is in use and JAX will run on
the CPU, i.e. JAX_PLATFORMS names only cpu, or no accelerator plugin is installed and libtpu, if
installed, finds no TPU chips), `keep` (whatever
the backend) or `system` (leave malloc as it is).

Deeper per-thread caches (opt-in). With one arena, the compiler's threads queue for its lock; each
thread's cache of freed small blocks (tcache, 7 per size by default) is the one path that skips the
lock. glibc reads its depth only from the environment at process start, so no process can set it
for itself: starting `sr3` as `GLIBC_TUNABLES=glibc.malloc.tcache_count=1000 sr3 …` takes half or
more of the compile time the single arena adds (docs/cpu_performance.md). Far deeper caches hold freed memory
per thread (65535 per size doubled the reference train step's peak resident memory).
"""

from __future__ import annotations

import ctypes
import glob
import importlib.metadata
import importlib.util
import os
import pkgutil
import platform
import sys

# mallopt(3) parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))  # -1: SIZE_MAX as size_t
KEPT = "heap kept: arena_max=1 mmap_max=0 trim_threshold=inf"
MODES = ("auto", "keep", "system")
_applied = False


def applied() -> bool:
  """Whether this process's glibc malloc was told to keep freed memory."""
  return _applied


def will_run_on_cpu(environ=None) -> bool:
  """Whether JAX, once started, will run on the CPU only: JAX_PLATFORMS names only cpu, or it is
  unset and no PJRT plugin (CUDA, ROCm, ...) or libtpu is installed. Starts nothing."""
  environ = os.environ if environ is None else environ
  platforms = [p.strip() for p in environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
  if platforms:
    return all(p == "cpu" for p in platforms)
  if list(importlib.metadata.entry_points(group="jax_plugins")):
    return False
  spec = importlib.util.find_spec("jax_plugins")
  if spec is not None and spec.submodule_search_locations is not None:
    if any(True for _ in pkgutil.iter_modules(spec.submodule_search_locations)):
      return False
  # libtpu alone is also the ahead-of-time TPU compiler (`sr3 aot`); a TPU VM has TPU chips as
  # /dev/accel* (v2–v5e) or VFIO devices (v5p, v6e).
  return importlib.util.find_spec("libtpu") is None or not _tpu_chips_present()


def _tpu_chips_present() -> bool:
  return bool(glob.glob("/dev/accel*")) or bool(glob.glob("/dev/vfio/[0-9]*"))


def _jax_started() -> bool:
  """Whether JAX has started a backend in this process (its threads then have their arenas)."""
  bridge = sys.modules.get("jax._src.xla_bridge")
  try:
    return bridge is not None and bool(bridge.backends_are_initialized())
  except AttributeError:
    return False


def _mode(environ) -> str:
  mode = environ.get("SR3_MALLOC", "auto").strip().lower() or "auto"
  if mode not in MODES:
    raise ValueError(f"SR3_MALLOC={mode!r}: expected one of {', '.join(MODES)}")
  return mode


def _why_not(mode: str, environ) -> str | None:
  """Why the heap is not to be kept under this mode and environment, in words; None where it is."""
  if mode == "system":
    return "malloc left as it is (SR3_MALLOC=system)"
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return "malloc left as it is (not glibc)"
  if mode == "auto" and not will_run_on_cpu(environ):
    return "malloc left as it is (JAX will run on an accelerator; SR3_MALLOC=keep to apply anyway)"
  return None


def keep_freed_memory(environ=None) -> str:
  """Apply SETTINGS per SR3_MALLOC (see the module docstring); returns what was done, in words.

  Call before JAX runs anything: a thread that has already allocated keeps its own arena.
  """
  global _applied
  environ = os.environ if environ is None else environ
  mode = _mode(environ)
  if _applied:
    return KEPT
  why_not = _why_not(mode, environ)
  if why_not is not None:
    return why_not
  if _jax_started():
    return "malloc left as it is (JAX had started its backend already: call this first)"
  try:
    mallopt = ctypes.CDLL("libc.so.6").mallopt
  except (OSError, AttributeError):
    return "malloc left as it is (no mallopt in libc.so.6)"
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  mallopt.restype = ctypes.c_int
  for param, value in SETTINGS:
    if mallopt(param, value) != 1:
      return f"malloc left partly as it is (mallopt({param}, {value}) refused)"
  _applied = True
  return KEPT
