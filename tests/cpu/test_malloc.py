"""host_malloc: glibc told to keep freed memory, so XLA's CPU temporaries do not fault in afresh.

The effect is checked by counting minor page faults (getrusage) in fresh processes; never by time.
"""

import json
import os
import subprocess
import sys

import jax
import pytest

from sr3_jax.cpu import malloc as host_malloc

# A jitted call with 64 MB temporaries inside it and a small output: with glibc's defaults the
# temporaries are mmap'ed on every call and fault in page by page (16,384 pages each); with the
# heap kept they are the same memory again.
_PROBE = r"""
import json, resource, sys
from sr3_jax.cpu import malloc as host_malloc
said = host_malloc.keep_freed_memory()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sum(jnp.sin(x) * 2.0, axis=0) + jnp.sum(jnp.cos(x)[::-1], axis=0))
x = jnp.ones((16, 1024, 1024), jnp.float32)
faults = []
for _ in range(int(sys.argv[1])):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"said": said, "applied": host_malloc.applied(), "faults": faults}))
"""


def _probe(mode: str, calls: int) -> dict:
  env = dict(os.environ, SR3_MALLOC=mode, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, "-c", _PROBE, str(calls)], env=env, capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not host_malloc.platform.libc_ver()[0] == "glibc", reason="glibc's malloc only")
def test_kept_heap_stops_the_page_faults_of_fresh_temporaries():
  system, auto = _probe("system", 10), _probe("auto", 40)
  assert not system["applied"] and "SR3_MALLOC=system" in system["said"]
  assert auto["applied"] and auto["said"] == host_malloc.KEPT
  assert min(system["faults"]) >= 16384  # every call: a 64 MB temporary, page by page
  # Kept: the heap grows over the first calls (a call can start before the last one's temporaries
  # are freed) until it holds every layout the calls need; from then on a call faults nothing.
  mean = lambda v: sum(v) / len(v)
  assert mean(auto["faults"]) < mean(system["faults"]) / 4
  assert sorted(auto["faults"])[len(auto["faults"]) // 2] < 1000


@pytest.mark.parametrize(
  "platforms,on_cpu",
  [("cpu", True), (" cpu , cpu", True), ("cuda", False), ("cpu,tpu", False), ("tpu", False)],
)
def test_jax_platforms_decides_where_jax_runs(platforms, on_cpu):
  assert host_malloc.will_run_on_cpu({"JAX_PLATFORMS": platforms}) is on_cpu


def test_without_jax_platforms_it_agrees_with_jax():
  code = (
    "from sr3_jax.cpu import malloc as host_malloc; import jax; "
    "print(host_malloc.will_run_on_cpu(), jax.default_backend() == 'cpu')"
  )
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  out = subprocess.run(
    [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
  )
  assert out.returncode == 0, out.stderr[-2000:]
  predicted, actual = out.stdout.split()
  assert predicted == actual


def test_a_bad_mode_is_named_with_the_choices():
  with pytest.raises(ValueError, match=r"SR3_MALLOC='fast'.*auto, keep, system"):
    host_malloc.keep_freed_memory({"SR3_MALLOC": "fast"})


def test_too_late_once_jax_has_started(monkeypatch):
  monkeypatch.setattr(host_malloc, "_applied", False)
  jax.devices()  # this test process's backend is up
  said = host_malloc.keep_freed_memory({"SR3_MALLOC": "keep", "JAX_PLATFORMS": "cpu"})
  assert "started its backend" in said and not host_malloc.applied()


def test_sr3_refuses_a_bad_mode_before_doing_anything(tmp_path):
  env = dict(os.environ, SR3_MALLOC="fast")
  proc = subprocess.run(
    [sys.executable, "-m", "sr3_jax", "bench", "--config", "missing.py"],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    cwd=tmp_path,
  )
  assert proc.returncode == 2 and "SR3_MALLOC='fast'" in proc.stderr
