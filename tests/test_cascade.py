"""Cascades: augmentation marginals against the forward process, truncated sampling, level and class
embeddings, classifier-free guidance, and two stages trained a few steps run end to end."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from sr3_jax import augment, cascade, cli, configs, inference, samplers, schedules, train
from sr3_jax.data import embedded
from sr3_jax.models import unet

IMAGENET = "experiments/configs/cascade_imagenet_64_256_1024.py"


def cosine_gamma64(s, lmin=-15.0, lmax=15.0):
  """γ(s) = sigmoid(λ(s)) of the cosine log-SNR schedule, in float64 numpy."""
  a, b = math.atan(math.exp(-lmax / 2)), math.atan(math.exp(-lmin / 2))
  lam = -2.0 * np.log(np.tan(a + np.asarray(s, np.float64) * (b - a)))
  return 1.0 / (1.0 + np.exp(-lam))


def test_noise_augmentation_has_the_forward_marginal():
  """Non-truncated: z_s = noised clean LR, mean √γ(s)·x and variance 1 − γ(s) per pixel."""
  acfg = augment.default_config()
  x = jnp.asarray(np.linspace(-0.9, 0.9, 12, dtype=np.float32).reshape(1, 2, 2, 3))
  n = 20000
  xs = jnp.repeat(x, n, axis=0)
  for level in (0.1, 0.4, 0.8):
    z = np.asarray(
      augment.noise_to_level(xs, level, jax.random.normal(jax.random.key(3), xs.shape), acfg),
      np.float64,
    )
    g = cosine_gamma64(level)
    np.testing.assert_allclose(
      z.mean(0), np.sqrt(g) * np.asarray(x[0], np.float64), atol=4 * np.sqrt((1 - g) / n) + 1e-6
    )
    np.testing.assert_allclose(z.var(0), 1 - g, rtol=0.05)
  assert np.array_equal(
    np.asarray(augment.noise_to_level(x, 0.0, jnp.ones_like(x), acfg)), np.asarray(x)
  )


def test_training_augmentation_levels_and_blur():
  acfg = augment.default_config()
  acfg.update(dict(noise=True, max_level=0.3, blur_prob=0.5))
  lr = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (400, 6, 6, 3)).astype(np.float32))
  out, level = augment.augment_lr(lr, jax.random.key(0), acfg)
  level = np.asarray(level)
  assert out.shape == lr.shape and 0 <= level.min() and level.max() <= 0.3 and level.std() > 0.05
  acfg.noise = False
  out, level = augment.augment_lr(lr, jax.random.key(0), acfg)
  changed = np.abs(np.asarray(out) - np.asarray(lr)).max(axis=(1, 2, 3)) > 1e-6
  assert 0.4 < changed.mean() < 0.6 and not level.any()  # half of the inputs blurred, none noised


def test_truncated_sampling_stops_on_the_forward_marginal():
  """Truncated: the reverse process stopped at γ_s (exact x̂0 of a point mass) gives z_s with mean
  √γ_s·x and variance 1 − γ_s, the forward process's marginal the next stage trained on."""
  x = jnp.asarray(np.linspace(-0.8, 0.8, 6, dtype=np.float32).reshape(1, 1, 2, 3))
  grid = np.asarray(
    schedules.gamma_grid(
      configs.ml_collections.ConfigDict(
        dict(kind="logsnr", name="cosine", num_steps=40, logsnr_min=-20.0, logsnr_max=20.0)
      )
    )
  )
  g_s = float(cosine_gamma64(0.3))
  trunc = samplers.truncated_grid(grid, g_s)
  assert trunc[0] == np.float32(g_s) and np.all(np.diff(trunc) < 0) and trunc[-1] == grid[-1]
  n = 20000
  for name in ("ddpm", "ddim"):
    cfg = samplers.SamplerConfig(
      name=name, target="x0", clip_x0=None, variance="posterior", eta=1.0, final="z"
    )
    z, x0, _ = samplers.sample_with_x0(
      lambda z, g: jnp.broadcast_to(x, z.shape), (n, 1, 2, 3), trunc, jax.random.key(1), cfg
    )
    z = np.asarray(z, np.float64)
    np.testing.assert_allclose(
      z.mean(0), np.sqrt(g_s) * np.asarray(x[0], np.float64), atol=4 * np.sqrt((1 - g_s) / n)
    )
    np.testing.assert_allclose(z.var(0), 1 - g_s, rtol=0.05)
    np.testing.assert_allclose(np.asarray(x0), np.broadcast_to(np.asarray(x), x0.shape))
  with pytest.raises(ValueError, match="noisier than the truncation level"):
    samplers.truncated_grid(grid, float(grid[-1]) / 2)


@pytest.fixture(scope="module")
def tiny_conditional():
  cfg = unet.UNetConfig(
    image_size=8,
    channels=16,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(),
    num_groups=4,
    num_classes=5,
    aug_embedding=True,
  )
  model = unet.build(cfg)
  params = unet.init_params(model, jax.random.key(0))
  params = jax.tree_util.tree_map(
    lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape), params
  )
  return model, params


def test_levels_and_classes_reach_the_model_and_guidance(tiny_conditional):
  model, params = tiny_conditional
  z = jax.random.normal(jax.random.key(2), (3, 8, 8, 3))
  cond = jax.random.normal(jax.random.key(3), (3, 8, 8, 3))
  g = jnp.full((3,), 0.5)
  label = jnp.array([0, 2, 4])

  def f(z, g, y, s=0.0):
    reps = z.shape[0] // 3  # guidance doubles the batch
    return model.apply(
      {"params": params},
      z,
      g,
      jnp.concatenate([cond] * reps),
      label=y,
      aug_level=jnp.full((z.shape[0],), s),
    )

  base = np.asarray(f(z, g, label))
  assert np.abs(np.asarray(f(z, g, label, 0.4)) - base).max() > 1e-3  # the level changes the output
  assert np.abs(np.asarray(f(z, g, label[::-1])) - base).max() > 1e-3  # so does the class
  uncond = np.asarray(f(z, g, jnp.full((3,), 5)))
  denoise = lambda z, g, y: f(z, g, y)
  np.testing.assert_allclose(
    np.asarray(inference.guided(denoise, label, 5, 0.0)(z, g)), uncond, atol=1e-5
  )
  np.testing.assert_allclose(
    np.asarray(inference.guided(denoise, label, 5, 1.0)(z, g)), base, atol=1e-5
  )
  w3 = np.asarray(inference.guided(denoise, label, 5, 3.0)(z, g))
  np.testing.assert_allclose(w3, uncond + 3.0 * (base - uncond), atol=1e-4)


@pytest.fixture(scope="module")
def stage_workdirs(tmp_path_factory):
  """The imagenet cascade's runlocal base (8×8, class-conditional) and 8→32 stage, trained 2 steps."""
  root = tmp_path_factory.mktemp("cascade_runs")
  for name, extra in (("base64", dict(sample_every=2, sample_steps=3)), ("sr256", {})):
    c = configs.load(f"{IMAGENET}:stage={name},runlocal")
    c.train.update(dict(batch_size=4, num_steps=2, log_every=1, **extra))
    train.train_and_evaluate(c, root / name)
  return root


def test_stages_train_and_the_cascade_runs(stage_workdirs, tmp_path, capsys):
  rows = [
    json.loads(l) for l in (stage_workdirs / "base64" / "metrics.jsonl").read_text().splitlines()
  ]
  assert np.isfinite([r["loss"] for r in rows if "loss" in r]).all()
  with Image.open(stage_workdirs / "base64" / "samples" / "step_00000002.png") as im:
    assert im.size == (16, 2 * 8)  # (sample | real) rows at 8×8, one per held-out photograph
  spec = tmp_path / "two_stages.py"
  spec.write_text(
    "from sr3_jax import configs\n"
    "def get_config(arg=None):\n"
    "  c = configs.ml_collections.ConfigDict()\n"
    "  c.workdir = ''\n"
    f"  c.stages = [configs.cascade_entry('base64', '{IMAGENET}:stage=base64,runlocal', steps=4, guidance=2.0),\n"
    f"              configs.cascade_entry('sr256', '{IMAGENET}:stage=sr256,runlocal', steps=4, aug_level=0.2)]\n"
    "  return c\n"
  )
  out = tmp_path / "out"
  rc = cli.main(
    [
      "cascade",
      "--config",
      str(spec),
      "--output",
      str(out),
      "--workdir",
      str(stage_workdirs),
      "--num",
      "3",
      "--class",
      "4",
    ]
  )
  assert rc == 0, capsys.readouterr().err
  report = json.loads((out / "cascade.json").read_text())
  assert (
    report["stages"] == ["base64", "sr256"]
    and report["sizes"] == [8, 32]
    and report["num_images"] == 3
  )
  assert set(report["consistency"]) == {"sr256"} and report["cascade_consistency"] >= 0
  for folder, size in (("0_base64", 8), ("1_sr256", 32)):
    for k in range(3):
      with Image.open(out / folder / f"{k:04d}.png") as im:
        assert im.size == (size, size)
  with Image.open(out / "grid.png") as im:
    assert im.size == (32 + 4 + 32, 3 * 32 + 2 * 4)
  # Starting from given LR images skips the base stage.
  lr_dir = tmp_path / "lr"
  lr_dir.mkdir()
  for k in range(2):
    Image.fromarray(np.full((8, 8, 3), 60 * k + 40, np.uint8)).save(lr_dir / f"{k}.png")
  assert (
    cli.main(
      [
        "cascade",
        "--config",
        str(spec),
        "--output",
        str(tmp_path / "from_lr"),
        "--workdir",
        str(stage_workdirs),
        "--input",
        str(lr_dir),
      ]
    )
    == 0
  )
  report = json.loads((tmp_path / "from_lr" / "cascade.json").read_text())
  assert report["stages"] == ["sr256"] and report["sizes"] == [32] and report["num_images"] == 2
  # Bad input: a class out of range, a missing stage workdir.
  assert (
    cli.main(
      [
        "cascade",
        "--config",
        str(spec),
        "--output",
        str(tmp_path / "x"),
        "--workdir",
        str(stage_workdirs),
        "--class",
        "99",
      ]
    )
    == 2
  )
  assert "--class 99" in capsys.readouterr().err
  assert (
    cli.main(
      [
        "cascade",
        "--config",
        str(spec),
        "--output",
        str(tmp_path / "x"),
        "--workdir",
        str(tmp_path),
      ]
    )
    == 2
  )
  assert "Train it first: sr3 train" in capsys.readouterr().err


def test_truncated_cascade(stage_workdirs):
  base, sr = (
    cascade.stage_from_config(
      configs.cascade_entry(n, "", steps=4, aug_level=lvl, truncated=t), str(stage_workdirs)
    )
    for n, lvl, t in (("base64", 0, False), ("sr256", 0.3, True))
  )
  res = cascade.Cascade([base, sr]).run(jax.random.key(0), num=2, labels=np.array([1, 2]))
  assert [x.shape for x in res.images] == [(2, 8, 8, 3), (2, 32, 32, 3)]
  assert all(np.isfinite(x).all() and np.abs(x).max() <= 1.0 for x in res.images)
  with pytest.raises(ValueError, match="is a base stage .* not the first"):
    cascade.validate([sr, base])
  sr.aug_level = 0.0
  with pytest.raises(ValueError, match="truncated augmentation needs aug_level > 0"):
    cascade.validate([base, sr])
  sr.aug_level, sr.truncated = 0.3, False
  twice = dataclasses.replace(sr, name="sr256b")  # 8→32 after 8→32: 32 ≠ 8
  with pytest.raises(ValueError, match="'sr256' outputs 32×32 but 'sr256b' was trained on 8×8"):
    cascade.validate([base, sr, twice])


def test_stage_scores_plan_pipeline_errors_and_a_base_stage_in_eval(
  stage_workdirs, tmp_path, monkeypatch, capsys
):
  """`sr3 cascade --reference-stats STAGE=F --inception-score` scores each stage's written images;
  `--plan` writes a plan, `--pipeline` names groups the devices cannot hold; `sr3 eval` scores a
  base stage by FID and IS of its samples (and refuses PSNR for it)."""
  from sr3_jax import evaluate
  from sr3_jax.metrics import fid, inception_score
  from tests import metric_weights

  metric_weights.register(monkeypatch, "is-inception", metric_weights.inception_file(tmp_path))
  real = tmp_path / "real32"
  real.mkdir()
  photos = list(embedded.load_split("train").values())
  for k, p in enumerate(photos[:4]):
    Image.fromarray(np.asarray(Image.fromarray(p[:64, :64]).resize((32, 32)))).save(
      real / f"{k}.png"
    )
  stats = tmp_path / "real32.npz"
  assert cli.main(["fid", "--save-stats", str(real), str(stats)]) == 0
  spec = tmp_path / "two_stages.py"
  spec.write_text(
    "from sr3_jax import configs\n"
    "def get_config(arg=None):\n"
    "  c = configs.ml_collections.ConfigDict()\n"
    "  c.workdir = ''\n"
    f"  c.stages = [configs.cascade_entry('base64', '{IMAGENET}:stage=base64,runlocal', steps=3),\n"
    f"              configs.cascade_entry('sr256', '{IMAGENET}:stage=sr256,runlocal', steps=3)]\n"
    "  return c\n"
  )
  out = tmp_path / "out"
  args = ["cascade", "--config", str(spec), "--workdir", str(stage_workdirs), "--num", "4"]
  rc = cli.main(
    args + ["--output", str(out), "--reference-stats", f"sr256={stats}", "--inception-score"]
  )
  assert rc == 0, capsys.readouterr().err
  report = json.loads((out / "cascade.json").read_text())
  written = [np.asarray(Image.open(f).convert("RGB")) for f in sorted((out / "1_sr256").iterdir())]
  model = fid.Inception()
  mu, cov, _ = fid.load_stats(stats)
  want = fid.frechet_distance(*fid.statistics_of(written, model).mean_cov(), mu, cov)
  assert report["fid"]["sr256"]["fid"] == pytest.approx(want, rel=1e-6)
  assert report["fid"]["sr256"]["n"] == 4 and report["fid"]["sr256"]["n_reference"] == 4
  assert set(report["is"]) == {"base64", "sr256"}
  clf = inception_score.Classifier()
  assert report["is"]["sr256"]["is"] == pytest.approx(
    inception_score.score_images(written, clf)["is"], rel=1e-6
  )
  # --plan and --pipeline through the CLI, on this process's one device.
  plan_args = ["--plan", "--devices", "2", "--micro-batch", "2"]
  rc = cli.main(args + ["--output", str(tmp_path / "plan")] + plan_args)
  assert rc == 0, capsys.readouterr().err
  plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
  assert plan["groups"] == {"base64": 1, "sr256": 1} and plan["predicted_images_per_s"] > 0
  assert "predicted:" in (tmp_path / "plan" / "plan.md").read_text()
  rc = cli.main(args + ["--output", str(tmp_path / "pipe"), "--pipeline", "--groups", "1,1"])
  assert rc == 2 and "needs 2 devices (each group ≥ 1); there are 1" in capsys.readouterr().err
  # Bad input: a stage the cascade does not have, a statistics file that is not there.
  assert cli.main(args + ["--output", str(tmp_path / "x"), "--reference-stats", "sr64=a.npz"]) == 2
  assert "no stage 'sr64' in this cascade; its stages are base64, sr256" in capsys.readouterr().err
  missing = ["--reference-stats", f"sr256={tmp_path / 'none.npz'}"]
  assert cli.main(args + ["--output", str(tmp_path / "x")] + missing) == 2
  assert "make it with sr3 fid --save-stats" in capsys.readouterr().err
  # A base stage in sr3 eval: FID and IS of its samples against held-out images.
  base = str(stage_workdirs / "base64")
  with pytest.raises(ValueError, match="base stage .* pass --metrics fid,is"):
    evaluate.evaluate(base, num_images=3, steps=3, metric_names=evaluate.parse_metrics("psnr"))
  r = evaluate.evaluate(
    base, num_images=4, steps=3, output=str(tmp_path / "base_eval"),
    metric_names=evaluate.parse_metrics("fid,is"),
  )  # fmt: skip
  # The runlocal held-out split has 2 photographs: all of them, and 2 samples with their classes.
  assert r["base"] and r["num_images"] == 2 and r["fid"]["n"] == 2 and r["fid"]["sample"] >= 0
  assert r["is"]["sample"]["splits"] == 2 and r["is"]["hr"]["is"] >= 1.0 - 1e-9
  assert "a base stage's samples" in (tmp_path / "base_eval" / "eval.md").read_text()
