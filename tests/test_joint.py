"""Joint fine-tuning of adjacent cascade stages: which stage's gradient sees what (the sample fed
upward, stopped or unrolled; the control is two independent losses), shared noise against its
numpy closed form, and a joint run end to end: it starts from the stages' runs, its checkpoint is
a cascade's stages, and bad input is named."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sr3_jax import cascade, checkpoint, configs, joint, train
from sr3_jax.models import joint as joint_model

from cascade_stages import FACES, train_faces_sr  # tests/

JOINT = f"{FACES}:joint=sr32+sr64,runlocal"


@pytest.fixture(scope="module")
def stage_runs(tmp_path_factory):
  """The faces cascade's runlocal 8→16 and 16→32 stages trained 2 steps."""
  root = tmp_path_factory.mktemp("joint_runs")
  train_faces_sr(root)
  return root


def _joint(**joint_fields):
  c = configs.load(JOINT)
  c.joint.update(dict(sample_steps=2, **joint_fields))
  for n in c.joint.stages:  # XLA's convolutions compile faster than the CPU kernels' gradients
    c.joint.members[n].model.conv_impl = "xla"
  return c


def _loss(**joint_fields):
  c = _joint(**joint_fields)
  model = joint_model.build(c)
  # The U-Nets' last convolutions start at zero: perturb every leaf so that each stage's output
  # depends on its params, and a second set differs in all of them.
  params = model.init_params(jax.random.key(0))
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.key(1), 2 * len(leaves))
  shift = lambda k: [x + 0.05 * jax.random.normal(ki, x.shape) for x, ki in zip(leaves, k)]
  params = jax.tree_util.tree_unflatten(tree, shift(keys[: len(leaves)]))
  other = jax.tree_util.tree_unflatten(tree, shift(keys[len(leaves) :]))
  fn = joint.make_loss_fn(model, c)
  hr = jax.random.uniform(jax.random.key(2), (2, 32, 32, 3), minval=-1.0, maxval=1.0)
  return fn, params, other, {"hr": hr}


def _mix(a, b, **names):
  return {n: (a if names.get(n, "a") == "a" else b)[n] for n in a}


def _close(x, y):
  return all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.allclose, x, y)))


@pytest.mark.parametrize("grad", ["stop", "unroll"])
def test_the_lower_stage_gradient_sees_the_upper_stage_only_when_unrolled(grad):
  fn, p, q, batch = _loss(grad=grad)
  vg = jax.jit(jax.value_and_grad(lambda params: fn(params, batch, jax.random.key(3))[0]))
  (l1, g1), (l2, g2) = vg(p), vg(_mix(p, q, sr64="b"))
  assert np.isfinite(l1) and l1 != l2
  lower_moves = not _close(g1["sr32"], g2["sr32"])
  assert lower_moves == (grad == "unroll")
  # The upper stage is fed the lower stage's sample either way: its gradient depends on it.
  (_, g3) = vg(_mix(p, q, sr32="b"))
  assert not _close(g1["sr64"], g3["sr64"])


def test_without_feeding_the_loss_is_two_independent_losses():
  """feed=False, weight 0: L(a, b) = f(a) + g(b), so L(a,b) + L(a',b') = L(a,b') + L(a',b)."""
  fn, p, q, batch = _loss(feed=False, weight=0.0)
  loss = jax.jit(lambda params: fn(params, batch, jax.random.key(3))[0])
  same = float(loss(p)) + float(loss(q))
  crossed = float(loss(_mix(p, q, sr64="b"))) + float(loss(_mix(p, q, sr32="b")))
  assert same == pytest.approx(crossed, rel=1e-5)
  assert float(loss(p)) != pytest.approx(float(loss(_mix(p, q, sr64="b"))), rel=1e-3)


def test_shared_noise_is_the_box_mean_renormalised():
  x = np.random.default_rng(0).standard_normal((64, 32, 32, 3))
  ref = 4 * x.reshape(64, 8, 4, 8, 4, 3).mean(axis=(2, 4))  # F = 4: the mean of 16 normals × 4
  got = 4 * np.asarray(joint._box_down(jnp.asarray(x, jnp.float32), 4))
  np.testing.assert_allclose(got, ref, atol=1e-5)
  assert abs(ref.std() - 1.0) < 0.02 and abs(ref.mean()) < 0.02
  # Wired in: with shared noise the loss changes, and stays finite.
  fn, p, _, batch = _loss(shared_noise=True)
  fn0, _, _, _ = _loss()
  a, b = fn(p, batch, jax.random.key(3))[0], fn0(p, batch, jax.random.key(3))[0]
  assert np.isfinite(a) and a != b


def test_bad_joint_configs_are_named():
  def check(spec, match, **fields):
    c = configs.load(spec)
    c.joint.update(fields)
    with pytest.raises(ValueError, match=match):
      configs.validate(c)

  check(f"{FACES}:joint=sr32+sr128,runlocal", "do not chain: 'sr32' outputs 16²")
  check(f"{FACES}:joint=base16+sr32,runlocal", "'base16' is a base stage")
  check(f"{FACES}:joint=sr32,runlocal", "two or more adjacent stages")
  check(JOINT, "joint.grad='both'", grad="both")
  c = configs.load(JOINT)
  c.train.sample_every = 5
  with pytest.raises(ValueError, match="train.sample_every"):
    configs.validate(c)
  with pytest.raises(ValueError, match="cascade has stages"):
    configs.load(f"{FACES}:runlocal,use_joint=sr32+sr99")


def test_a_joint_run_starts_from_the_stages_and_is_a_cascades_stages(stage_runs, tmp_path):
  c = _joint()  # the stages ran with the CPU kernels: the same params
  c.joint.init_root = str(stage_runs)
  c.train.update(dict(num_steps=2, log_every=1))
  work = tmp_path / "joint_sr32_sr64"
  state = train.train_and_evaluate(c, work)
  assert int(state.step) == 2
  init = {n: checkpoint.load_for_inference(str(stage_runs / n))[2] for n in ("sr32", "sr64")}
  for n in ("sr32", "sr64"):
    # Started from the stage's run (same tree), and trained away from it.
    assert jax.tree_util.tree_structure(init[n]) == jax.tree_util.tree_structure(state.params[n])
    assert not _close(init[n], state.params[n])
  # The cascade loads each stage from the joint run: its own config and the run's EMA params.
  entries = configs.load(f"{FACES}:runlocal,use_joint=sr32+sr64").stages
  by_name = {e.name: e for e in entries}
  assert by_name["sr64"].joint == "joint_sr32_sr64" and not by_name["sr128"].joint
  stage = cascade.stage_from_config(by_name["sr64"], str(tmp_path))
  assert stage.config.data.image_size == 32 and stage.factor == 2
  assert _close(stage.params, state.ema_params["sr64"])
  with pytest.raises(ValueError, match="joint fine-tuning run of stages"):
    checkpoint.load_for_inference(str(work))  # sr3 eval / upscale: not one model


def test_a_joint_run_from_missing_or_foreign_runs_is_refused(stage_runs, tmp_path):
  c = configs.load(JOINT)
  c.joint.init_root = str(tmp_path / "nothing")
  with pytest.raises(FileNotFoundError, match="joint stage 'sr32' starts from its own run"):
    train.train_and_evaluate(c, tmp_path / "a")
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "sr32").symlink_to(stage_runs / "sr64")  # another stage's run under sr32's name
  (foreign / "sr64").symlink_to(stage_runs / "sr64")
  c.joint.init_root = str(foreign)
  with pytest.raises(ValueError, match="joint stage 'sr32'.*run of another config"):
    train.train_and_evaluate(c, tmp_path / "b")
