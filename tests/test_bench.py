"""`sr3 bench --json` emits the documented fields (timings are never asserted)."""

import json
import os
import subprocess
import sys

import pytest

from sr3_jax import bench

FIELDS = {
  "what",
  "device_kind",
  "device_count",
  "params",
  "batch",
  "image_size",
  "compile_s",
  "step_s",
  "step_s_min",
  "step_s_max",
  "examples_per_s",
  "flops_per_step",
  "tflops_per_s",
  "mfu",
  "peak_memory_bytes",
  "dtype",
  "host_allocator",
}


def test_bench_json_fields():
  cmd = [
    sys.executable,
    "-m",
    "sr3_jax",
    "bench",
    "--config",
    "experiments/configs/bench_reference_16_128.py:runlocal",
    "--what",
    "forward",
    "--batch",
    "2",
    "--iters",
    "2",
    "--json",
  ]
  proc = subprocess.run(
    cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, SR3_MALLOC="auto")
  )  # sr3's default
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert FIELDS <= set(out)
  assert out["what"] == "forward" and out["batch"] == 2 and out["device_kind"] == "cpu"
  assert out["step_s_min"] <= out["step_s"] <= out["step_s_max"]
  assert out["flops_per_step"] > 0 and out["mfu"] is None  # no peak is defined for a CPU
  if out["host_allocator"].startswith("glibc"):  # sr3 keeps freed memory on a CPU-only JAX
    assert "heap kept" in out["host_allocator"]
    assert "tcache_count" not in out["host_allocator"]  # the environment as given: no restart


@pytest.mark.parametrize(
  "kind,dtype,peak",
  [
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989.0),
    ("NVIDIA H200", "float32", 494.0),
    ("TPU v5 lite", "bfloat16", 197.0),
    ("TPU v5p", "bfloat16", 459.0),
    ("TPU v4", "bfloat16", 275.0),
    ("TPU v6 lite", "bfloat16", 918.0),
    ("cpu", "float32", None),
  ],
)
def test_peak_table(kind, dtype, peak):
  assert bench.peak_tflops(kind, dtype) == peak


def test_train_flops_count_the_direct_convolutions():
  """The CPU kernels (im2col loops over row chunks, sub-pixel upsampling multiplies less) report
  the direct convolutions' count, that of XLA's."""
  spec = "experiments/configs/bench_reference_16_128.py:runlocal"
  runs = [
    bench.run(spec, "train", batch=2, iters=1, overrides={"model.conv_impl": impl})
    for impl in ("xla", "cpu")
  ]
  assert runs[0].flops_per_step > 0
  assert runs[1].flops_per_step == runs[0].flops_per_step


def test_flops_where_the_backend_cannot_analyse_a_lowering():
  """GPU and TPU plugins raise NotImplementedError for Lowered.cost_analysis: the CPU client counts."""
  import jax
  import jax.numpy as jnp

  lowered = jax.jit(lambda a, b: a @ b).lower(jnp.ones((64, 128)), jnp.ones((128, 32)))

  class PluginLowered:
    def cost_analysis(self):
      raise NotImplementedError("Lowered.cost_analysis not implemented on platform 'cuda'")

    def compiler_ir(self, dialect):
      return lowered.compiler_ir(dialect)

  assert bench._flops(lowered) == bench._flops(PluginLowered()) == 2 * 64 * 128 * 32


def test_host_allocator_names_a_preloaded_malloc_and_its_settings(monkeypatch):
  from sr3_jax.cpu import malloc as host_malloc

  monkeypatch.setattr(host_malloc, "_applied", False)
  jemalloc = "7f00-7f10 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n"
  plain = "7f00-7f10 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
  env = {"MALLOC_CONF": "dirty_decay_ms:-1", "HOME": "/root", "MIMALLOC_PURGE_DELAY": "-1"}
  assert bench.host_allocator(jemalloc, env) == "jemalloc MALLOC_CONF=dirty_decay_ms:-1"
  assert bench.host_allocator(plain, env) == "glibc"
  tuned = {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=1000"}
  assert bench.host_allocator(plain, tuned) == "glibc GLIBC_TUNABLES=glibc.malloc.tcache_count=1000"
  assert (
    bench.host_allocator(plain.replace("libc.so.6", "libmimalloc.so.3"), env)
    == "mimalloc MIMALLOC_PURGE_DELAY=-1"
  )
  mine = bench.host_allocator(None)  # this process, read from /proc
  assert mine is None or mine.split()[0] in {"glibc", *bench.ALLOCATORS}
  monkeypatch.setattr(host_malloc, "_applied", True)
  assert bench.host_allocator(plain, env) == f"glibc ({host_malloc.KEPT})"


def test_fid_feature_benchmark_reports_images_per_second():
  from sr3_jax import bench

  r = bench.run_fid(batch=4, iters=1)
  assert r.what == "fid" and r.batch == 4 and r.image_size == 299
  assert r.examples_per_s > 0 and r.step_s > 0 and r.params > 20_000_000  # 21.8M up to pool3


def test_latency_table_fields(capsys):
  from sr3_jax import cli

  rc = cli.main(
    ["bench", "--what", "latency", "--config", "experiments/configs/demo.py:runlocal",
     "--steps-list", "1,2", "--batches", "1,2", "--iters", "1", "--json"]
  )  # fmt: skip
  assert rc == 0
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert out["what"] == "latency" and out["lr_size"] * 4 == out["hr_size"] == 32
  assert out["best_batch"] in (1, 2)
  got = {(r["batch"], r["steps"]) for r in out["rows"]}
  # the batch search at 1 step, then batch 1 and the best batch at every step count
  assert {(1, 1), (2, 1), (1, 2), (out["best_batch"], 2)} == got
  for r in out["rows"]:
    assert r["ms_per_frame"] * r["batch"] == pytest.approx(r["ms_per_call"])
  assert (
    cli.main(
      ["bench", "--what", "latency", "--config", "experiments/configs/demo.py", "--steps-list", "0"]
    )
    == 2
  )
