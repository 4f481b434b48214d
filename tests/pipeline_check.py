"""Run by test_pipeline.py in its own process with 8 simulated CPU devices (set before JAX starts).

A two-stage cascade (random class-conditional base with guidance, truncated 4× SR stage, so both
the image and the truncated z cross from group to group) pipelined over device groups of 4 and 4
gives, per micro-batch, the images of the sequential cascade on 1 device with that micro-batch's
key; uneven groups (2, 6) too. Prints one JSON line of findings; asserts inside.
"""

import json

import jax

jax.config.update("jax_num_cpu_devices", 8)

import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

from cascade_stages import stages  # noqa: E402
from sr3_jax import cascade  # noqa: E402


def main():
  st = stages()
  rng, labels = jax.random.key(0), np.arange(12) % 3
  one = cascade.Cascade(st, Mesh(np.asarray(jax.devices()[:1]), ("data",)))
  out = {}
  for sizes, micro in (([4, 4], 4), ([2, 6], 6)):
    meshes = cascade.device_groups(sizes, [s.name for s in st])
    piped = cascade.Cascade(st, meshes=meshes).run_pipelined(rng, micro, num=12, labels=labels)
    assert [m.devices.size for m in meshes] == sizes
    assert not set(meshes[0].devices.flat) & set(meshes[1].devices.flat)
    # The same stages on the same groups, one micro-batch after another with `run`: the same
    # programs on the same shardings, so the pipelining alone is what is compared.
    same = cascade.Cascade(st, meshes=meshes)
    for name, ref in (("sequential_same_groups", same), ("one_device", one)):
      want = [
        ref.run(jax.random.fold_in(rng, m), num=micro, labels=labels[m * micro : (m + 1) * micro])
        for m in range(12 // micro)
      ]
      out[f"groups_{sizes[0]}_{sizes[1]}_vs_{name}"] = max(
        float(np.abs(piped.images[k] - np.concatenate([w.images[k] for w in want])).max())
        for k in range(2)
      )
    assert piped.images[-1].shape == (12, 32, 32, 3), piped.images[-1].shape
    assert out[f"groups_{sizes[0]}_{sizes[1]}_vs_sequential_same_groups"] < 1e-6, out
    # Per-device batches differ from the 1-device run, and the first steps divide by √γ ≈ 1e-4
    # (tests/multidevice_check.py): agreement to a few 1e-3 in [−1, 1] is equality there.
    assert out[f"groups_{sizes[0]}_{sizes[1]}_vs_one_device"] < 1e-2, out
  result, timing = cascade.run_pipeline(
    st, rng, 16, np.arange(16) % 3, None, None, None, compare_sequential=True
  )
  assert timing["groups"] == {"base64": 4, "sr256": 4} and timing["micro_batch"] == 4
  out.update({k: timing[k] for k in ("images_per_s", "sequential_images_per_s")})
  out.update(plan_check(st))
  print(json.dumps(out))


def plan_check(st):
  """--plan on 8 devices: a split no slower than the even one, predicted vs measured throughput;
  a memory limit forces a larger group on the heavier stage, and one too small is named."""
  from sr3_jax import pipeline_plan

  costs = pipeline_plan.measure(st, 8)
  p = pipeline_plan.plan(costs, 8, 8)
  even = max(c.seconds / 4 for c in costs)
  assert sum(p["groups"].values()) <= 8 and max(p["stage_seconds"].values()) <= even + 1e-12, p
  heavy = max(costs, key=lambda c: c.bytes_per_image)
  # Room for 2 images per device of the heavier stage (and anything of the other): it needs ≥ 4.
  limit = max(heavy.bytes_at(2.0), *(c.bytes_at(1.0) for c in costs if c is not heavy))
  p_mem = pipeline_plan.plan(costs, 8, 8, device_bytes=limit)
  assert p_mem["groups"][heavy.name] >= 4, (p_mem, heavy)
  smallest = min(c.bytes_fixed for c in costs)
  for devices, limit, says in (
    (2, heavy.bytes_at(1.0), "does not fit: at micro-batch 8 over at most 2 devices"),
    (2, heavy.bytes_at(1.0), "the smallest group that holds it has"),
    (8, smallest * 0.5, f"stage {st[0].name!r} does not fit"),
    (8, smallest * 0.5, "even one image per device needs"),
  ):
    try:
      pipeline_plan.plan(costs, devices, 8, device_bytes=limit)
      raise AssertionError("a stage that fits nowhere was planned")
    except ValueError as e:
      assert says in str(e), e
  measured = pipeline_plan.run(st, 8, 8, measure_images=16)
  return {
    "plan_groups": p["groups"],
    "plan_predicted_images_per_s": measured["predicted_images_per_s"],
    "plan_measured_images_per_s": measured["measured_images_per_s"],
    "plan_mem_groups": p_mem["groups"],
  }


if __name__ == "__main__":
  main()
