"""Winograd F(4×4, 3×3) convolutions against float64 numpy sums and nn.Conv."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sr3_jax.cpu import conv, winograd
from sr3_jax.models import unet


def _conv_numpy(x, w):
  """y[n,h,w,o] = Σ_{a,b,i} x_pad[n, h+a, w+b, i] · w[a,b,i,o] ('SAME', stride 1), in float64."""
  x, w = np.float64(x), np.float64(w)
  _, h, wd, _ = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return sum(
    np.einsum("nhwi,io->nhwo", xp[:, a : a + h, b : b + wd], w[a, b])
    for a in range(3)
    for b in range(3)
  )


def _input_grad_numpy(dy, w):
  """∂L/∂x of the convolution above: each output's gradient scattered back through every tap."""
  dy, w = np.float64(dy), np.float64(w)
  n, h, wd, _ = dy.shape
  dxp = np.zeros((n, h + 2, wd + 2, w.shape[2]))
  for a in range(3):
    for b in range(3):
      dxp[:, a : a + h, b : b + wd] += np.einsum("nhwo,io->nhwi", dy, w[a, b])
  return dxp[:, 1:-1, 1:-1]


def _weight_grad_numpy(x, dy):
  x, dy = np.float64(x), np.float64(dy)
  _, h, wd, _ = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return np.stack(
    [
      np.stack([np.einsum("nhwi,nhwo->io", xp[:, a : a + h, b : b + wd], dy) for b in range(3)])
      for a in range(3)
    ]
  )


def test_transform_matrices_compute_a_1d_correlation_exactly():
  """Aᵀ[(G g) ⊙ (Bᵀ d)] = the 4 outputs of correlating a 6-sample signal with a 3-tap filter."""
  rng = np.random.default_rng(0)
  for _ in range(20):
    d, g = rng.standard_normal(6), rng.standard_normal(3)
    expected = np.array([d[p : p + 3] @ g for p in range(4)])
    np.testing.assert_allclose(
      winograd.A_T @ ((winograd.G @ g) * (winograd.B_T @ d)), expected, rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("shape", [(2, 8, 12, 5, 7), (1, 4, 4, 1, 3), (3, 16, 8, 16, 4)])
def test_forward_and_both_gradients_match_float64_sums(shape):
  n, h, wd, ci, co = shape
  rng = np.random.default_rng(1)
  x = rng.standard_normal((n, h, wd, ci)).astype(np.float32)
  w = (rng.standard_normal((3, 3, ci, co)) / np.sqrt(9 * ci)).astype(np.float32)
  dy = rng.standard_normal((n, h, wd, co)).astype(np.float32)
  y = _conv_numpy(x, w)
  got = winograd.winograd_conv(jnp.asarray(x), jnp.asarray(w))
  np.testing.assert_allclose(np.asarray(got), y, rtol=1e-4, atol=2e-5 * np.abs(y).max())
  _, vjp = jax.vjp(winograd.conv, jnp.asarray(x), jnp.asarray(w))
  dx, dw = vjp(jnp.asarray(dy))
  dx_ref, dw_ref = _input_grad_numpy(dy, w), _weight_grad_numpy(x, dy)
  np.testing.assert_allclose(np.asarray(dx), dx_ref, rtol=1e-4, atol=2e-5 * np.abs(dx_ref).max())
  np.testing.assert_allclose(np.asarray(dw), dw_ref, rtol=1e-4, atol=2e-5 * np.abs(dw_ref).max())


def test_weight_gradient_transform_is_the_transpose_of_the_forward_one():
  """Gᵀ[(Bᵀ d) ⊙ (A dy)] = ∂/∂g of dy · Aᵀ[(G g) ⊙ (Bᵀ d)] in 1-D: the sum over outputs of dy · d."""
  rng = np.random.default_rng(3)
  for _ in range(20):
    d, dy = rng.standard_normal(6), rng.standard_normal(4)
    expected = np.array([dy @ d[a : a + 4] for a in range(3)])
    np.testing.assert_allclose(
      winograd.G.T @ ((winograd.B_T @ d) * (winograd.A_T.T @ dy)), expected, rtol=1e-12, atol=1e-12
    )


def test_error_stays_near_float32_at_512_channels():
  """Winograd's larger intermediate values cost precision; at SR3's widest level it stays ~1e-5."""
  rng = np.random.default_rng(2)
  x = rng.standard_normal((1, 8, 8, 512)).astype(np.float32)
  w = (rng.standard_normal((3, 3, 512, 64)) / np.sqrt(9 * 512)).astype(np.float32)
  y = _conv_numpy(x, w)
  err = (
    np.abs(np.asarray(winograd.winograd_conv(jnp.asarray(x), jnp.asarray(w))) - y).max()
    / np.abs(y).max()
  )
  assert err < 5e-5


def test_conv_module_with_winograd_equals_flax_conv():
  x = jax.random.normal(jax.random.key(0), (2, 12, 8, 5))
  ours = conv.Conv(7, 3, winograd="on")
  ref = nn.Conv(7, (3, 3), padding="SAME")
  params = ref.init(jax.random.key(1), x)
  loss = lambda module: lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))
  v1, g1 = jax.value_and_grad(loss(ours), argnums=(0, 1))(params, x)
  v2, g2 = jax.value_and_grad(loss(ref), argnums=(0, 1))(params, x)
  np.testing.assert_allclose(v1, v2, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_policy():
  single_cpu = True  # the CPU Conv's auto rule is by shape alone (conv_impl decides the device)
  k3 = (3, 3, 256, 256)
  assert conv.use_winograd("auto", (4, 32, 32, 256), k3) == single_cpu
  assert not conv.use_winograd("auto", (4, 64, 64, 256), k3)  # large maps: XLA's convolution
  assert conv.use_winograd("auto", (4, 16, 16, 256), k3) == single_cpu
  assert conv.use_winograd("auto", (4, 8, 8, 256), k3) == single_cpu
  assert (
    conv.use_winograd("auto", (4, 8, 8, 1024), (3, 3, 1024, 512)) == single_cpu
  )  # a concatenated skip
  assert not conv.use_winograd(
    "auto", (2, 8, 8, 256), k3
  )  # few tiles: the kernel transform dominates
  assert not conv.use_winograd(
    "auto", (4, 16, 16, 1024), (3, 3, 1024, 1024)
  )  # transformed kernel > 113 MB
  assert not conv.use_winograd("auto", (8, 32, 32, 64), (3, 3, 64, 64))  # few channels
  assert not conv.use_winograd(
    "auto", (4, 32, 32, 256), k3, jnp.bfloat16
  )  # bf16 transforms lose too much
  # Inference from prepared kernels: 64×64 maps with ≥ 128 channels as well.
  k128 = (3, 3, 128, 128)
  assert conv.use_winograd("auto", (4, 64, 64, 128), k128, prepared=True) == single_cpu
  assert not conv.use_winograd("auto", (4, 64, 64, 128), k128)
  assert not conv.use_winograd("auto", (4, 64, 64, 64), (3, 3, 64, 128), prepared=True)
  assert not conv.use_winograd("auto", (4, 128, 128, 128), k128, prepared=True)
  assert conv.use_subpixel("auto", "auto", (4, 32, 32, 128), k128) == single_cpu
  assert not conv.use_subpixel(
    "auto", "auto", (4, 32, 32, 128), k128, prepared=True
  )  # Winograd's at 64×64
  assert conv.use_winograd("on", (4, 64, 64, 256), k3)
  assert not conv.use_winograd("on", (4, 30, 32, 8), (3, 3, 8, 8))  # height not a multiple of 4
  assert not conv.use_winograd("on", (4, 32, 32, 8), (1, 1, 8, 8))  # not a 3×3 kernel
  assert not conv.use_winograd("off", (4, 16, 16, 8), (3, 3, 8, 8))
  with pytest.raises(ValueError, match="model.winograd='fast' is replaced by model.conv_impl"):
    unet.UNetConfig.from_config({"winograd": "fast"})
  with pytest.raises(ValueError, match="divisible by 4"):
    winograd.winograd_conv(jnp.zeros((1, 6, 8, 2)), jnp.zeros((3, 3, 2, 2)))


def test_forward_from_a_transformed_kernel_matches_float64_sum():
  rng = np.random.default_rng(4)
  x = rng.standard_normal((2, 8, 12, 5)).astype(np.float32)
  w = (rng.standard_normal((3, 3, 5, 7)) / np.sqrt(45)).astype(np.float32)
  u = np.kron(winograd.G, winograd.G) @ np.float64(w).reshape(
    9, -1
  )  # G g Gᵀ for every channel pair
  np.testing.assert_allclose(
    np.asarray(winograd.kernel_transform(jnp.asarray(w))).reshape(36, -1), u, rtol=1e-5, atol=1e-7
  )
  y = _conv_numpy(x, w)
  got = winograd.conv_transformed(jnp.asarray(x), jnp.asarray(u.reshape(36, 5, 7), np.float32))
  np.testing.assert_allclose(np.asarray(got), y, rtol=1e-4, atol=2e-5 * np.abs(y).max())
  with pytest.raises(ValueError, match="needs u"):
    winograd.conv_transformed(jnp.asarray(x), jnp.zeros((36, 4, 7)))


def test_conv_module_stores_its_transformed_kernel_and_uses_the_stored_one():
  x = jax.random.normal(jax.random.key(0), (2, 12, 8, 5))
  ours = conv.Conv(7, 3, winograd="on")
  params = nn.Conv(7, (3, 3), padding="SAME").init(jax.random.key(1), x)
  y = ours.apply(params, x)
  y_fill, prepared = ours.apply(params, x, mutable=[conv.PREPARED])
  u = prepared[conv.PREPARED]["kernel"]
  w = np.float64(params["params"]["kernel"])
  np.testing.assert_allclose(
    np.asarray(u).reshape(36, -1),
    np.kron(winograd.G, winograd.G) @ w.reshape(9, -1),
    rtol=1e-5,
    atol=1e-7,
  )
  np.testing.assert_allclose(y_fill, y, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(ours.apply({**params, **prepared}, x), y, rtol=1e-6, atol=1e-6)
  # The stored transform is what runs: twice it doubles the output (the bias is zero).
  doubled = {**params, conv.PREPARED: {"kernel": 2 * u}}
  np.testing.assert_allclose(ours.apply(doubled, x), 2 * y, rtol=1e-5, atol=1e-5)
  # A convolution that does not run as Winograd stores nothing.
  _, none = conv.Conv(7, 3, winograd="off").apply(params, x, mutable=[conv.PREPARED])
  assert not none


def test_auto_runs_64x64_maps_as_winograd_for_inference_only():
  x = jax.random.normal(jax.random.key(0), (1, 64, 64, 128))
  flax_conv = nn.Conv(128, (3, 3), padding="SAME")
  params = flax_conv.init(jax.random.key(1), x)
  y = flax_conv.apply(params, x)
  ours = conv.Conv(128, 3)  # winograd="auto"
  y_fill, prepared = ours.apply(params, x, mutable=[conv.PREPARED])
  assert prepared[conv.PREPARED]["kernel"].shape == (36, 128, 128)
  scale = float(jnp.abs(y).max())
  for got in (y_fill, ours.apply({**params, **prepared}, x)):
    np.testing.assert_allclose(got, y, rtol=1e-4, atol=2e-5 * scale)
  jaxpr = lambda f: str(jax.make_jaxpr(f)(params))
  assert "conv_general_dilated" in jaxpr(lambda p: ours.apply(p, x))  # training: XLA's convolution
  assert "conv_general_dilated" not in jaxpr(lambda p: ours.apply({**p, **prepared}, x))


def test_prepared_unet_matches_xla_convolutions_and_prepares_only_kernel_transforms(
  force_cpu_kernels,
):
  cfg = dict(
    image_size=16,
    channels=8,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(8,),
    num_groups=4,
    head_dim=8,
  )
  force_cpu_kernels(winograd="on")
  fast, ref = (unet.UNet(unet.UNetConfig(conv_impl=m, **cfg)) for m in ("cpu", "xla"))
  params = unet.init_params(ref, jax.random.key(0))
  leaves, tree = jax.tree.flatten(params)  # a zero-initialised output layer would hide everything
  keys = jax.random.split(jax.random.key(2), len(leaves))
  params = tree.unflatten([p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
  z = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  g = jnp.full((2,), 0.3)
  prepare = jax.jit(lambda p: unet.prepare_inference(fast, p, z, g, z))
  variables = prepare(params)
  kernels = jax.tree.leaves(variables[conv.PREPARED])
  n_3x3 = sum(
    1
    for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    if leaf.ndim == 4 and leaf.shape[:2] == (3, 3)
  )
  assert len(kernels) == n_3x3 and all(k.shape[0] == 36 for k in kernels)
  np.testing.assert_allclose(
    jax.jit(fast.apply)(variables, z, g, z),
    ref.apply({"params": params}, z, g, z),
    rtol=2e-4,
    atol=2e-5,
  )
  # Under jit the traced forward pass has no used output: the compiled program is the kernel
  # transforms alone, a (36 × 9)·(9 × C_in·C_out) matmul each, 2·9 flops per transformed entry.
  flops = prepare.lower(params).compile().cost_analysis()
  flops = (flops[0] if isinstance(flops, (list, tuple)) else flops)["flops"]
  assert flops <= 1.05 * 18 * sum(k.size for k in kernels)


@pytest.mark.parametrize("base", [False, True])
def test_samplers_with_prepared_kernels_match_xla_convolutions(force_cpu_kernels, base):
  """make_super_resolve, and make_generate with guidance (which doubles the batch), transform the
  Winograd kernels once per call; their samples equal those of XLA's convolutions."""
  from sr3_jax import configs, inference

  c = configs.load("experiments/configs/demo.py:runlocal")
  c.data.image_size = c.model.image_size = 16
  c.model.update(dict(channels=8, channel_mult=(1, 2), num_groups=4))
  if base:
    c.model.update(dict(conditioning="none", num_classes=3))
  outs = []
  force_cpu_kernels(winograd="on")
  for impl in ("cpu", "xla"):
    c.model.conv_impl = impl
    model = unet.build(c.model)
    params = unet.init_params(model, jax.random.key(0))
    params = jax.tree.map(
      lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape), params
    )
    gammas = inference.inference_grid(c, 3)
    if base:
      outs.append(
        inference.make_generate(c, model)(params, jnp.array([0, 2]), gammas, jax.random.key(3), 2.0)
      )
    else:
      lr = jax.random.uniform(jax.random.key(2), (2, 4, 4, 3), minval=-1, maxval=1)
      outs.append(inference.make_super_resolve(c, model)(params, lr, gammas, jax.random.key(3)))
  assert outs[0].shape == (2, 16, 16, 3)
  np.testing.assert_allclose(outs[0], outs[1], rtol=1e-3, atol=1e-3)
