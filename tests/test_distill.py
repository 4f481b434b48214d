"""Progressive distillation: the student's target against the paper's two-DDIM-step construction
in float64 numpy, the exact-denoiser closed form, and `sr3 distill` end to end on a tiny teacher
(rounds, resume inside a round, the students as checkpoints `sr3 eval` loads, bad input)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sr3_jax import checkpoint, cli, configs, distill, evaluate, processes


def _config(target="x0"):
  c = configs.load("experiments/configs/demo.py:runlocal")
  c.diffusion.update(dict(target=target, diffuse="hr"))
  c.sampling.schedule.update(dict(kind="logsnr", name="cosine", logsnr_min=-12.0, logsnr_max=12.0))
  c.distill.update(dict(teacher="unused", teacher_steps=8))
  c.sampling.steps = 4
  return c


def _batch(c, n=3):
  rng = np.random.default_rng(0)
  s = c.data.image_size
  return {"hr": jnp.asarray(rng.uniform(-0.9, 0.9, (n, s, s, 3)), jnp.float32)}


def test_target_is_the_two_step_ddim_construction_in_float64():
  """Teacher: x̂0 = 0.5·z (an x0 model), student output 0: the loss is the mean square of the
  paper's target ỹ, computed here from the same noise and step indices in float64."""
  c = _config()
  proc = processes.from_config(c)
  teacher = lambda params, z, g, cond, train=False, rngs=None, **kw: params * z
  student = lambda params, z, g, cond, train=False, rngs=None, **kw: jnp.zeros_like(z)
  fn = distill.make_loss_fn(lambda p, *a, **k: (teacher if p == 0.5 else student)(p, *a, **k), c)
  batch, rng = _batch(c), jax.random.key(3)
  _, out = fn(0.0, batch, rng, 0.5)
  # The same random draws as the loss (its split order), then the math in float64.
  step_key, noise_key = jax.random.split(rng, 5)[:2]
  hr = np.asarray(batch["hr"], np.float64)
  noise = np.asarray(jax.random.normal(noise_key, hr.shape, jnp.float32), np.float64)
  i = np.asarray(jax.random.randint(step_key, (3,), 1, 5))
  g = np.asarray(proc.grid(8), np.float64)  # γ, cleanest first
  want = []
  for k in range(3):
    ga, gb, gc = g[2 * i[k]], g[2 * i[k] - 1], g[2 * i[k] - 2]
    za = np.sqrt(ga) * hr[k] + np.sqrt(1 - ga) * noise[k]

    def step(z, g0, g1):
      x = np.clip(0.5 * z, -1, 1)  # diffuse="hr": x̂0 clipped, as the samplers do
      e = (z - np.sqrt(g0) * x) / np.sqrt(1 - g0)
      return np.sqrt(g1) * x + np.sqrt(1 - g1) * e

    zc = step(step(za, ga, gb), gb, gc)
    r = np.sqrt(1 - gc) / np.sqrt(1 - ga)
    y = (zc - r * za) / (np.sqrt(gc) - r * np.sqrt(ga))
    want.append(np.mean(y**2))
  np.testing.assert_allclose(np.asarray(out.loss_per_example), want, rtol=2e-4)


@pytest.mark.parametrize("target", ["eps", "x0", "v"])
def test_an_exact_teacher_targets_the_data(target):
  """A teacher that knows y0 (every x̂0 is the data) makes ỹ = y0 exactly (Salimans & Ho, eq. 8):
  a student predicting y0 in its parameterisation has zero loss, one off by δ has loss δ² (x0)."""
  c = _config(target)
  proc = processes.from_config(c)
  batch = _batch(c)
  y0 = batch["hr"]

  def oracle(params, z, g, cond, train=False, rngs=None, **kw):
    level = g  # the Gaussian process's level is γ
    eps = proc.eps_from_x0(z, level, y0)
    return proc.output(y0 + params, eps, level, target)

  fn = distill.make_loss_fn(oracle, c)
  loss, _ = fn(0.0, batch, jax.random.key(1), 0.0)
  assert float(loss) < 1e-6
  if target == "x0":
    loss, _ = fn(0.1, batch, jax.random.key(1), 0.0)
    assert float(loss) == pytest.approx(0.01, rel=1e-3)


def test_rounds_and_bad_values():
  assert distill.halvings(64, 4) == [64, 32, 16, 8]
  with pytest.raises(ValueError, match="does not halve to --steps-to 4"):
    distill.halvings(24, 4)
  c = _config()
  c.distill.teacher_steps = 5
  with pytest.raises(ValueError, match="teacher_steps=5: .* even number"):
    distill.validate(c)
  c = _config()
  c.sampling.schedule.kind = "beta"
  with pytest.raises(ValueError, match="log-SNR schedule"):
    distill.validate(c)


def test_sr3_distill_end_to_end(tiny_workdir, tmp_path, capsys):
  root = tmp_path / "students"
  argv = ["distill", "--teacher", str(tiny_workdir), "--workdir", str(root)]
  argv += ["--steps-from", "4", "--steps-to", "1", "--set", "train.num_steps=2"]
  argv += ["--set", "checkpoint.every=1"]
  assert cli.main(argv) == 0, capsys.readouterr().err
  assert capsys.readouterr().out.split() == [str(root / "steps_2"), str(root / "steps_1")]
  for n, teacher in ((2, tiny_workdir), (1, root / "steps_2")):
    cfg = json.loads((root / f"steps_{n}" / "config.json").read_text())
    assert cfg["sampling"]["steps"] == n and cfg["sampling"]["sampler"] == "ddim"
    assert cfg["sampling"]["eta"] == 1.0  # students sample ancestrally (distill_rounds)
    assert cfg["sampling"]["schedule"]["kind"] == "logsnr"
    assert cfg["distill"] == {"teacher": str(teacher), "teacher_steps": 2 * n}
  # The student started from its teacher: two small Adam steps away from its params.
  _, _, teacher_params, _ = checkpoint.load_for_inference(str(tiny_workdir))
  _, _, student_params, _ = checkpoint.load_for_inference(str(root / "steps_2"))
  diffs = [
    float(np.abs(np.asarray(a) - np.asarray(b)).max())
    for a, b in zip(
      jax.tree_util.tree_leaves(teacher_params), jax.tree_util.tree_leaves(student_params)
    )
  ]
  assert 0 < max(diffs) < 0.05
  # Done rounds are skipped; an interrupted round resumes inside it from its checkpoint.
  assert cli.main(argv) == 0
  assert capsys.readouterr().err.count("is done") == 2
  import shutil

  shutil.rmtree(root / "steps_1" / "checkpoints" / "2")  # as if stopped after step 1
  assert cli.main(argv) == 0
  err = capsys.readouterr().err
  assert "steps_2 is done" in err and "resumed" in err and "from step 1" in err
  # The 1-step student is a checkpoint sr3 eval samples with its own step count.
  r = evaluate.evaluate(str(root / "steps_1"), num_images=1, samples=1, output=str(tmp_path / "e"))
  assert r["steps"] == 1 and r["sampler"] == "ddim"
  # Bad input: a teacher of another network, a step count that does not halve.
  other = ["distill", "--teacher", str(tiny_workdir), "--workdir", str(tmp_path / "o")]
  other += ["--steps-from", "2", "--steps-to", "1", "--set", "model.channels=8"]
  assert cli.main(other) == 2
  assert "checkpoint of another config: model.channels" in capsys.readouterr().err
  bad = ["distill", "--teacher", str(tiny_workdir), "--workdir", str(tmp_path / "b")]
  assert cli.main(bad + ["--steps-from", "6", "--steps-to", "4"]) == 2
  assert "does not halve" in capsys.readouterr().err
