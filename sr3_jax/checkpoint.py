"""Orbax checkpoints of the train state with the Grain iterator state beside it.

A workdir's `checkpoints/<step>/` holds two items: `state` (the TrainState, restored straight into
the target shardings, so a run saved on 8 devices resumes on 1 or 4) and `data` (the Grain
iterator's position). Saves are asynchronous; Orbax writes into a temporary folder and renames
it when complete, so a save killed half-way leaves the previous step as the latest.

A save that fails, in the caller's thread or in Orbax's background threads, raises `SaveError`
naming the folder, the step and the cause at the next `save`, `check` or `wait`: the training loop
checks after every step, so a run whose checkpoints cannot be written stops at once instead of
training on unsaved. Checkpoints completed before it stay as they are.
"""

from __future__ import annotations

import json
import os
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from sr3_jax import paths, sharding, train_state
from sr3_jax.models import joint as joint_model, unet


class SaveError(RuntimeError):
  """A checkpoint save failed; the message names the folder, the step and the cause."""


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
    if not paths.is_remote(directory) and not os.path.isabs(os.fspath(directory)):
      raise ValueError(
        f"checkpoint folder {directory} is not an absolute path; resolve it where the "
        f"command starts (sr3_jax.paths.resolve)"
      )
    options = ocp.CheckpointManagerOptions(
      save_interval_steps=ccfg.every,
      max_to_keep=ccfg.keep,
      keep_period=ccfg.get("keep_every") or None,
      enable_async_checkpointing=ccfg.get("async_save", True),
      cleanup_tmp_directories=True,
    )
    self.directory = directory
    self.manager = ocp.CheckpointManager(
      directory,
      options=options,
      item_handlers={
        "state": ocp.StandardCheckpointHandler(),
        "data": grain.checkpoint.CheckpointHandler(),
      },
    )

    self._pending: int | None = None  # the step of a save that may still be running
    self.last_complete: int | None = self.manager.latest_step()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def _error(self, step: int | None, cause: BaseException) -> SaveError:
    done = (
      f"The checkpoints up to step {self.last_complete} are complete and kept"
      if self.last_complete is not None
      else "No checkpoint of this run was completed"
    )
    what = f"step {step}" if step is not None else "a checkpoint"
    return SaveError(
      f"saving {what} to {self.directory} failed: {type(cause).__name__}: {str(cause)[:500]}. "
      f"{done}; fix the cause (a writable folder, free space, credentials for a bucket) and "
      f"rerun the same command to resume"
    )

  def check(self) -> None:
    """Raises SaveError if a save running in the background has failed; cheap, call it every step."""
    step = self._pending
    try:
      self.manager.check_for_errors()
      # Orbax's finalizing thread (renaming the finished save into place) keeps its own exception.
      failed = self.manager._finalize_thread.map(  # pylint: disable=protected-access
        lambda t: t.exception if t is not None and not t.is_alive() else None
      )
    except AttributeError:  # another Orbax version: its errors still surface in wait()
      failed = None
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise self._error(step, e) from e
    if failed is not None:
      raise self._error(step, failed) from failed
    if step is not None and not self.manager.is_saving_in_progress():
      self.last_complete, self._pending = step, None

  def _probe(self, step: int) -> None:
    """Creates and removes a folder where Orbax will create the step's: a local folder that refuses
    new entries raises SaveError here (Orbax 0.12 waits forever when its own mkdir fails)."""
    if paths.is_remote(self.directory):
      return
    # One name per process: processes sharing the folder must not remove each other's probe.
    probe = os.path.join(
      os.fspath(self.directory), f".sr3-write-probe-{step}-{jax.process_index()}"
    )
    try:
      os.makedirs(probe, exist_ok=True)
      os.rmdir(probe)
    except OSError as e:
      raise self._error(step, e) from e

  def save(self, step: int, state: Any, data_iter: Any, force: bool = False) -> bool:
    """Starts saving `step` (when due by the interval, or `force`); True if a save was started."""
    self.check()
    if force or self.manager.should_save(step):
      self._probe(step)
    args = ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iter)
    )
    try:  # Orbax first waits for the previous save: an error here may be that one's
      started = self.manager.save(step, args=args, force=force)
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise self._error(step if self._pending is None else self._pending, e) from e
    if started:
      if self._pending is not None:  # finished without error before this one began
        self.last_complete = self._pending
      self._pending = step
    return started

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def check_compatible(self, step: int, abstract_state: Any) -> None:
    """Raises one error naming the first parameter whose shape differs (or that is missing)."""
    meta = self.manager.item_metadata(step)["state"]
    saved = {
      _name(p): tuple(m.shape)
      for p, m in jax.tree_util.tree_flatten_with_path(meta)[0]
      if hasattr(m, "shape")
    }
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]:
      key = _name(path)
      want = tuple(leaf.shape)
      if key not in saved:
        raise ValueError(
          f"checkpoint {self.directory}/{step} was written by a different model: it has no "
          f"parameter {key} (shape {want} in this model); use another --workdir or the "
          f"config that wrote it"
        )
      if saved[key] != want:
        raise ValueError(
          f"checkpoint {self.directory}/{step} was written by a different model: {key} has "
          f"shape {saved[key]} there and {want} in this model; use another --workdir or "
          f"the config that wrote it"
        )

  def restore(self, step: int, abstract_state: Any, data_iter: Any | None) -> Any:
    """Restores the state into `abstract_state`'s shapes and shardings (and the iterator in place)."""
    self.check_compatible(step, abstract_state)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

  def wait(self) -> None:
    """Waits for a running save; raises SaveError if it failed."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise self._error(self._pending, e) from e
    self.check()

  def close(self) -> None:
    """Waits for a running save and closes the manager; raises SaveError if the save failed."""
    try:
      self.manager.close()
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise self._error(self._pending, e) from e


# ---------------------------------------------------------------------------------------------
# Loading a run for inference (eval, upscale, cascade, tune-schedule).


def resolve_checkpoint(path: str) -> tuple[epath.Path, int | None]:
  """A workdir (latest step) or one of its step folders (…/checkpoints/<step>) → (workdir, step)."""
  p = epath.Path(paths.resolve(path))
  if (p / "config.json").exists():
    return p, None
  if (
    p.name.isdigit()
    and p.parent.name == "checkpoints"
    and (p.parent.parent / "config.json").exists()
  ):
    return p.parent.parent, int(p.name)
  raise FileNotFoundError(
    f"--checkpoint {path} is neither a workdir (with config.json) nor a step "
    f"folder WORKDIR/checkpoints/STEP; point it at what `sr3 train --workdir` wrote"
  )


def load_config(path: str) -> ml_collections.ConfigDict:
  """The config.json of a workdir or step folder."""
  workdir, _ = resolve_checkpoint(path)
  return ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))


def finished(workdir: str, num_steps: int) -> bool:
  """Whether `workdir` holds a run whose latest checkpoint is step `num_steps`."""
  root = epath.Path(paths.resolve(workdir))
  if not (root / "checkpoints").exists():
    return False
  steps = [int(p.name) for p in (root / "checkpoints").iterdir() if p.name.isdigit()]
  return bool(steps) and max(steps) >= num_steps


def load_for_inference(
  path: str, member: str | None = None
) -> tuple[ml_collections.ConfigDict, unet.UNet, Any, int]:
  """(config, model, EMA params, step) from a workdir or step folder, replicated on local devices.
  A joint fine-tuning run (sr3_jax/joint.py) holds several stages: `member` names the one to load
  (its own config, U-Net and params); it is ignored for an ordinary run."""
  workdir, step = resolve_checkpoint(path)
  config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  config.mesh.update(dict(data=-1, fsdp=1, dcn_data=-1, dcn_fsdp=1, rules=()))
  is_joint = joint_model.is_joint(config)
  if is_joint and member not in config.joint.stages:
    raise ValueError(
      f"{workdir} is a joint fine-tuning run of stages {list(config.joint.stages)}, not one model"
      + (f", and holds no stage {member!r}" if member else "")
      + "; load it as a cascade's stages (sr3 cascade --config CASCADE.py:use_joint=A+B)"
    )
  mesh = sharding.make_mesh(config, jax.local_devices())
  model = joint_model.build(config, mesh.devices.flat)
  abstract, _ = train_state.abstract_train_state(config, model, mesh)
  ckpt = Checkpointer(workdir / "checkpoints", config.checkpoint)
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(
      f"{workdir} holds no complete checkpoint yet; train longer or pick another workdir"
    )
  state = ckpt.restore(step, abstract, None)
  ckpt.close()
  if is_joint:
    return (
      ml_collections.ConfigDict(config.joint.members[member].to_dict()),
      model[member],
      state.ema_params[member],
      step,
    )
  return config, model, state.ema_params, step
