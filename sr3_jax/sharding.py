"""Where arrays live: the device mesh, batch and state shardings, partition rules, abstract state.

Every command builds its mesh here: `make_mesh` from `config.mesh` ('data' × 'fsdp' axes), batches
split over every device (`batch_sharding`), the state replicated or FSDP-sharded by
`mesh.rules` (`state_shardings`), and `abstract_state` gives shapes with shardings attached without
allocating anything (jax.eval_shape), for sharded init and for restoring checkpoints in place.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh(config, devices=None) -> Mesh:
  """A ('data', 'fsdp') mesh from config.mesh; data = -1 takes every device not used by fsdp."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  fsdp = int(config.mesh.get("fsdp", 1))
  data = int(config.mesh.get("data", -1))
  if data == -1:
    if devices.size % fsdp:
      raise ValueError(f"mesh.fsdp={fsdp} does not divide the {devices.size} devices")
    data = devices.size // fsdp
  if data * fsdp != devices.size:
    raise ValueError(f"mesh.data={data} × mesh.fsdp={fsdp} != {devices.size} devices")
  return Mesh(devices.reshape(data, fsdp), ("data", "fsdp"))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches are split over every device: the leading axis over ('data', 'fsdp')."""
  return NamedSharding(mesh, P(("data", "fsdp")))


def partition_spec(path: str, shape: tuple[int, ...], fsdp: int, rules) -> P:
  """Where one state leaf lives. The first rule (regex, axis) whose regex matches the leaf's path
  shards `axis` over 'fsdp' (axis None: replicate). Without a matching rule, with fsdp > 1, the
  largest axis divisible by the fsdp size is sharded; scalars and small leaves stay replicated."""
  for pattern, axis in rules or ():
    if re.search(pattern, path):
      if axis is None:
        return P()
      if shape[axis] % fsdp:
        raise ValueError(
          f"sharding rule {pattern!r} puts axis {axis} of {path} {shape} on fsdp={fsdp}, "
          f"which does not divide it"
        )
      spec = [None] * len(shape)
      spec[axis] = "fsdp"
      return P(*spec)
  if fsdp <= 1 or not shape or int(np.prod(shape)) < 4096:
    return P()
  order = sorted(range(len(shape)), key=lambda a: -shape[a])
  for axis in order:
    if shape[axis] % fsdp == 0:
      spec = [None] * len(shape)
      spec[axis] = "fsdp"
      return P(*spec)
  return P()


def state_shardings(abstract_state: Any, mesh: Mesh, rules=()) -> Any:
  """NamedSharding for every leaf of the (abstract) state: replicated over 'data', FSDP by rule."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree_util.tree_map_with_path(
    lambda path, leaf: NamedSharding(
      mesh, partition_spec(jax.tree_util.keystr(path), leaf.shape, fsdp, rules)
    ),
    abstract_state,
  )


def sharding_rules(config) -> list[tuple[str, int | None]]:
  return [(str(r[0]), None if r[1] is None else int(r[1])) for r in config.mesh.get("rules", ())]


def abstract_state(
  init_fn: Callable[[jax.Array], Any], rng: jax.Array, mesh: Mesh, rules=()
) -> tuple[Any, Any]:
  """(abstract state with shardings attached, the shardings) of `init_fn(rng)`; nothing is allocated."""
  abstract = jax.eval_shape(init_fn, rng)
  shardings = state_shardings(abstract, mesh, rules)
  with_sharding = jax.tree_util.tree_map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
  )
  return with_sharding, shardings
