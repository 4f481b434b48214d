"""Run by test_multidevice.py in its own process with 8 simulated CPU devices (set before JAX starts).

Checks: a data-parallel step on 8 devices, an FSDP step on a 2×4 mesh and steps on the devices
grouped as 2 fake slices of 4 (data parallelism over the DCN axis; FSDP over it) give the
parameters of the 1-device step; FSDP state is really sharded; a checkpoint saved from the 8-device FSDP state
restores onto 1 and 4 devices. Prints one JSON line of findings; asserts inside.
"""

import json
import sys

import jax

jax.config.update("jax_num_cpu_devices", 8)

import numpy as np  # noqa: E402

from sr3_jax import checkpoint, configs, sharding, train  # noqa: E402
from sr3_jax.data import loader  # noqa: E402
from sr3_jax.models import unet  # noqa: E402


def run(config, devices, steps=2):
  mesh = sharding.make_mesh(config, devices)
  model = unet.build(config.model)
  state = train.create_train_state(config, model, mesh)
  step = train.make_train_step(config, model, mesh)
  it = iter(loader.make_dataset(config.data, "train", config.train.batch_size, seed=0))
  for _ in range(steps):
    state, _ = step(state, loader.global_batch(next(it), sharding.batch_sharding(mesh)))
  return state, mesh, model


def max_diff(a, b):
  return max(
    float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
  )


def main(workdir):
  assert len(jax.devices()) == 8, jax.devices()
  c = configs.load("experiments/configs/demo.py:runlocal")
  c.train.batch_size = 8
  c.model.dropout = 0.0
  single, _, _ = run(c, jax.devices()[:1])
  dp, _, _ = run(c, jax.devices())
  cf = configs.load("experiments/configs/demo.py:runlocal")
  cf.train.batch_size = 8
  cf.mesh.update(dict(data=2, fsdp=4))
  fsdp, mesh, model = run(cf, jax.devices())
  sharded = [
    x.sharding.spec
    for x in jax.tree_util.tree_leaves(fsdp.params)
    if "fsdp" in str(x.sharding.spec)
  ]
  kernel = fsdp.params["down0_res0"]["conv_in"]["kernel"]
  shard_shape = kernel.addressable_shards[0].data.shape
  out = {
    "dp_vs_single": max_diff(dp.params, single.params),
    "fsdp_vs_single": max_diff(fsdp.params, single.params),
    "fsdp_sharded_leaves": len(sharded),
    "kernel": list(kernel.shape),
    "kernel_shard": list(shard_shape),
  }
  # 2 fake slices of 4 devices: data parallel across them (2×4 data), and FSDP across them
  # (within each slice data=2 × fsdp=2, the fsdp axis spanning both slices: 2 × 4).
  for name, m, layout in (
    ("dcn_data_vs_single", dict(data=-1, fsdp=1, dcn_data=2, dcn_fsdp=1), [[i] for i in range(8)]),
    (
      "dcn_fsdp_vs_single",
      dict(data=2, fsdp=2, dcn_data=1, dcn_fsdp=2),
      [[0, 1, 4, 5], [2, 3, 6, 7]],
    ),
  ):
    cs = configs.load("experiments/configs/demo.py:runlocal")
    cs.train.batch_size = 8
    cs.model.dropout = 0.0
    cs.mesh.update(m)
    state, mesh_s, _ = run(cs, jax.devices())
    assert [[d.id for d in row] for row in mesh_s.devices] == layout, mesh_s.devices
    out[name] = max_diff(state.params, single.params)
  assert out["dp_vs_single"] < 1e-5 and out["fsdp_vs_single"] < 1e-5, out
  assert out["dcn_data_vs_single"] < 1e-5 and out["dcn_fsdp_vs_single"] < 1e-5, out
  assert out["fsdp_sharded_leaves"] > 0 and shard_shape != kernel.shape, out

  # Save from the 8-device FSDP state, restore onto 1 and onto 4 devices.
  ckpt = checkpoint.Checkpointer(workdir, cf.checkpoint)
  ckpt.save(2, fsdp, iter(loader.make_dataset(cf.data, "train", 8, seed=0)), force=True)
  ckpt.wait()
  for n, fs in ((1, 1), (4, 2)):
    cn = configs.load("experiments/configs/demo.py:runlocal")
    cn.mesh.update(dict(data=n // fs, fsdp=fs))
    mesh_n = sharding.make_mesh(cn, jax.devices()[:n])
    abstract, _ = train.abstract_train_state(cn, model, mesh_n)
    restored = ckpt.restore(2, abstract, None)
    out[f"restore_{n}"] = max_diff(restored.params, fsdp.params)
    assert out[f"restore_{n}"] == 0.0, out
    assert {d for x in jax.tree_util.tree_leaves(restored.params) for d in x.devices()} == set(
      jax.devices()[:n]
    )
  ckpt.close()
  out["cascade_8_vs_1"] = cascade_check()
  # Per-device batches of 1 vs 8 change float32 summation order by ~1e-7; the first steps divide by
  # √γ ≈ 1e-4 at the noisiest level, so agreement to ~1e-3 in [−1, 1] is what equality means here.
  assert out["cascade_8_vs_1"] < 2e-3, out
  print(json.dumps(out))


def cascade_check():
  """A two-stage cascade (random class-conditional base with guidance, truncated 4× SR stage) gives
  the same images on 8 devices as on 1."""
  from jax.sharding import Mesh

  from sr3_jax import cascade

  from cascade_stages import stages as cascade_stages  # tests/, this script's folder

  stages = cascade_stages()
  results = [
    cascade.Cascade(stages, Mesh(np.asarray(devs), ("data",))).run(
      jax.random.key(0), num=8, labels=np.arange(8) % 3
    )
    for devs in (jax.devices()[:1], jax.devices())
  ]
  assert results[1].images[-1].shape == (8, 32, 32, 3)
  return max(float(np.abs(a - b).max()) for a, b in zip(results[0].images, results[1].images))


if __name__ == "__main__":
  main(sys.argv[1])
