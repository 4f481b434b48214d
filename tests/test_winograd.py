"""Winograd F(4×4, 3×3) convolutions against float64 numpy sums and nn.Conv."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sr3_jax.models import conv, unet, winograd


def _conv_numpy(x, w):
  """y[n,h,w,o] = Σ_{a,b,i} x_pad[n, h+a, w+b, i] · w[a,b,i,o] ('SAME', stride 1), in float64."""
  x, w = np.float64(x), np.float64(w)
  _, h, wd, _ = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return sum(np.einsum("nhwi,io->nhwo", xp[:, a:a + h, b:b + wd], w[a, b]) for a in range(3) for b in range(3))


def _input_grad_numpy(dy, w):
  """∂L/∂x of the convolution above: each output's gradient scattered back through every tap."""
  dy, w = np.float64(dy), np.float64(w)
  n, h, wd, _ = dy.shape
  dxp = np.zeros((n, h + 2, wd + 2, w.shape[2]))
  for a in range(3):
    for b in range(3):
      dxp[:, a:a + h, b:b + wd] += np.einsum("nhwo,io->nhwi", dy, w[a, b])
  return dxp[:, 1:-1, 1:-1]


def _weight_grad_numpy(x, dy):
  x, dy = np.float64(x), np.float64(dy)
  _, h, wd, _ = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return np.stack([np.stack([np.einsum("nhwi,nhwo->io", xp[:, a:a + h, b:b + wd], dy) for b in range(3)])
                   for a in range(3)])


def test_transform_matrices_compute_a_1d_correlation_exactly():
  """Aᵀ[(G g) ⊙ (Bᵀ d)] = the 4 outputs of correlating a 6-sample signal with a 3-tap filter."""
  rng = np.random.default_rng(0)
  for _ in range(20):
    d, g = rng.standard_normal(6), rng.standard_normal(3)
    expected = np.array([d[p:p + 3] @ g for p in range(4)])
    np.testing.assert_allclose(winograd.A_T @ ((winograd.G @ g) * (winograd.B_T @ d)), expected,
                               rtol=1e-12, atol=1e-12)


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
    expected = np.array([dy @ d[a:a + 4] for a in range(3)])
    np.testing.assert_allclose(winograd.G.T @ ((winograd.B_T @ d) * (winograd.A_T.T @ dy)), expected,
                               rtol=1e-12, atol=1e-12)


def test_error_stays_near_float32_at_512_channels():
  """Winograd's larger intermediate values cost precision; at SR3's widest level it stays ~1e-5."""
  rng = np.random.default_rng(2)
  x = rng.standard_normal((1, 8, 8, 512)).astype(np.float32)
  w = (rng.standard_normal((3, 3, 512, 64)) / np.sqrt(9 * 512)).astype(np.float32)
  y = _conv_numpy(x, w)
  err = np.abs(np.asarray(winograd.winograd_conv(jnp.asarray(x), jnp.asarray(w))) - y).max() / np.abs(y).max()
  assert err < 5e-5


def test_conv_module_with_winograd_equals_flax_conv():
  x = jax.random.normal(jax.random.key(0), (2, 12, 8, 5))
  ours = conv.Conv(7, 3, winograd="on")
  ref = nn.Conv(7, (3, 3), padding="SAME")
  params = ref.init(jax.random.key(1), x)
  loss = lambda module: (lambda p, x: jnp.sum(jnp.sin(module.apply(p, x))))
  v1, g1 = jax.value_and_grad(loss(ours), argnums=(0, 1))(params, x)
  v2, g2 = jax.value_and_grad(loss(ref), argnums=(0, 1))(params, x)
  np.testing.assert_allclose(v1, v2, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_policy():
  single_cpu = jax.default_backend() == "cpu" and jax.device_count() == 1
  k3 = (3, 3, 256, 256)
  assert conv.use_winograd("auto", (4, 32, 32, 256), k3) == single_cpu
  assert not conv.use_winograd("auto", (4, 64, 64, 256), k3)        # large maps: XLA's convolution
  assert conv.use_winograd("auto", (4, 16, 16, 256), k3) == single_cpu
  assert conv.use_winograd("auto", (4, 8, 8, 256), k3) == single_cpu
  assert conv.use_winograd("auto", (4, 8, 8, 1024), (3, 3, 1024, 512)) == single_cpu  # a concatenated skip
  assert not conv.use_winograd("auto", (2, 8, 8, 256), k3)          # few tiles: the kernel transform dominates
  assert not conv.use_winograd("auto", (4, 16, 16, 1024), (3, 3, 1024, 1024))  # transformed kernel > 113 MB
  assert not conv.use_winograd("auto", (8, 32, 32, 64), (3, 3, 64, 64))  # few channels
  assert not conv.use_winograd("auto", (4, 32, 32, 256), k3, jnp.bfloat16)  # bf16 transforms lose too much
  assert conv.use_winograd("on", (4, 64, 64, 256), k3)
  assert not conv.use_winograd("on", (4, 30, 32, 8), (3, 3, 8, 8))   # height not a multiple of 4
  assert not conv.use_winograd("on", (4, 32, 32, 8), (1, 1, 8, 8))   # not a 3×3 kernel
  assert not conv.use_winograd("off", (4, 16, 16, 8), (3, 3, 8, 8))
  with pytest.raises(ValueError, match="model.winograd='fast'"):
    unet.UNetConfig(winograd="fast").validate()
  with pytest.raises(ValueError, match="divisible by 4"):
    winograd.winograd_conv(jnp.zeros((1, 6, 8, 2)), jnp.zeros((3, 3, 2, 2)))
