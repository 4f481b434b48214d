"""One SPMD program on 8 simulated devices (own process: the device count is set before JAX starts)."""

import json
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent


def test_data_parallel_fsdp_and_fake_slices_match_one_device_and_restore_elsewhere(tmp_path):
  proc = subprocess.run(
    [sys.executable, str(HERE / "multidevice_check.py"), str(tmp_path / "ckpt")],
    capture_output=True,
    text=True,
    timeout=900,
    cwd=HERE.parent,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["dp_vs_single"] < 1e-5 and out["fsdp_vs_single"] < 1e-5
  assert out["dcn_data_vs_single"] < 1e-5 and out["dcn_fsdp_vs_single"] < 1e-5
  assert out["fsdp_sharded_leaves"] > 0 and out["kernel_shard"] != out["kernel"]
  assert out["restore_1"] == 0.0 and out["restore_4"] == 0.0
  assert out["cascade_8_vs_1"] < 2e-3
