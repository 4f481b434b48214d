"""The SR3 U-Net: shapes for every runlocal config, the paper configs' sizes, dtype and remat."""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sr3_jax import configs
from sr3_jax.models import unet

CONFIGS = sorted(
  os.path.basename(p)
  for p in glob.glob(
    os.path.join(os.path.dirname(__file__), "..", "experiments", "configs", "*.py")
  )
)
PAPER = {  # SR3 Table A.1 parameter counts
  "sr3_faces_16_128.py": 550e6,
  "sr3_imagenet_64_256.py": 625e6,
  "sr3_64_512.py": 625e6,
  "sr3_256_1024.py": 150e6,
}


def _runlocal_specs():
  """Every experiment's runlocal training config; a cascade file contributes each of its stages."""
  specs = []
  for name in CONFIGS:
    c = configs.load(f"experiments/configs/{name}:runlocal")
    specs += (
      [s.config for s in c.stages] if "stages" in c else [f"experiments/configs/{name}:runlocal"]
    )
  return specs


@pytest.mark.parametrize("spec", _runlocal_specs())
def test_runlocal_forward_shapes(spec):
  c = configs.load(spec)
  configs.validate(c)
  model = unet.build(c.model)
  s = c.data.image_size
  z = jax.ShapeDtypeStruct((2, s, s, 3), jnp.float32)
  # Shapes only: trace init and apply abstractly (nothing is compiled or allocated).
  params = jax.eval_shape(lambda k: unet.init_params(model, k), jax.random.key(0))
  extra = {}
  if c.model.num_classes:
    extra["label"] = jnp.array([0, c.model.num_classes])
  if c.model.aug_embedding:
    extra["aug_level"] = jnp.array([0.0, 0.3])
  cond = None if c.model.conditioning == "none" else z
  out = jax.eval_shape(
    lambda p, x, y: model.apply({"params": p}, x, jnp.array([0.2, 0.7]), y, **extra),
    params,
    z,
    cond,
  )
  assert out.shape == (2, s, s, 3) and out.dtype == jnp.float32


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_parameter_counts(name):
  c = configs.load(f"experiments/configs/{name}")
  n = unet.count_params(c.model)
  assert abs(n / PAPER[name] - 1.0) < 0.10, (
    f"{name}: {n / 1e6:.1f}M vs paper {PAPER[name] / 1e6:.0f}M"
  )


@pytest.fixture(scope="module")
def tiny():
  cfg = unet.UNetConfig(
    image_size=16,
    channels=16,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(8,),
    num_groups=4,
    dropout=0.1,
  )
  params = unet.init_params(unet.build(cfg), jax.random.key(0))
  # Give the zero-initialised output layers weights so the tests see a non-trivial function.
  params = jax.jit(
    lambda ps: jax.tree_util.tree_map(
      lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape), ps
    )
  )(params)
  k = jax.random.split(jax.random.key(2), 2)
  z = jax.random.normal(k[0], (2, 16, 16, 3))
  cond = jax.random.normal(k[1], (2, 16, 16, 3))
  return cfg, params, z, cond


def test_noise_level_and_conditioning_change_the_output(tiny):
  cfg, params, z, cond = tiny
  model = unet.build(cfg)
  f = jax.jit(lambda g, c: model.apply({"params": params}, z, g, c))
  base = f(jnp.array([0.3, 0.3]), cond)
  assert not np.allclose(base, f(jnp.array([0.9, 0.9]), cond))
  assert not np.allclose(base, f(jnp.array([0.3, 0.3]), cond * 0))


def test_bfloat16_compute_keeps_float32_params(tiny):
  cfg, params, z, cond = tiny
  import dataclasses

  bf = unet.build(dataclasses.replace(cfg, dtype="bfloat16"))
  assert all(
    p.dtype == jnp.float32
    for p in jax.tree_util.tree_leaves(unet.init_params(bf, jax.random.key(0)))
  )
  g = jnp.array([0.5, 0.5])
  out32 = jax.jit(unet.build(cfg).apply)({"params": params}, z, g, cond)
  out16 = jax.jit(bf.apply)({"params": params}, z, g, cond)
  assert out16.dtype == jnp.float32
  np.testing.assert_allclose(out16, out32, atol=0.1 * float(jnp.abs(out32).max()))


def test_remat_gives_the_same_gradients(tiny):
  cfg, params, z, cond = tiny
  import dataclasses

  def grads(c):
    m = unet.build(c)
    loss = lambda p: jnp.sum(m.apply({"params": p}, z, jnp.array([0.5, 0.5]), cond) ** 2)
    return jax.jit(jax.grad(loss))(params)

  jax.tree_util.tree_map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4),
    grads(cfg),
    grads(dataclasses.replace(cfg, remat=True)),
  )


def test_dropout_only_in_training(tiny):
  cfg, params, z, cond = tiny
  m = unet.build(cfg)
  g = jnp.array([0.5, 0.5])
  f = jax.jit(
    lambda key, train: m.apply({"params": params}, z, g, cond, train=train, rngs={"dropout": key}),
    static_argnums=1,
  )
  assert not np.allclose(f(jax.random.key(0), True), f(jax.random.key(1), True))
  np.testing.assert_array_equal(f(jax.random.key(0), False), f(jax.random.key(1), False))


def test_bad_model_configs_name_the_field():
  with pytest.raises(ValueError, match="model.image_size=18"):
    unet.UNetConfig(image_size=18, channel_mult=(1, 2, 4)).validate()
  with pytest.raises(ValueError, match="num_groups"):
    unet.UNetConfig(channels=24, num_groups=32).validate()
  with pytest.raises(ValueError, match="unknown model config field"):
    unet.UNetConfig.from_config({"chanels": 3})


def test_group_norm_matches_float64_reference():
  rng = np.random.default_rng(0)
  x = rng.normal(0.3, 2.0, size=(2, 5, 6, 16)).astype(np.float32)
  gn = unet.GroupNorm32(num_groups=4)
  params = gn.init(jax.random.key(0), jnp.asarray(x))
  params = {"params": {"scale": jnp.linspace(0.5, 1.5, 16), "bias": jnp.linspace(-1, 1, 16)}}
  got = np.asarray(gn.apply(params, jnp.asarray(x)))
  xd = x.astype(np.float64).reshape(2, 5, 6, 4, 4)
  mean = xd.mean(axis=(1, 2, 4), keepdims=True)
  var = xd.var(axis=(1, 2, 4), keepdims=True)
  want = ((xd - mean) / np.sqrt(var + 1e-5)).reshape(2, 5, 6, 16) * np.linspace(
    0.5, 1.5, 16
  ) + np.linspace(-1, 1, 16)
  np.testing.assert_allclose(got, want, atol=1e-4)
  bf = np.asarray(gn.apply(params, jnp.asarray(x, jnp.bfloat16)).astype(jnp.float32))
  np.testing.assert_allclose(bf, want, atol=0.1)
  # model.norm_dtype="compute": the scale-and-shift in the input's dtype, statistics still float32.
  gn_c = unet.GroupNorm32(num_groups=4, apply_in_float32=False)
  np.testing.assert_allclose(np.asarray(gn_c.apply(params, jnp.asarray(x))), want, atol=1e-4)
  out = gn_c.apply(params, jnp.asarray(x, jnp.bfloat16))
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out.astype(jnp.float32)), want, atol=0.1)


def test_norm_dtype_compute_is_the_same_network(tiny):
  cfg, params, z, cond = tiny
  import dataclasses

  g = jnp.array([0.5, 0.5])
  run = lambda c: jax.jit(unet.build(c).apply)({"params": params}, z, g, cond)
  ref = run(cfg)
  np.testing.assert_allclose(run(dataclasses.replace(cfg, norm_dtype="compute")), ref, atol=1e-5)
  bf = run(dataclasses.replace(cfg, dtype="bfloat16", norm_dtype="compute"))
  np.testing.assert_allclose(bf, ref, atol=0.1 * float(jnp.abs(ref).max()))
  with pytest.raises(ValueError, match="model.norm_dtype='bf16'"):
    unet.UNetConfig(norm_dtype="bf16").validate()
