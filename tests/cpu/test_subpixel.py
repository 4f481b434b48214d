"""The upsampling convolution at low resolution, against float64 numpy sums over the upsampled map."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sr3_jax.cpu import conv, subpixel
from sr3_jax.models import unet


def _upsampled_conv_numpy(x, w):
  """y[n, h, w, o] = Σ_{a,b,i} up_pad[n, h+a, w+b, i] · w[a, b, i, o], up = 2× nearest, in float64."""
  up = np.repeat(np.repeat(np.float64(x), 2, axis=1), 2, axis=2)
  upp = np.pad(up, ((0, 0), (1, 1), (1, 1), (0, 0)))
  h, wd = up.shape[1:3]
  return sum(
    np.einsum("nhwi,io->nhwo", upp[:, a : a + h, b : b + wd], np.float64(w[a, b]))
    for a in range(3)
    for b in range(3)
  )


def _upsampled_conv_grads_numpy(x, w, r):
  """(∂L/∂x, ∂L/∂w) of L = Σ y ⊙ r for y above: the taps' sums written out, in float64."""
  x, w, r = np.float64(x), np.float64(w), np.float64(r)
  up = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
  upp = np.pad(up, ((0, 0), (1, 1), (1, 1), (0, 0)))
  h, wd = up.shape[1:3]
  dw = np.zeros_like(w)
  dupp = np.zeros_like(upp)
  for a in range(3):
    for b in range(3):
      dw[a, b] = np.einsum("nhwi,nhwo->io", upp[:, a : a + h, b : b + wd], r)
      dupp[:, a : a + h, b : b + wd] += np.einsum("nhwo,io->nhwi", r, w[a, b])
  dup = dupp[:, 1:-1, 1:-1]
  dx = dup.reshape(x.shape[0], x.shape[1], 2, x.shape[2], 2, x.shape[3]).sum(axis=(2, 4))
  return dx, dw


SHAPES = [(2, 5, 7, 3, 4), (1, 4, 4, 6, 2), (3, 1, 2, 2, 5)]  # (N, H, W, C_in, C_out)


@pytest.mark.parametrize("shape", SHAPES)
def test_upsample_conv_matches_float64_sum_over_the_upsampled_map(shape):
  n, h, w, ci, co = shape
  rng = np.random.default_rng(0)
  x = rng.standard_normal((n, h, w, ci)).astype(np.float32)
  k = rng.standard_normal((3, 3, ci, co)).astype(np.float32)
  got = jax.jit(subpixel.upsample_conv)(jnp.asarray(x), jnp.asarray(k))
  assert got.shape == (n, 2 * h, 2 * w, co)
  np.testing.assert_allclose(np.asarray(got), _upsampled_conv_numpy(x, k), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES[:2])
@pytest.mark.parametrize("weight_grad", [None, conv.im2col_weight_grad])
def test_upsample_conv_gradients_match_float64(shape, weight_grad):
  n, h, w, ci, co = shape
  rng = np.random.default_rng(1)
  x = rng.standard_normal((n, h, w, ci)).astype(np.float32)
  k = rng.standard_normal((3, 3, ci, co)).astype(np.float32)
  r = rng.standard_normal((n, 2 * h, 2 * w, co)).astype(np.float32)
  loss = lambda x, k: jnp.sum(subpixel.upsample_conv(x, k, weight_grad) * r)
  dx, dk = jax.jit(jax.grad(loss, (0, 1)))(jnp.asarray(x), jnp.asarray(k))
  want_dx, want_dk = _upsampled_conv_grads_numpy(x, k, r)
  np.testing.assert_allclose(np.asarray(dx), want_dx, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(np.asarray(dk), want_dk, rtol=1e-5, atol=1e-4)


def test_phase_kernel_and_its_fold_are_adjoint():
  """⟨phase_kernel(w), g⟩ = ⟨w, fold_phase_gradient(g)⟩, and each phase's taps sum to the kernel's."""
  rng = np.random.default_rng(2)
  w = rng.standard_normal((3, 3, 2, 3)).astype(np.float32)
  g = rng.standard_normal((2, 2, 2, 12)).astype(np.float32)
  lhs = np.sum(np.float64(subpixel.phase_kernel(jnp.asarray(w))) * g)
  rhs = np.sum(np.float64(w) * np.asarray(subpixel.fold_phase_gradient(jnp.asarray(g))))
  np.testing.assert_allclose(lhs, rhs, rtol=1e-5)
  k = np.asarray(subpixel.phase_kernel(jnp.asarray(w))).reshape(2, 2, 2, 2, 2, 3)
  for p in range(2):
    for q in range(2):
      np.testing.assert_allclose(
        k[:, :, :, p, q].sum(axis=(0, 1)), w.sum(axis=(0, 1)), rtol=1e-5, atol=1e-5
      )


def test_interleave_and_deinterleave_are_adjoint():
  rng = np.random.default_rng(3)
  out = rng.standard_normal((2, 4, 6, 8)).astype(np.float32)  # H+1 = 4, W+1 = 6, 4·O = 8
  dy = rng.standard_normal((2, 6, 10, 2)).astype(np.float32)
  lhs = np.sum(np.float64(subpixel.interleave(jnp.asarray(out))) * dy)
  rhs = np.sum(np.float64(out) * np.asarray(subpixel.deinterleave(jnp.asarray(dy))))
  np.testing.assert_allclose(lhs, rhs, rtol=1e-5)


def test_conv_with_upsample_is_the_convolution_of_the_upsampled_map():
  """`Conv(upsample=True)`: same params, outputs and gradients whether subpixel or direct."""
  x = jax.random.normal(jax.random.key(0), (2, 6, 5, 4))
  sub, direct = (conv.Conv(3, 3, upsample=True, upsample_conv=m) for m in ("subpixel", "direct"))
  params = direct.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, sub.init(jax.random.key(1), x)) == jax.tree.map(jnp.shape, params)
  params = jax.tree.map(lambda p: p + 0.1, params)  # a nonzero bias
  np.testing.assert_allclose(sub.apply(params, x), direct.apply(params, x), rtol=1e-5, atol=1e-5)
  loss = lambda module: lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))
  got, want = (jax.grad(loss(m), (0, 1))(params, x) for m in (sub, direct))
  for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("resample", ["conv", "resblock"])
def test_unet_agrees_between_upsampling_convolutions(force_cpu_kernels, resample):
  cfg = dict(
    image_size=16,
    channels=8,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(),
    num_groups=4,
    resample=resample,
  )
  force_cpu_kernels(upsample_conv="subpixel", winograd="off", weight_grad="xla")
  sub, direct = (unet.UNet(unet.UNetConfig(conv_impl=m, **cfg)) for m in ("cpu", "xla"))
  params = unet.init_params(direct, jax.random.key(0), batch=2)
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape), params)
  z = jax.random.normal(jax.random.key(2), (2, 16, 16, 3))
  gamma = jnp.array([0.3, 0.8])
  loss = lambda m: lambda p: jnp.mean(jnp.square(m.apply({"params": p}, z, gamma, z)))
  (l_sub, g_sub), (l_dir, g_dir) = (jax.value_and_grad(loss(m))(params) for m in (sub, direct))
  np.testing.assert_allclose(l_sub, l_dir, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_sub), jax.tree.leaves(g_dir)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_auto_takes_subpixel_unless_winograd_does():
  on_one_cpu = True  # the CPU Conv's auto rule is by shape alone (conv_impl decides the device)
  assert conv.use_subpixel("auto", "auto", (4, 64, 64, 128), (3, 3, 128, 128)) == on_one_cpu
  # The upsampled 32×32 map with 512 channels is Winograd's (fewer multiplies still).
  assert not conv.use_subpixel("auto", "auto", (4, 16, 16, 512), (3, 3, 512, 512))
  assert conv.use_subpixel("auto", "off", (4, 16, 16, 512), (3, 3, 512, 512)) == on_one_cpu
  assert conv.use_subpixel("subpixel", "auto", (1, 2, 2, 1), (3, 3, 1, 1))
  assert not conv.use_subpixel("direct", "auto", (4, 64, 64, 128), (3, 3, 128, 128))
  assert not conv.use_subpixel("subpixel", "auto", (4, 64, 64, 128), (1, 1, 128, 128))


def test_bad_upsample_conv_names_the_field():
  with pytest.raises(
    ValueError, match="model.upsample_conv='phases' is replaced by model.conv_impl"
  ):
    unet.UNetConfig.from_config({"upsample_conv": "phases"})
