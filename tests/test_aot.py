"""`sr3 aot`: train steps and samplers compiled by the TPU compiler on this CPU host (no TPU)."""

import json
import subprocess
import sys

import pytest

from sr3_jax import aot, configs

CFG = "experiments/configs/demo.py:runlocal"


def _tpu_compiler_or_skip():
  try:
    return aot.tpu_devices("v5p:2x2x1")
  except ValueError as e:
    pytest.skip(f"the TPU compiler cannot start here: {e}")


@pytest.fixture(scope="module")
def v5p_train():
  _tpu_compiler_or_skip()
  c = configs.load(CFG)
  c.train.batch_size = 8
  return aot.compile_for(c, "v5p:2x2x1", what="train", config_spec=CFG)


def test_train_step_compiles_for_four_v5p_chips(v5p_train):
  r = v5p_train
  assert r.device_kind.startswith("TPU v5") and r.devices == 4  # the TPU compiler's program
  assert r.mesh == {"data": 4, "fsdp": 1} and r.per_device_batch == 2
  assert r.hbm_per_device_bytes == 95 * aot.GIB and r.fits
  # The state is replicated: every chip holds params, EMA and two Adam moments (4 × 4 bytes each).
  params = r.params
  assert r.argument_bytes >= 16 * params and r.peak_hbm_bytes < r.hbm_per_device_bytes
  assert r.peak_hbm_bytes == r.argument_bytes + r.output_bytes + r.temp_bytes - r.alias_bytes
  assert r.alias_bytes > 0  # the donated state is aliased to the new one
  assert r.flops_per_step > 0 and r.optimal_seconds > 0
  peak = 459e12  # v5p dense bf16
  assert r.mfu_bound == pytest.approx(r.flops_per_step / r.optimal_seconds / peak)
  assert 0 < r.mfu_bound <= 1


def test_sampler_and_the_cli_json():
  _tpu_compiler_or_skip()
  cmd = [sys.executable, "-m", "sr3_jax", "aot", "--config", CFG, "--topology", "v5p:2x2x1"]
  proc = subprocess.run(
    cmd + ["--what", "sample", "--steps", "3", "--batch", "4", "--json"],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["what"] == "sample" and out["sampling_steps"] == 3 and out["devices"] == 4
  assert out["device_kind"].startswith("TPU v5") and out["global_batch"] == 4
  for key in ("peak_hbm_bytes", "flops_per_step", "optimal_seconds", "mfu_bound", "compile_s"):
    assert out[key] > 0, key
  bad = subprocess.run(cmd[:-1] + ["v9z:1x1"], capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and "--topology v9z:1x1" in bad.stderr


def test_a_batch_the_chips_cannot_split_is_named():
  _tpu_compiler_or_skip()
  c = configs.load(CFG)
  c.train.batch_size = 6
  with pytest.raises(ValueError, match=r"v5p:2x2x1 .*4 chips.*batch_size=6"):
    aot.compile_for(c, "v5p:2x2x1")


def test_two_slices_put_the_data_axis_over_dcn():
  """v5p:2x2x1 × 2 slices: the mesh is built by create_hybrid_device_mesh with each slice a
  contiguous block of the 'data' axis (only the DCN share crosses slices), and the train step
  compiles for the 8 chips."""
  _tpu_compiler_or_skip()
  from sr3_jax import sharding

  c = configs.load(CFG)
  devices = aot.tpu_devices("v5p:2x2x1", num_slices=2)
  mesh = sharding.make_mesh(c, devices)
  assert dict(mesh.shape) == {"data": 8, "fsdp": 1}
  assert [d.slice_index for d in mesh.devices[:, 0]] == [0, 0, 0, 0, 1, 1, 1, 1]
  c.mesh.update(dict(data=2, fsdp=2, dcn_data=1, dcn_fsdp=2))  # FSDP across the two slices
  mesh = sharding.make_mesh(c, devices)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4}
  assert [[d.slice_index for d in row] for row in mesh.devices] == [[0, 0, 1, 1]] * 2
  c.mesh.update(dict(data=-1, fsdp=1, dcn_data=3, dcn_fsdp=1))
  with pytest.raises(ValueError, match=r"mesh.dcn_data=3 × mesh.dcn_fsdp=1 = 3, but there are 2"):
    sharding.make_mesh(c, devices)
  c.mesh.update(dict(data=3, fsdp=1, dcn_data=-1, dcn_fsdp=1))
  with pytest.raises(ValueError, match=r"mesh.data=3 × mesh.fsdp=1 = 3, but there are 4 devices"):
    sharding.make_mesh(c, devices)

  c = configs.load(CFG)
  c.train.batch_size = 16
  r = aot.compile_for(c, "v5p:2x2x1", num_slices=2, what="train", config_spec=CFG)
  assert r.num_slices == 2 and r.devices == 8 and r.mesh == {"data": 8, "fsdp": 1}
  assert r.per_device_batch == 2 and r.fits and r.flops_per_step > 0
