"""`sr3 aot`: train steps and samplers compiled by the TPU compiler on this CPU host (no TPU)."""

import dataclasses
import json
import re
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


def test_sampler_and_the_cli_json(v5p_train, tmp_path):
  """The 3-step sampler's JSON; its FLOPs are for all 3 steps (the compiler counts the loop body
  once, sr3 aot multiplies): per image and step, a forward pass, about a third of a train step's
  forward + backward per image."""
  _tpu_compiler_or_skip()
  cmd = [sys.executable, "-m", "sr3_jax", "aot", "--config", CFG, "--topology", "v5p:2x2x1"]
  proc = subprocess.run(
    cmd
    + ["--what", "sample", "--steps", "3", "--batch", "4", "--json"]
    # an XLA option travels to the compile and into the JSON (it names the program for --known)
    + ["--compiler-option", "xla_tpu_sliced_prefetch_max_slices=0"]
    + ["--hlo", str(tmp_path / "sampler.hlo")],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  # --hlo keeps the compiled program: scheduled, with the compiler's cycles per fusion
  hlo = (tmp_path / "sampler.hlo").read_text()
  assert hlo.startswith("HloModule") and "is_scheduled=true" in hlo and "\nENTRY " in hlo
  assert '"estimated_cycles"' in hlo
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["what"] == "sample" and out["sampling_steps"] == 3 and out["devices"] == 4
  assert out["device_kind"].startswith("TPU v5") and out["global_batch"] == 4
  assert out["set"] == []  # the overrides are part of the program (`--known` matches on them)
  assert out["compiler_options"] == {"xla_tpu_sliced_prefetch_max_slices": "0"}
  for key in ("peak_hbm_bytes", "flops_per_step", "optimal_seconds", "mfu_bound", "compile_s"):
    assert out[key] > 0, key
  forward = out["flops_per_step"] / (3 * out["per_device_batch"])
  train = v5p_train.flops_per_step / v5p_train.per_device_batch
  assert 0.2 < forward / train < 0.6, (forward, train)
  bad = subprocess.run(cmd[:-1] + ["v9z:1x1"], capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and "--topology v9z:1x1" in bad.stderr
  for extra, named in (
    (["--compiler-option", "xla_no_such_option=1"], "xla_no_such_option"),
    (["--compiler-option", "no_value"], "KEY=VALUE"),
    (["--hlo", str(tmp_path / "no" / "such.hlo")], "its folder does not exist"),
    (["--hlo", str(tmp_path / "x.hlo"), "--max-batch"], "drop --max-batch"),
  ):
    bad = subprocess.run(cmd + extra, capture_output=True, text=True, timeout=300)
    errors = [x for x in bad.stderr.splitlines() if x.startswith("sr3 aot:")]
    assert bad.returncode == 2 and len(errors) == 1 and named in errors[0], bad.stderr[-2000:]


def test_one_device_per_chip_on_every_generation():
  """A v4 chip's two cores are one device (megacore), as its runtime presents them; v5e and v6e
  have one core per chip, v5p one megacore device per chip."""
  _tpu_compiler_or_skip()
  for name, chips, kind in (
    ("v4:2x2x1", 4, "TPU v4"),
    ("v5e:2x4", 8, "TPU v5 lite"),
    ("v5p:2x2x1", 4, "TPU v5"),
    ("v6e:2x4", 8, "TPU v6 lite"),
  ):
    devices = aot.tpu_devices(name)
    assert len(devices) == chips and {d.device_kind for d in devices} == {kind}, name
    assert len({tuple(d.coords) for d in devices}) == chips, name  # no chip twice


def test_a_batch_the_chips_cannot_split_is_named():
  _tpu_compiler_or_skip()
  c = configs.load(CFG)
  c.train.batch_size = 6
  with pytest.raises(ValueError, match=r"v5p:2x2x1 .*4 chips.*batch_size=6"):
    aot.compile_for(c, "v5p:2x2x1")
  with pytest.raises(ValueError, match=r"--dcn-gbps 0.*Gbit/s, above 0"):
    aot.compile_for(configs.load(CFG), "v5p:2x2x1", num_slices=2, dcn_gbps=0)


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
  # The gradient all-reduce crosses DCN: each chip sends at least its quarter of the float32
  # gradients (small tensors go padded to whole tiles), and the program keeps a time: its ZeroCrop
  # and SliceId ops, which the cost model cannot price, are taken back.
  assert r.params <= r.dcn_bytes_per_step < 4 * r.params
  assert r.free_unpriced_ops >= 1 and r.optimal_seconds > 0
  assert r.optimal_seconds == pytest.approx(r.cost_model_seconds + r.free_unpriced_ops)
  # The sends start inside the backward pass: matmuls follow the first, and most bytes leave
  # before the last matmul (the first layers' gradients, made last, cannot).
  assert 0 < r.matmul_fusions_after_dcn_send < r.matmul_fusions
  # The modelled step with the wire at the default 50 Gbit/s per chip: no shorter than the chips'
  # work, no longer than that work followed by every byte on the wire.
  wire = r.dcn_bytes_per_step / (50e9 / 8)
  assert r.dcn_gbps_per_chip == 50
  assert r.optimal_seconds <= r.dcn_step_seconds_model <= r.optimal_seconds + wire
  assert r.dcn_bytes_per_step / 2 < r.dcn_bytes_before_last_matmul < r.dcn_bytes_per_step


def test_dcn_bytes_and_the_time_of_a_two_slice_program():
  """A 4-layer MLP's gradient step, data parallel over 2 × v5p:2x2x1: each chip sends over DCN a
  quarter of every float32 gradient (4 × w·w' × 4 bytes / 4 chips). Odd widths make the
  compiler zero the gradients' padding in place (ZeroCrop) before the transfer; those ops' −1 s
  are taken back. One slice of 8 chips sends nothing over DCN."""
  import numpy as np
  from jax.experimental import mesh_utils

  from tests.tpu_programs import mlp_gradient_step

  _tpu_compiler_or_skip()

  two = aot.tpu_devices("v5p:2x2x1", num_slices=2)
  hybrid = mesh_utils.create_hybrid_device_mesh((4,), (2,), two)
  square = [(1024, 1024)] * 4
  text = mlp_gradient_step(hybrid, square).as_text()
  assert aot.dcn_bytes(text) == 4 * 1024 * 1024 * 4 // 4
  # Each layer's gradient is sent on its own, a quarter of the bytes each. Layer 1's is made by
  # the backward pass's last matmul, so it cannot leave before it; at least the top layer's does.
  before, matmuls, after = aot.dcn_schedule(text)
  share = 1024 * 1024 * 4 // 4
  assert before in (share, 2 * share, 3 * share) and 1 <= after < matmuls
  one = np.array(aot.tpu_devices("v5p:2x2x2"))
  assert aot.dcn_bytes(mlp_gradient_step(one, square).as_text()) == 0

  odd = [(1024, 1027), (1027, 1024)] * 2
  compiled = mlp_gradient_step(hybrid, odd)
  seconds, raw, free = aot.optimal_seconds(compiled)
  assert 'custom_call_target="ZeroCrop"' in compiled.as_text()
  assert raw < 0 and free >= 1 and seconds == pytest.approx(raw + free) and seconds > 0
  padded = 4 * 1024 * 1027 * 4 // 4
  assert padded <= aot.dcn_bytes(compiled.as_text()) < 1.02 * padded


def test_a_batch_beyond_the_chips_hbm_is_one_error():
  """16,384 images per v5e chip need more than its 16 GiB: the compiler stops at memory assignment
  and `sr3 aot` says so in one line naming the topology, the batch and the fixes."""
  _tpu_compiler_or_skip()
  cmd = [sys.executable, "-m", "sr3_jax", "aot", "--config", CFG, "--topology", "v5e:2x2"]
  proc = subprocess.run(cmd + ["--batch", "65536"], capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2, proc.stderr[-2000:]
  err = proc.stderr.strip().splitlines()[-1]
  assert err.startswith("sr3 aot: v5e:2x2") and "16384/chip" in err, err
  assert "does not fit in HBM" in err and "mesh.fsdp" in err and "model.remat" in err, err
  assert aot.required_bytes(err) > 16 * aot.GIB  # what the compiler said the program needs
  # `fits` is judged by what the compiler itself lets a program use on the chip.
  available = re.search(r"available HBM \(([\d.]+)G\)", err)
  assert available, err
  usable = aot.hbm_bytes("TPU v5 lite", aot.USABLE_HBM_BYTES)
  assert abs(float(available.group(1)) * aot.GIB - usable) < 0.01 * aot.GIB, err


def test_the_cost_models_minus_one_for_a_free_op_is_taken_back():
  """On v5e the compiler prefetches weights into on-chip memory in slices and joins them with
  ConcatBitcast, an op its cost model cannot price: it counts −1 s for each into the program's
  optimal_seconds. `aot.optimal_seconds` adds those back; the result is within a few per cent of
  the same program compiled without sliced prefetches, which the cost model prices whole. Such
  ops inside a conditional's branches, or an op that does work and is not priced
  (RngBitGenerator), leave the program without an estimate."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

  _tpu_compiler_or_skip()
  mesh = Mesh(np.array(aot.tpu_devices("v5e:2x2")), ("data",))
  spec = lambda shape, axis=None: jax.ShapeDtypeStruct(
    shape, jnp.bfloat16, sharding=NamedSharding(mesh, P(axis))
  )

  def loss(weights, x):
    for w in weights:
      x = jax.nn.silu(x @ w)
    return jnp.mean(x.astype(jnp.float32) ** 2)

  lowered = jax.jit(jax.grad(loss)).lower([spec((1024, 1024))] * 4, spec((256, 1024), "data"))
  seconds, raw, free = aot.optimal_seconds(lowered.compile())
  assert free >= 1 and raw < 0 and seconds == pytest.approx(raw + free)
  whole = lowered.compile(compiler_options={"xla_tpu_sliced_prefetch_max_slices": 0})
  whole_seconds, whole_raw, whole_free = aot.optimal_seconds(whole)
  assert whole_free == 0 and whole_seconds == whole_raw > 0
  assert 0.7 < seconds / whole_seconds < 1.3, (seconds, whole_seconds)

  # The same gradient behind a train step's non-finite skip: with ConcatBitcasts inside the
  # conditional's branches, the cost model priced it by the skip (none) over the update (some),
  # so taking back the −1 s would give the skip's time. No estimate then.
  def step(weights, x):
    value, grads = jax.value_and_grad(loss)(weights, x)
    update = lambda ws: [w - 0.1 * g for w, g in zip(ws, grads)]
    return jax.lax.cond(jnp.isfinite(value), update, lambda ws: ws, weights)

  lowered = jax.jit(step, donate_argnums=0).lower(
    [spec((1024, 1024))] * 4, spec((256, 1024), "data")
  )
  compiled = lowered.compile()
  free, in_branches = aot._free_unpriced(compiled.as_text())
  assert free > in_branches >= 1
  assert aot.optimal_seconds(compiled)[0] is None
  assert aot.optimal_seconds(compiled)[1] < 0

  key = jax.ShapeDtypeStruct(
    (), jax.random.key(0, impl="rbg").dtype, sharding=NamedSharding(mesh, P())
  )
  rbg = jax.jit(lambda k: jax.random.bits(k, (4096, 4096))).lower(key).compile()
  assert " rng-bit-generator(" in rbg.as_text()
  assert aot.optimal_seconds(rbg)[:2] == (None, pytest.approx(aot.cost_of(rbg)["optimal_seconds"]))


class _Memory:
  """A stand-in for the TPU compiler: peak = 2 GiB + 0.3 GiB per image on 4 chips of 16 GiB;
  beyond 20 GiB it refuses to compile (as the real one does), between 16 and 20 it compiles a
  program that does not fit. Records every per-chip batch it was asked for."""

  def __init__(self, base=2.0, per_image=0.3):
    self.base, self.per_image, self.asked = base, per_image, []

  def __call__(
    self, config, topology, num_slices, what, steps, compiler_options=None, dcn_gbps=50.0
  ):
    per_chip = config.train.batch_size // 4
    self.asked.append(per_chip)
    peak = int((self.base + self.per_image * per_chip) * aot.GIB)
    if peak > 20 * aot.GIB:
      raise aot.DoesNotFit("RESOURCE_EXHAUSTED", peak, 1.0)
    fields = {f.name: None for f in dataclasses.fields(aot.AotResult)}
    fields.update(
      peak_hbm_bytes=peak,
      argument_bytes=int(self.base * aot.GIB),
      hbm_per_device_bytes=16 * aot.GIB,
      fits=peak <= 16 * aot.GIB,
      compile_s=60.0,
      global_batch=config.train.batch_size,
    )
    return aot.AotResult(**fields)


def test_max_batch_finds_the_boundary_with_few_full_compiles(monkeypatch):
  """(16 − 2) / 0.3 = 46.7: the largest batch is 46 per chip (40 in multiples of 8). The search
  starts at the config's per-chip batch (64 / 4 = 16), aims at the affine fit's prediction, and
  bisects; refusals are cheap, so it compiles few programs that fit."""
  monkeypatch.setattr(aot, "tpu_devices", lambda topology, num_slices=1: [None] * 4)
  c = configs.load(CFG)
  c.train.batch_size = 64
  for multiple, want in ((1, 46), (8, 40)):
    memory = _Memory()
    monkeypatch.setattr(aot, "compile_for", memory)
    best, result, trials = aot.max_batch(c, "v5e:2x2", multiple=multiple)
    assert best == want and result.global_batch == 4 * want and result.fits
    assert [t.per_device for t in trials] == memory.asked and memory.asked[0] == 16
    assert all(b % multiple == 0 for b in memory.asked)
    fits = [t.per_device for t in trials if t.fits]
    assert max(fits) == want and min(t.per_device for t in trials if not t.fits) == want + multiple
    assert len(fits) <= 4, trials
  # Earlier compiles of the same program (sr3 aot --known): their batches are not compiled again,
  # and the answer is the same.
  earlier = [r for r in (result,) if r.fits]
  for r in earlier:
    r.per_device_batch, r.devices = r.global_batch / 4, 4
  memory = _Memory()
  monkeypatch.setattr(aot, "compile_for", memory)
  best, _, trials = aot.max_batch(c, "v5e:2x2", multiple=8, known=earlier)
  assert best == 40 and 40 not in memory.asked
  assert [t.per_device for t in trials if t.known] == [40]
  # A program that does not fit even at one image per chip: one error with the fixes.
  monkeypatch.setattr(aot, "compile_for", _Memory(base=30.0))
  with pytest.raises(aot.DoesNotFit, match=r"v5e:2x2 .*does not fit at 1 image.*mesh.fsdp"):
    aot.max_batch(c, "v5e:2x2")


def test_known_compiles_are_read_only_for_the_same_program(tmp_path):
  """`sr3 aot --known FILE`: lines of other configs, topologies, dtypes or --set overrides, error
  lines and torn lines are skipped; a line written before --set was recorded counts as none."""
  fields = {f.name: 1 for f in dataclasses.fields(aot.AotResult)}
  fields.update(device_kind="TPU v5 lite", fits=True, usable_hbm_bytes=int(15.75 * aot.GIB))
  del fields["compiler_options"]  # as in lines written before it was recorded: none
  program = dict(
    config=CFG,
    what="train",
    topology="v5e:2x4",
    num_slices=1,
    dtype="bfloat16",
    sampling_steps=None,
  )
  line = lambda **kw: json.dumps({**fields, **program, **kw})
  path = tmp_path / "table.jsonl"
  path.write_text(
    "\n".join(
      [
        # written before --set and usable_hbm_bytes were recorded, when `fits` was judged by
        # the chip's 16 GiB: 15.9 GiB is over the 15.75 the compiler lets a program use
        json.dumps(
          {
            k: v
            for k, v in json.loads(
              line(per_device_batch=32, peak_hbm_bytes=int(15.9 * aot.GIB))
            ).items()
            if k != "usable_hbm_bytes"
          }
        ),
        line(per_device_batch=40, set=[]),
        line(per_device_batch=48, set=["model.remat=True"]),
        line(per_device_batch=56, topology="v6e:2x4"),
        line(per_device_batch=64, dtype="float32"),
        line(per_device_batch=80, compiler_options={"xla_tpu_sliced_prefetch_max_slices": "0"}),
        json.dumps({"error": "does not fit", "cell": ["16_128", "v5e", "max"]}),
        line(per_device_batch=72)[:40],
      ]
    )
  )
  got = aot.load_known(path, **program, set=[], compiler_options={})
  assert [r.per_device_batch for r in got] == [32, 40]
  assert [r.fits for r in got] == [False, True]  # the old line judged again by the usable HBM
  got = aot.load_known(path, **program, set=["model.remat=True"], compiler_options={})
  assert [r.per_device_batch for r in got] == [48]
  options = {"xla_tpu_sliced_prefetch_max_slices": "0"}  # another compile of the same step
  got = aot.load_known(path, **program, set=[], compiler_options=options)
  assert [(r.per_device_batch, r.compiler_options) for r in got] == [(80, options)]
  with pytest.raises(FileNotFoundError, match="--known .*missing.jsonl"):
    aot.load_known(tmp_path / "missing.jsonl", **program, set=[], compiler_options={})


def test_a_cascade_planned_for_tpu_chips_from_the_compilers_costs():
  """`sr3 cascade --plan --topology`'s costs: each stage's sampler compiled for one v5e chip; the plan's
  stage times are the compiler's optimal_seconds over the group size, its memory limit the 15.75 GiB
  of a v5e chip's 16 that the compiler lets a program use, and the slowest stage of the chosen split is no slower than the even split's."""
  _tpu_compiler_or_skip()
  from cascade_stages import stages

  from sr3_jax import pipeline_plan

  st = stages()
  costs, hbm = pipeline_plan.measure_tpu(st, 8, "v5e:2x4")
  assert hbm == int(15.75 * aot.GIB) and [c.name for c in costs] == ["base64", "sr256"]
  assert all(c.seconds > 0 and c.bytes_fixed > 0 and c.bytes_per_image > 0 for c in costs)
  p = pipeline_plan.plan(costs, 8, 8, device_bytes=hbm)
  assert sum(p["groups"].values()) <= 8
  for name, g in p["groups"].items():
    one = next(c.seconds for c in costs if c.name == name)
    assert p["stage_seconds"][name] == pytest.approx(one / g)
  assert max(p["stage_seconds"].values()) <= max(c.seconds / 4 for c in costs) * (1 + 1e-9)
  with pytest.raises(ValueError, match="cannot with --topology"):
    pipeline_plan.run(st, 8, 8, measure_images=8, topology="v5e:2x4")
