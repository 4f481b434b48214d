"""Orbax checkpoints of the train state with the Grain iterator state beside it.

A workdir's `checkpoints/<step>/` holds two items: `state` (the TrainState, restored straight into
the target shardings, so a run saved on 8 devices resumes on 1 or 4) and `data` (the Grain
iterator's position). Saves are asynchronous; Orbax writes into a temporary folder and renames
it when complete, so a save killed half-way leaves the previous step as the latest.
"""
from __future__ import annotations

from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


def _name(path) -> str:
  """A tree path as 'params/down0_res0/conv_in/kernel', the same for a TrainState and Orbax's dicts."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` with the (state, data) layout of a workdir."""

  def __init__(self, directory, ccfg):
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=ccfg.every, max_to_keep=ccfg.keep, keep_period=ccfg.get("keep_every") or None,
        enable_async_checkpointing=ccfg.get("async_save", True), cleanup_tmp_directories=True)
    self.directory = directory
    self.manager = ocp.CheckpointManager(
        directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iter: Any, force: bool = False) -> bool:
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iter))
    return self.manager.save(step, args=args, force=force)

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def check_compatible(self, step: int, abstract_state: Any) -> None:
    """Raises one error naming the first parameter whose shape differs (or that is missing)."""
    meta = self.manager.item_metadata(step)["state"]
    saved = {_name(p): tuple(m.shape) for p, m in
             jax.tree_util.tree_flatten_with_path(meta)[0] if hasattr(m, "shape")}
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]:
      key = _name(path)
      want = tuple(leaf.shape)
      if key not in saved:
        raise ValueError(f"checkpoint {self.directory}/{step} was written by a different model: it has no "
                         f"parameter {key} (shape {want} in this model); use another --workdir or the "
                         f"config that wrote it")
      if saved[key] != want:
        raise ValueError(f"checkpoint {self.directory}/{step} was written by a different model: {key} has "
                         f"shape {saved[key]} there and {want} in this model; use another --workdir or "
                         f"the config that wrote it")

  def restore(self, step: int, abstract_state: Any, data_iter: Any | None) -> Any:
    """Restores the state into `abstract_state`'s shapes and shardings (and the iterator in place)."""
    self.check_compatible(step, abstract_state)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
