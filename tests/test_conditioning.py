"""Conditioning mechanisms, frequency processes and the consistency loss train with falling loss;
the consistency projection against a brute-force pseudo-inverse; projected sampling is consistent."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sr3_jax import configs, consistency, diffusion, images, inference, processes, samplers, train
from sr3_jax.data import degrade, embedded, loader
from sr3_jax.models import unet


def tiny_config(**model):
  c = configs.load("experiments/configs/demo.py:runlocal")
  c.data.update(dict(image_size=16, factor=4))
  c.model.update(dict(image_size=16, channels=16, channel_mult=(1,), num_groups=8, **model))
  return c


def hr_batch(n=8, size=16):
  photos = list(embedded.load_split("train").values())
  rng = np.random.default_rng(0)
  return jnp.asarray(
    np.stack(
      [
        images.to_model_range(loader.random_crop(photos[i % len(photos)], size, rng))
        for i in range(n)
      ]
    )
  )


def losses_before_after(c, steps=30):
  """Mean loss over 8 fixed draws before and after `steps` Adam steps on one fixed batch (one jit)."""
  configs.validate(c)
  model = unet.build(c.model)
  loss_fn = diffusion.make_loss_fn(train.apply_fn_for(model), c)
  opt = optax.adam(3e-3)
  batch = {"hr": hr_batch()}

  keys = jax.random.split(jax.random.key(100), 8)
  evaluate = jax.jit(
    lambda p: jnp.mean(jax.lax.map(lambda k: loss_fn(p, batch, k, train=False)[0], keys))
  )

  @jax.jit
  def fit(params):
    def step(carry, i):
      p, s = carry
      (_, _), g = jax.value_and_grad(loss_fn, has_aux=True)(
        p, batch, jax.random.fold_in(jax.random.key(1), i)
      )
      u, s = opt.update(g, s, p)
      return (optax.apply_updates(p, u), s), None

    (p, _), _ = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(steps))
    return p

  params = unet.init_params(model, jax.random.key(0))
  before, after = evaluate(params), evaluate(fit(params))
  return float(before), float(after), unet.count_params(c.model)


VARIANTS = {
  "film": dict(model=dict(conditioning="film")),
  "cross_attention": dict(model=dict(conditioning="cross_attention")),
  "injection": dict(model=dict(conditioning="injection")),
  "blur_process": dict(diffusion=dict(process="blur")),
  "band_process": dict(diffusion=dict(process="band")),
  "consistency_loss": dict(diffusion=dict(consistency_weight=10.0)),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_trains_with_falling_loss(name):
  c = tiny_config(**VARIANTS[name].get("model", {}))
  c.diffusion.update(VARIANTS[name].get("diffusion", {}))
  before, after, params = losses_before_after(c)
  assert np.isfinite(after) and after < 0.9 * before, (name, before, after)
  if name in ("film", "cross_attention", "injection"):
    assert params != unet.count_params(
      tiny_config().model
    )  # an LR encoder instead of concat channels


@pytest.mark.parametrize("mechanism", ["film", "cross_attention", "injection"])
def test_mechanism_output_depends_on_the_lr_input(mechanism):
  cfg = unet.UNetConfig.from_config(tiny_config(conditioning=mechanism).model)
  model = unet.build(cfg)
  params = unet.init_params(model, jax.random.key(0))
  params = jax.tree_util.tree_map(
    lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape), params
  )
  z = jax.random.normal(jax.random.key(2), (2, 16, 16, 3))
  c1, c2 = (jax.random.normal(jax.random.key(k), (2, 16, 16, 3)) for k in (3, 4))
  o1, o2 = (model.apply({"params": params}, z, jnp.array([0.3, 0.6]), c) for c in (c1, c2))
  assert np.abs(np.asarray(o1) - np.asarray(o2)).max() > 1e-3


def test_projection_against_brute_force_pseudo_inverse():
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (1, 12, 8, 1))
  lr = rng.uniform(-1, 1, (1, 3, 2, 1))
  d = np.kron(
    degrade.resize_matrix(12, 3), degrade.resize_matrix(8, 2)
  )  # (6, 96), row-major pixels
  ref = x.ravel() + np.linalg.pinv(d) @ (lr.ravel() - d @ x.ravel())
  p = np.asarray(consistency.project(jnp.asarray(x, jnp.float32), jnp.asarray(lr, jnp.float32), 4))
  np.testing.assert_allclose(p.ravel(), ref, atol=1e-5)
  np.testing.assert_allclose(
    np.asarray(consistency.degrade_linear(jnp.asarray(p), 4)).ravel(), lr.ravel(), atol=1e-5
  )
  np.testing.assert_allclose(
    np.asarray(consistency.project(jnp.asarray(p), jnp.asarray(lr, jnp.float32), 4)), p, atol=1e-5
  )  # idempotent


@pytest.mark.parametrize("diffuse", ["hr", "residual"])
def test_projected_sampling_is_consistent_with_the_lr_input(diffuse):
  c = tiny_config()
  c.diffusion.update(dict(diffuse=diffuse, residual_scale=4.0 if diffuse == "residual" else 1.0))
  model = unet.build(c.model)
  params = unet.init_params(model, jax.random.key(0))
  params = jax.tree_util.tree_map(
    lambda p: p + 0.02 * jax.random.normal(jax.random.key(1), p.shape), params
  )
  hr = hr_batch(2)
  lr = degrade.downsample(hr, 4, value_range=(-1.0, 1.0))
  lr_up = degrade.upsample(lr, 4, value_range=(-1.0, 1.0))
  denoise = lambda z, g: model.apply({"params": params}, z, g, lr_up)
  x0_fn = lambda y0: inference.project_target(y0, lr, lr_up, 4, c.diffusion)
  gammas = jnp.asarray(samplers.truncated_grid(np.linspace(1.0, 1e-3, 9), 1.0))
  y, _, _ = samplers.sample_with_x0(
    denoise,
    hr.shape,
    gammas,
    jax.random.key(0),
    samplers.SamplerConfig(clip_x0=None, variance="posterior"),
    x0_fn=x0_fn,
  )
  image = diffusion.image_from_target(y, lr_up, c.diffusion)
  np.testing.assert_allclose(
    np.asarray(consistency.degrade_linear(image, 4)), np.asarray(lr), atol=1e-4
  )


def test_residual_x0_is_clipped_as_an_image():
  """With a residual target, x̂0 is bounded through the HR image it implies: bicubic + residual/scale."""
  c = tiny_config()
  c.diffusion.update(dict(diffuse="residual", residual_scale=4.0))
  hr = hr_batch(2)
  lr = degrade.downsample(hr, 4, value_range=(-1.0, 1.0))
  lr_up = degrade.upsample(lr, 4, value_range=(-1.0, 1.0))
  wild = lambda z, g: (
    50.0 * jax.random.normal(jax.random.key(0), z.shape)
  )  # an untrained network at γ ≈ 0
  z = jax.random.normal(jax.random.key(1), hr.shape)
  g = jnp.full((2,), 3e-7)
  raw, _ = processes.GAUSSIAN.x0_eps(wild(z, g), z, g, "eps")
  x0 = inference.project_target(raw, lr, lr_up, 4, c.diffusion, consistent=False)
  image = diffusion.image_from_target(x0, lr_up, c.diffusion)
  assert float(jnp.abs(image).max()) <= 1.0 + 1e-3
  assert float(jnp.abs(diffusion.image_from_target(raw, lr_up, c.diffusion)).max()) > 100


@pytest.mark.parametrize(
  "process,sampler", [("gaussian", "dpmpp"), ("blur", "dpmpp"), ("band", "ddim"), ("blur", "ddpm")]
)
def test_super_resolve_runs_for_every_process(process, sampler):
  """make_super_resolve on each forward process: deterministic, in range, and consistent with its
  LR input when the sampler projects every x̂0 (project_consistency)."""
  c = tiny_config()
  c.diffusion.update(dict(process=process, target="x0"))
  c.sampling.update(dict(sampler=sampler, project_consistency=True))
  configs.validate(c)
  model = unet.build(c.model)
  params = unet.init_params(model, jax.random.key(0))
  params = jax.tree_util.tree_map(
    lambda p: p + 0.02 * jax.random.normal(jax.random.key(1), p.shape), params
  )
  # Photos scaled into [−0.5, 0.5], so that the final clip to [−1, 1] leaves the projection exact.
  lr = 0.5 * degrade.downsample(hr_batch(2), 4, value_range=(-1.0, 1.0))
  fn = inference.make_super_resolve(c, model)
  levels = inference.inference_grid(c, 6)
  out = np.asarray(fn(params, lr, levels, jax.random.key(1)))
  assert out.shape == (2, 16, 16, 3) and np.isfinite(out).all() and np.abs(out).max() <= 1.0
  np.testing.assert_array_equal(out, np.asarray(fn(params, lr, levels, jax.random.key(1))))
  err = np.abs(np.asarray(consistency.degrade_linear(jnp.asarray(out), 4)) - np.asarray(lr))
  assert err.max() < 1e-5, err.max()
