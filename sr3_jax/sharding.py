"""Where arrays live: the device mesh, batch and state shardings, partition rules, abstract state.

Every command builds its mesh here: `make_mesh` from `config.mesh` ('data' × 'fsdp' axes, each
split into a share within a slice and a share across slices), batches
split over every device (`batch_sharding`), the state replicated or FSDP-sharded by
`mesh.rules` (`state_shardings`), and `abstract_state` gives shapes with shardings attached without
allocating anything (jax.eval_shape), for sharded init and for restoring checkpoints in place.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp")


def _fill(a: int, b: int, total: int, names: tuple[str, str], what: str) -> tuple[int, int]:
  """Two axis sizes whose product is `total`; one of them may be −1 (the rest)."""
  fix = f"set mesh.{names[0]} × mesh.{names[1]} to {total} (−1 in one of them fills it in)"
  if a == -1 and b == -1:
    raise ValueError(f"mesh.{names[0]} and mesh.{names[1]} are both -1; {fix}")
  if a == -1 or b == -1:
    known = b if a == -1 else a
    if known < 1 or total % known:
      name = names[1] if a == -1 else names[0]
      raise ValueError(f"mesh.{name}={known} does not divide the {what}; {fix}")
    a, b = (total // known, known) if a == -1 else (known, total // known)
  if a * b != total:
    raise ValueError(
      f"mesh.{names[0]}={a} × mesh.{names[1]}={b} = {a * b}, but there are {what}; {fix}"
    )
  return a, b


def slices_of(devices) -> list[list]:
  """Devices grouped by slice: by `slice_index` where the platform has slices (TPU), else one."""
  groups: dict[int, list] = {}
  for d in devices:
    groups.setdefault(int(getattr(d, "slice_index", 0) or 0), []).append(d)
  return [groups[k] for k in sorted(groups)]


def make_mesh(config, devices=None) -> Mesh:
  """A ('data', 'fsdp') mesh from config.mesh, over one or several slices.

  Within a slice (ICI) the axes are `mesh.data` × `mesh.fsdp` (MaxText's ici_data, ici_fsdp);
  across slices (DCN) `mesh.dcn_data` × `mesh.dcn_fsdp`. In each pair −1 takes what the other
  leaves. The mesh's 'data' axis then has data·dcn_data devices and 'fsdp' fsdp·dcn_fsdp, slices
  outermost, so only the DCN share of each axis crosses slices. Slices are the devices'
  `slice_index` (TPU multi-slice, built with `mesh_utils.create_hybrid_device_mesh`); where devices
  have none (CPU, GPU), a DCN product above 1 groups them in order into that many equal parts.
  """
  devices = list(devices if devices is not None else jax.devices())
  m = config.mesh
  dcn_data, dcn_fsdp = int(m.get("dcn_data", -1)), int(m.get("dcn_fsdp", 1))
  groups = slices_of(devices)
  real_slices = len(groups) > 1
  if not real_slices:
    # No slices on this platform: the DCN axes, if asked for, group the devices in order.
    n = max(dcn_data, 1) * max(dcn_fsdp, 1)
    if len(devices) % n:
      raise ValueError(
        f"mesh.dcn_data={dcn_data} × mesh.dcn_fsdp={dcn_fsdp} groups the devices into {n} slices, "
        f"which do not divide the {len(devices)} devices; set a DCN product that divides them"
      )
    groups = [devices[i * len(devices) // n : (i + 1) * len(devices) // n] for i in range(n)]
  num_slices, per_slice = len(groups), len(groups[0])
  if any(len(g) != per_slice for g in groups):
    raise ValueError(f"slices of unequal size: {[len(g) for g in groups]} devices")
  plural = lambda n, word: f"{n} {word}{'' if n == 1 else 's'}"
  dcn_data, dcn_fsdp = _fill(
    dcn_data, dcn_fsdp, num_slices, ("dcn_data", "dcn_fsdp"), plural(num_slices, "slice")
  )
  data, fsdp = _fill(
    int(m.get("data", -1)),
    int(m.get("fsdp", 1)),
    per_slice,
    ("data", "fsdp"),
    f"{plural(per_slice, 'device')} per slice ({len(devices)} in {plural(num_slices, 'slice')})",
  )
  if num_slices == 1:
    return Mesh(np.asarray(devices).reshape(data, fsdp), AXES)
  if real_slices:
    grid = mesh_utils.create_hybrid_device_mesh((data, fsdp), (dcn_data, dcn_fsdp), devices)
    return Mesh(grid, AXES)
  # Slice k sits at block (k // dcn_fsdp, k % dcn_fsdp) of the (dcn_data, dcn_fsdp) grid.
  blocks = [np.asarray(g).reshape(data, fsdp) for g in groups]
  rows = [
    np.concatenate(blocks[i * dcn_fsdp : (i + 1) * dcn_fsdp], axis=1) for i in range(dcn_data)
  ]
  return Mesh(np.concatenate(rows, axis=0), AXES)


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
