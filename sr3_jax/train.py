"""One SPMD update step over a device mesh, and the training loop around it.

The step is a single `jax.jit` over a `Mesh` (sr3_jax/sharding.py): the batch is split over every
device, the state (sr3_jax/train_state.py) is replicated or FSDP-sharded and donated, and nothing
returns to the host inside the step. Randomness is `fold_in(key(seed), step)`. A step whose loss or
gradients are not finite leaves the state unchanged and is counted. The loop saves Orbax
checkpoints (sr3_jax/checkpoint.py), resumes exactly, and stops cleanly on preemption.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from PIL import Image
from tqdm import tqdm

from sr3_jax import (
  checkpoint,
  configs,
  diffusion,
  distill,
  hash_prng,
  images,
  inference,
  joint,
  metrics as sr_metrics,
  paths,
  sharding,
)
from sr3_jax.data import degrade, loader
from sr3_jax.models import joint as joint_model, unet
from sr3_jax.train_state import (  # noqa: F401  (the public names of sr3_jax.train)
  TrainState,
  abstract_train_state,
  create_train_state,
  ema_decay,
  init_state,
  learning_rate_schedule,
  make_optimizer,
)
from sr3_jax.writers import MetricWriter

Array = jax.Array


def apply_fn_for(model: unet.UNet) -> Callable[..., Array]:
  """model.apply in the (params, z, γ, cond, train, rngs) form the loss and samplers use."""

  def apply_fn(params, z, gamma, cond, train=False, rngs=None, **extra):
    return model.apply({"params": params}, z, gamma, cond, train=train, rngs=rngs, **extra)

  return apply_fn


def resolve_dropout_rng(name: str, devices) -> str:
  """train.dropout_rng with `auto` decided by the devices the step runs on (see configs.base_config)."""
  if name != "auto":
    return name
  return "threefry" if any(d.platform == "gpu" for d in devices) else "hash"


def dropout_key(key: Array, impl: str) -> Array:
  """A Threefry key as a key of the generator `impl` (threefry, hash, rbg or unsafe_rbg)."""
  if impl == "threefry":
    return key
  if impl == "hash":
    return hash_prng.key_from(key)
  return jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl=impl)


def make_train_step(config, model: unet.UNet | joint_model.JointModel, mesh: Mesh):
  """Returns the jitted step(state, batch) → (state, metrics); the state is donated and keeps its
  shardings (replicated, or FSDP by config.mesh rules); metrics come back replicated."""
  impl = resolve_dropout_rng(config.train.get("dropout_rng", "auto"), mesh.devices.flat)
  distilling = distill.is_distillation(config)
  key_fn = functools.partial(dropout_key, impl=impl)
  if joint.is_joint(config):  # several stages' U-Nets, one state (sr3_jax/joint.py)
    loss_fn = joint.make_loss_fn(model, config, key_fn)
  else:
    make_loss = distill.make_loss_fn if distilling else diffusion.make_loss_fn
    loss_fn = make_loss(apply_fn_for(model), config, key_fn)
  optimizer = make_optimizer(config.optim)
  lr_fn = learning_rate_schedule(config.optim)
  base_key = jax.random.key(config.seed)

  def step_fn(state: TrainState, batch: dict[str, Array], *teacher):
    rng = jax.random.fold_in(base_key, state.step)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, batch, rng, *teacher
    )
    grad_norm = optax.tree.norm(grads)
    decay = ema_decay(config.optim, state.step)

    def apply_update(tree):
      params, ema_params, opt_state = tree
      updates, new_opt = optimizer.update(grads, opt_state, params)
      new_params = optax.apply_updates(params, updates)
      new_ema = jax.tree_util.tree_map(
        lambda e, p: decay * e + (1.0 - decay) * p, ema_params, new_params
      )
      return (new_params, new_ema, new_opt), optax.tree.norm(updates)

    def skip_update(tree):
      return tree, jnp.zeros((), jnp.float32)

    # A non-finite step leaves params, EMA and optimizer state as they were. A branch rather than
    # jnp.where over every leaf: the update then runs in place on the donated buffers, where the
    # select kept old and new copies alive (docs/cpu_performance.md, the non-finite skip).
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    (params, ema_params, opt_state), update_norm = jax.lax.cond(
      finite, apply_update, skip_update, (state.params, state.ema_params, state.opt_state)
    )
    new_state = TrainState(
      step=state.step + 1,
      params=params,
      ema_params=ema_params,
      opt_state=opt_state,
      skipped=state.skipped + (~finite).astype(jnp.int32),
      consecutive_skips=jnp.where(finite, 0, state.consecutive_skips + 1),
    )
    metrics = {
      "loss": loss,
      "grad_norm": grad_norm,
      "param_norm": optax.tree.norm(new_state.params),
      "update_norm": update_norm,  # 0 on a skipped step
      "learning_rate": lr_fn(state.step),
      "skipped": new_state.skipped,
      "consecutive_skips": new_state.consecutive_skips,
    }
    return new_state, metrics

  _, shardings = abstract_train_state(config, model, mesh)
  replicated = NamedSharding(mesh, P())
  # A distillation step also takes the teacher's params, sharded like the student's.
  return jax.jit(
    step_fn,
    in_shardings=(shardings, sharding.batch_sharding(mesh))
    + ((shardings.params,) if distilling else ()),
    out_shardings=(shardings, replicated),
    donate_argnums=(0,),
  )


# ---------------------------------------------------------------------------------------------
# The training loop.

# Fields a resumed run may change without --config.allow_config_change.
RESUMABLE_CHANGES = ("train.num_steps", "allow_config_change")


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
  return out


def check_workdir_config(config, workdir) -> None:
  """Writes config.json into a new workdir; in an existing one, a different config is an error."""
  path = epath.Path(workdir) / "config.json"
  new = json.loads(config.to_json_best_effort())
  if path.exists():
    old = json.loads(path.read_text())
    # A field the saved config lacks (added to sr3_jax since) is no change if it holds its default.
    defaults = _flat(json.loads(configs.base_config().to_json_best_effort()))
    flat_old, flat_new = _flat(old), _flat(new)
    for name in unet.DEPRECATED_CONV_FIELDS:  # replaced by model.conv_impl: `auto` changes nothing
      if flat_old.get(f"model.{name}") == "auto" and f"model.{name}" not in flat_new:
        del flat_old[f"model.{name}"]
    for flat in (flat_old, flat_new):  # `auto` is the generator it resolves to here
      if flat.get("train.dropout_rng") == "auto":
        flat["train.dropout_rng"] = resolve_dropout_rng("auto", jax.devices())
    diff = sorted(
      k
      for k in set(flat_old) | set(flat_new)
      if flat_old.get(k) != flat_new.get(k)
      and k not in RESUMABLE_CHANGES
      and not (k not in flat_old and k in defaults and flat_new.get(k) == defaults[k])
    )
    if diff and not config.get("allow_config_change", False):
      k = diff[0]
      raise ValueError(
        f"workdir {workdir} holds a run with a different config: {k} is "
        f"{flat_old.get(k)!r} there and {flat_new.get(k)!r} now ({len(diff)} field(s) "
        f"differ); use a new --workdir or pass --config.allow_config_change=True"
      )
  if jax.process_index() == 0:
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(new, indent=2))


def validate_for_mesh(config, mesh: Mesh, processes: int | None = None) -> None:
  """The global batch splits evenly over the mesh's devices and the processes feeding it."""
  bs = config.train.batch_size
  processes = jax.process_count() if processes is None else processes
  if bs % mesh.size:
    raise ValueError(
      f"train.batch_size={bs} is not divisible by the {mesh.size} devices of the mesh "
      f"(mesh.data × mesh.fsdp = {mesh.shape['data']} × {mesh.shape['fsdp']})"
    )
  if bs % processes:
    raise ValueError(f"train.batch_size={bs} is not divisible by the {processes} processes")


class _Preemption:
  """SIGTERM → a flag the loop checks (single process; with several, Orbax's sync point decides)."""

  def __init__(self):
    self.requested = False
    self._previous = None
    if jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    self.requested = True

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _sample_grid(
  config, model, mesh, params, hr: np.ndarray, sampler_fn, gammas, step: int
) -> tuple[np.ndarray, dict[str, float]]:
  """(LR | bicubic | EMA sample | HR) rows for a few fixed held-out crops, as one uint8 image, and
  the evaluation metrics of those samples (PSNR, SSIM, consistency; bicubic alongside)."""
  replicated = NamedSharding(mesh, P())
  rng = jax.random.fold_in(jax.random.key(config.seed + 7), step)
  if (
    config.model.conditioning == "none"
  ):  # a base stage: (sample | training-distribution image) rows
    n = hr.shape[0]
    labels = np.arange(n, dtype=np.int32) % max(config.model.get("num_classes", 0), 1)
    labels = jax.make_array_from_process_local_data(replicated, labels)
    out = sampler_fn(params, labels, gammas, rng, guidance=config.sampling.get("guidance", 1.0))
    out = np.asarray(out.addressable_data(0))
    rows = [
      np.concatenate([images.to_uint8(out[i]), images.to_uint8(hr[i])], axis=1) for i in range(n)
    ]
    return np.concatenate(rows, axis=0), {}
  hr_g = jax.make_array_from_process_local_data(replicated, hr)
  lr = degrade.downsample(hr_g, config.data.factor, value_range=(-1.0, 1.0))
  up = degrade.upsample(lr, config.data.factor, value_range=(-1.0, 1.0))
  sr = sampler_fn(params, lr, gammas, rng)
  f = config.data.factor
  lr_big = np.repeat(np.repeat(np.asarray(lr.addressable_data(0)), f, axis=1), f, axis=2)
  cols = [lr_big, np.asarray(up.addressable_data(0)), np.asarray(sr.addressable_data(0)), hr]
  rows = [np.concatenate([images.to_uint8(c[i]) for c in cols], axis=1) for i in range(hr.shape[0])]
  to01 = lambda x: (np.asarray(x, np.float32) + 1.0) / 2.0
  lr01 = to01(lr.addressable_data(0))
  scores = {}
  for name, img in (("eval/sr3", cols[2]), ("eval/bicubic", cols[1])):
    for k, v in sr_metrics.sr_scores(to01(img), to01(hr), lr01, f).items():
      scores[f"{name}_{k}"] = float(np.mean(v))
  return np.concatenate(rows, axis=0), scores


def wait_for_all_processes(name: str, timeout_s: int = 600) -> None:
  """Returns once every process has called it with `name`: a barrier of the coordination service.

  A process's first collective on the CPU (Gloo) gives up after 30 s if a peer has not reached it
  yet. Processes start seconds apart (imports, restoring a workdir), and Orbax's first sync is
  such a collective, so they line up here first. `name` must not repeat within a run.
  """
  if jax.process_count() == 1:
    return
  from jax._src import distributed

  if distributed.global_state.client is not None:
    distributed.global_state.client.wait_at_barrier(name, timeout_s * 1000)


def train_and_evaluate(config, workdir, log=None) -> TrainState:
  """Trains config.train.num_steps steps in `workdir`, resuming from its latest checkpoint.

  Returns the final state. On SIGTERM (or Orbax's preemption sync point on a pod) it saves the
  current step, waits for the save and returns early; the caller exits 0 and a rerun resumes.
  """
  log = log or sys.stderr
  configs.validate(config)
  mesh = sharding.make_mesh(config)
  validate_for_mesh(config, mesh)
  workdir = epath.Path(paths.resolve(workdir))  # relative or ~ as typed; gs:// as it is
  local_bs = config.train.batch_size // jax.process_count()
  data_iter = iter(  # first: a dataset that is not prepared stops the run before anything else
    loader.make_dataset(config.data, config.data.train_split, local_bs, seed=config.seed)
  )
  check_workdir_config(config, workdir)
  model = joint_model.build(config, mesh.devices.flat)
  abstract, state_shardings = abstract_train_state(config, model, mesh)
  wait_for_all_processes("sr3_train_start")
  ckpt = checkpoint.Checkpointer(workdir / "checkpoints", config.checkpoint)
  latest = ckpt.latest_step()
  teacher, start_from = (), None
  if distill.is_distillation(config):  # the student starts from its teacher's EMA params
    params, teacher_step = distill.load_teacher(config)
    teacher = (jax.device_put(params, state_shardings.params),)
    start_from = teacher[0]
    print(f"distilling {config.distill.teacher} (step {teacher_step})", file=log)
  if latest is None:
    if joint.is_joint(config):  # each stage starts from its own run's EMA params
      start_from = jax.device_put(joint.load_init(config), state_shardings.params)
      print(
        f"joint fine-tuning {list(config.joint.stages)} from {config.joint.init_root}", file=log
      )
    state = create_train_state(config, model, mesh)
    if start_from is not None:
      copy = jax.jit(lambda p: p, out_shardings=state_shardings.params)  # new buffers: donated
      state = state.replace(params=copy(start_from), ema_params=copy(start_from))
  else:
    state = ckpt.restore(latest, abstract, data_iter)
    print(f"resumed {workdir} from step {latest}", file=log)
  step_fn = make_train_step(config, model, mesh)
  bsharding = sharding.batch_sharding(mesh)
  writer = MetricWriter(workdir)
  preemption = _Preemption()
  tcfg = config.train
  sampler_fn = gammas = sample_hr = None
  if tcfg.sample_every:
    base = config.model.conditioning == "none"
    sampler_fn = (inference.make_generate if base else inference.make_super_resolve)(config, model)
    gammas = inference.inference_grid(config, tcfg.sample_steps)
    eval_src = loader.make_dataset(
      loader.eval_block(config.data),
      config.data.eval_split,
      4,
      seed=0,
      train=False,
      process_index=0,
      process_count=1,
    )
    sample_hr = next(iter(eval_src))["hr"]
    if jax.process_index() == 0:
      (workdir / "samples").mkdir(parents=True, exist_ok=True)

  start = int(state.step)
  last_saved = latest
  bar = tqdm(
    total=tcfg.num_steps,
    initial=start,
    desc="train",
    file=log,
    mininterval=2.0,
    disable=jax.process_index() != 0,
  )
  t_log, steps_since = time.perf_counter(), 0
  failing = False
  try:
    for step in range(start, tcfg.num_steps):
      state, metrics = step_fn(state, loader.global_batch(next(data_iter), bsharding), *teacher)
      done = step + 1
      steps_since += 1
      bar.update(1)
      if done % tcfg.log_every == 0 or done == tcfg.num_steps:
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}  # the only host sync
        dt = (time.perf_counter() - t_log) / steps_since
        m.update(step_time_s=dt, examples_per_s=tcfg.batch_size / dt)
        writer.scalars(done, m)
        bar.set_postfix(loss=f"{m['loss']:.4f}", skipped=int(m["skipped"]))
        t_log, steps_since = time.perf_counter(), 0
        if m["consecutive_skips"] >= tcfg.max_consecutive_skips:
          raise FloatingPointError(
            f"stopping at step {done}: the last {int(m['consecutive_skips'])} steps had a non-finite loss "
            f"or gradient (train.max_consecutive_skips={tcfg.max_consecutive_skips}); the state is that of "
            f"the last finite step and checkpoints up to step {last_saved} are intact. Lower optim.lr, "
            f"check the data, or raise optim.grad_clip"
          )
      if sampler_fn is not None and done % tcfg.sample_every == 0:
        grid, scores = _sample_grid(
          config, model, mesh, state.ema_params, sample_hr, sampler_fn, gammas, done
        )
        if scores:
          writer.scalars(done, scores)
        if jax.process_index() == 0:
          Image.fromarray(grid).save(str(workdir / "samples" / f"step_{done:08d}.png"))
          writer.image(done, "samples", grid)
      if ckpt.save(done, state, data_iter):
        last_saved = done
      ckpt.check()  # a failed background save stops the run now, not at the end
      if preemption.requested or (jax.process_count() > 1 and ckpt.reached_preemption(done)):
        if last_saved != done:
          ckpt.save(done, state, data_iter, force=True)
        ckpt.wait()
        print(
          f"preempted: saved step {done} in {workdir}; rerun the same command to resume", file=log
        )
        return state
    if last_saved != tcfg.num_steps and int(state.step) == tcfg.num_steps:
      ckpt.save(tcfg.num_steps, state, data_iter, force=True)
    ckpt.wait()
    return state
  except BaseException:
    failing = True
    raise
  finally:
    bar.close()
    preemption.restore()
    writer.close()
    try:
      ckpt.close()
    except checkpoint.SaveError as e:
      if not failing:
        raise
      print(f"also: {e}", file=log)  # the error in flight is the one to report
