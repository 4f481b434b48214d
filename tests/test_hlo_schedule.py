"""`hlo_schedule`: FLOPs read from TPU-compiled HLO against closed forms, and the DCN step model's
timeline against one worked by hand."""

import pytest

from sr3_jax import aot, hlo_schedule

MB = 1_000_000


def test_the_timeline_of_sends_and_waits():
  """Ops of 10, 5, 2, 1 and 3 ms; 1 MB sent after the first and 0.5 MB after the second, on a
  wire of 100 MB/s. The first arrives at 10 + 10 = 20 ms, the second waits for the wire:
  20 + 5 = 25 ms. The chip reaches the first recv-done at 17 ms and waits to 20, runs 1 ms, waits
  for the second to 25, and ends at 28 ms: 7 ms of the 15 ms on the wire is not hidden."""
  events = [
    ("op", 10e-3),
    ("send", "a", 1 * MB),
    ("op", 5e-3),
    ("send", "b", MB // 2),
    ("op", 2e-3),
    ("recv-done", "a"),
    ("op", 1e-3),
    ("recv-done", "b"),
    ("op", 3e-3),
  ]
  m = hlo_schedule.simulate(events, 21e-3, 100 * MB)
  assert m.step_seconds == pytest.approx(28e-3)
  assert m.exposed_seconds == pytest.approx(7e-3)
  assert m.wire_seconds == pytest.approx(15e-3)
  # Op times are scaled to the compiler's step: at 42 ms every op takes twice as long, the
  # sends leave at 20 and 30 ms and arrive at 30 and 35 ms, before the chip needs them.
  m = hlo_schedule.simulate(events, 42e-3, 100 * MB)
  assert m.step_seconds == pytest.approx(42e-3) and m.exposed_seconds == pytest.approx(0)


def _compile(fn, *shapes):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

  try:
    devices = np.array(aot.tpu_devices("v5p:2x2x1"))
  except ValueError as e:
    pytest.skip(f"the TPU compiler cannot start here: {e}")
  mesh = Mesh(devices, ("data",))
  args = [jax.ShapeDtypeStruct(s, jnp.float32, sharding=NamedSharding(mesh, P())) for s in shapes]
  compiled = jax.jit(fn).lower(*args).compile()
  assert compiled.as_text() and "TPU" in devices.flat[0].device_kind  # the TPU compiler's
  return compiled.as_text()


def test_convolution_flops_count_the_taps_on_data():
  """A 3×3 'SAME' convolution, stride 1, then one of stride 2, and the gradient of their output's
  square sum with respect to the input and both kernels. Along a side of H, a stride-1 3×3
  window with one row of padding each side has 3H − 2 taps on data; a stride-2 one over an even
  H (padding 0 before, 1 after) has 3·H/2 − 1. Each gradient convolution (of the input, through
  a dilated input for the strided one, and of the kernel) does the forward one's multiply-adds
  again, so the program does 3 × the forward's. (At some shapes the compiler cuts a convolution
  into overlapping strips and computes more than this; the count is of what the program does,
  and these shapes are computed as written.)"""
  import jax
  import jax.numpy as jnp

  n, h, c1, c2, c3 = 8, 16, 256, 256, 256

  def loss(x, k1, k2):
    dims = ("NHWC", "HWIO", "NHWC")
    y = jax.lax.conv_general_dilated(x, k1, (1, 1), "SAME", dimension_numbers=dims)
    y = jax.lax.conv_general_dilated(y, k2, (2, 2), "SAME", dimension_numbers=dims)
    return jnp.sum(y**2)

  text = _compile(jax.grad(loss, argnums=(0, 1, 2)), (n, h, h, c1), (3, 3, c1, c2), (3, 3, c2, c3))
  forward = 2 * n * c1 * c2 * (3 * h - 2) ** 2 + 2 * n * c2 * c3 * (3 * h // 2 - 1) ** 2
  assert hlo_schedule.program_flops(text) == 3 * forward


def test_an_mlp_gradient_on_two_slices():
  """A 4-layer 1024² MLP's gradient step at 512 examples over 2 × v5p:2x2x1 (64 per chip): TPU HLO
  writes its matmuls as convolutions, 4 forward, 4 of the weights' gradients and 3 of the
  activations' (the input's is not asked for), 2 × 64 × 1024² FLOPs each. Every DCN send has a
  recv-done waiting for it; with the wire at the default 50 Gbit/s per chip the modelled step
  lies between the chips' work alone and that work plus every byte on the wire, and a slower wire
  never makes it shorter."""
  from jax.experimental import mesh_utils

  from tests.tpu_programs import mlp_gradient_step

  try:
    two = aot.tpu_devices("v5p:2x2x1", num_slices=2)
  except ValueError as e:
    pytest.skip(f"the TPU compiler cannot start here: {e}")
  hybrid = mesh_utils.create_hybrid_device_mesh((4,), (2,), two)
  width, layers = 1024, 4
  text = mlp_gradient_step(hybrid, [(width, width)] * layers, batch=512).as_text()
  assert "TPU" in hybrid.flat[0].device_kind
  assert hlo_schedule.program_flops(text) == 11 * 2 * 64 * width**2

  events = hlo_schedule.dcn_events(text, 459e12, 2.765e12)
  sends = {e[1]: e[2] for e in events if e[0] == "send"}
  waits = [e[1] for e in events if e[0] == "recv-done"]
  assert sum(sends.values()) == hlo_schedule.dcn_bytes(text) > 0
  assert sorted(waits) == sorted(sends)
  work = 1e-3
  steps = [hlo_schedule.dcn_step_model(text, work, g, 459e12, 2.765e12) for g in (200, 50, 10)]
  for m in steps:
    assert work <= m.step_seconds <= work + m.wire_seconds + 1e-12
    assert m.exposed_seconds == pytest.approx(m.step_seconds - work)
  assert steps[0].step_seconds <= steps[1].step_seconds <= steps[2].step_seconds
  # At 10 Gbit/s the wire (3.4 ms for 4 MB) outlasts the whole 1 ms of work: it cannot be hidden.
  assert steps[2].exposed_seconds > steps[2].wire_seconds - work
  # Timed by the compiler's estimated_cycles instead, the same transfers and the same bounds.
  cycles = hlo_schedule.dcn_events(text, 459e12, 2.765e12, weights="cycles")
  assert [e for e in cycles if e[0] != "op"] == [e for e in events if e[0] != "op"]
  m = hlo_schedule.simulate(cycles, work, 50e9 / 8)
  assert work <= m.step_seconds <= work + m.wire_seconds
  with pytest.raises(ValueError, match="weights='flops'; choose 'roofline' or 'cycles'"):
    hlo_schedule.dcn_events(text, 459e12, 2.765e12, weights="flops")


def test_a_loop_gets_no_model():
  """A scan over 5 matmuls compiles to a while loop whose trip count the HLO does not state:
  the model says it has no answer rather than time one pass of the body."""
  import jax
  import jax.numpy as jnp

  def run(x, ws):
    return jax.lax.scan(lambda h, w: (jnp.tanh(h @ w), None), x, ws)[0]

  text = _compile(run, (256, 512), (5, 512, 512))
  assert " while(" in text
  assert hlo_schedule.dcn_step_model(text, 1e-3, 50, 459e12, 2.765e12) is None
  with pytest.raises(ValueError, match="while loop"):
    hlo_schedule.dcn_events(text, 459e12, 2.765e12)
