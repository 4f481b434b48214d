"""Convolutions with a row-chunked im2col weight gradient, against float64 numpy sums and nn.Conv."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sr3_jax.cpu import conv
from sr3_jax.models import conv as model_conv
from sr3_jax.models import unet


def _weight_grad_numpy(x, dy, k, padding=None):
  """∂L/∂w[a, b, i, o] = Σ_{n,h,w} x_pad[n, h+a, w+b, i] · dy[n, h, w, o], summed in float64."""
  x, dy = np.float64(x), np.float64(dy)
  _, h, w, _ = dy.shape
  lo, hi = ((k - 1) // 2, k - 1 - (k - 1) // 2) if padding is None else padding
  xp = np.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
  out = np.zeros((k, k, x.shape[-1], dy.shape[-1]))
  for a in range(k):
    for b in range(k):
      out[a, b] = np.einsum("nhwi,nhwo->io", xp[:, a : a + h, b : b + w], dy)
  return out


@pytest.mark.parametrize(
  "shape,k,rows",
  [
    ((2, 8, 6, 3, 5), 3, None),  # rows chosen from the size
    ((1, 9, 7, 4, 2), 3, 3),  # several chunks, odd sizes
    ((3, 6, 10, 5, 4), 1, 2),  # 1×1 kernel
    ((2, 5, 5, 2, 3), 5, 5),  # one chunk, a 5×5 kernel
  ],
)
def test_im2col_weight_grad_matches_float64_sum(shape, k, rows):
  n, h, w, ci, co = shape
  rng = np.random.default_rng(0)
  x = rng.standard_normal((n, h, w, ci)).astype(np.float32)
  dy = rng.standard_normal((n, h, w, co)).astype(np.float32)
  got = conv.im2col_weight_grad(jnp.asarray(x), jnp.asarray(dy), k, rows)
  np.testing.assert_allclose(np.asarray(got), _weight_grad_numpy(x, dy, k), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
  "shape,k,padding",
  [
    (
      (2, 6, 5, 3, 8),
      2,
      (1, 1),
    ),  # the subpixel upsampling convolution's 2×2 kernel: dy is (H+1, W+1)
    ((1, 7, 9, 2, 3), 3, (0, 0)),  # 'VALID': dy is (H-2, W-2)
  ],
)
def test_im2col_weight_grad_with_explicit_padding(shape, k, padding):
  n, h, w, ci, co = shape
  ho, wo = h + sum(padding) - k + 1, w + sum(padding) - k + 1
  rng = np.random.default_rng(1)
  x = rng.standard_normal((n, h, w, ci)).astype(np.float32)
  dy = rng.standard_normal((n, ho, wo, co)).astype(np.float32)
  got = conv.im2col_weight_grad(jnp.asarray(x), jnp.asarray(dy), k, padding=padding)
  np.testing.assert_allclose(
    np.asarray(got), _weight_grad_numpy(x, dy, k, padding), rtol=1e-5, atol=1e-4
  )
  with pytest.raises(ValueError, match="im2col_weight_grad"):
    conv.im2col_weight_grad(jnp.asarray(x), jnp.asarray(dy), k + 2, padding=padding)


def test_rows_per_chunk_divides_the_height():
  assert conv.rows_per_chunk(4, 128, 128) == 1
  assert conv.rows_per_chunk(4, 16, 16) == 8
  assert conv.rows_per_chunk(1, 8, 8) == 8  # the whole map in one chunk
  for h in (7, 12, 30):
    r = conv.rows_per_chunk(2, h, 20, positions=200)
    assert h % r == 0 and (2 * r * 20 <= 200 or r == 1)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("weight_grad", ["xla", "im2col"])
def test_conv_equals_flax_conv_in_value_and_gradients(k, weight_grad):
  """Same params tree, output and gradients (w.r.t. input and params) as nn.Conv(padding='SAME')."""
  x = jax.random.normal(jax.random.key(0), (2, 12, 10, 5))
  ours = conv.Conv(7, k, weight_grad=weight_grad)
  ref = nn.Conv(7, (k, k), padding="SAME")
  params = ref.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x)) == jax.tree.map(jnp.shape, params)
  np.testing.assert_allclose(
    ours.init(jax.random.key(1), x)["params"]["kernel"], params["params"]["kernel"]
  )

  def loss(module):
    return lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))

  (v1, g1) = jax.value_and_grad(loss(ours), argnums=(0, 1))(params, x)
  (v2, g2) = jax.value_and_grad(loss(ref), argnums=(0, 1))(params, x)
  np.testing.assert_allclose(v1, v2, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


class _Device:
  def __init__(self, platform):
    self.platform = platform


def test_conv_impl_auto_is_cpu_only_on_one_cpu_device():
  assert conv.use_im2col("auto") and conv.use_im2col("im2col") and not conv.use_im2col("xla")
  assert model_conv.resolve_conv_impl("auto", [_Device("cpu")]) == "cpu"
  assert model_conv.resolve_conv_impl("auto", [_Device("cpu")] * 8) == "xla"
  assert model_conv.resolve_conv_impl("auto", [_Device("tpu")]) == "xla"
  assert model_conv.resolve_conv_impl("cpu", [_Device("tpu")] * 4) == "cpu"
  cfg = dict(image_size=16, channels=8, channel_mult=(1, 2), num_groups=4)
  assert unet.build(cfg | {"conv_impl": "auto"}, [_Device("gpu")]).config.conv_impl == "xla"
  assert unet.build(cfg | {"conv_impl": "auto"}, [_Device("cpu")]).config.conv_impl == "cpu"


def test_bad_or_replaced_conv_fields_are_named():
  with pytest.raises(ValueError, match="model.conv_impl='fast'"):
    unet.UNetConfig(conv_impl="fast").validate()
  with pytest.raises(ValueError, match="model.weight_grad='fast' is replaced by model.conv_impl"):
    unet.UNetConfig.from_config({"weight_grad": "fast"})
  assert (
    unet.UNetConfig.from_config({"winograd": "auto", "weight_grad": "auto"}).conv_impl == "auto"
  )
  with pytest.warns(DeprecationWarning, match="conv_impl='cpu'"):
    assert unet.UNetConfig.from_config({"winograd": "on"}).conv_impl == "cpu"
  with pytest.warns(DeprecationWarning, match="conv_impl='xla'"):
    assert unet.UNetConfig.from_config({"upsample_conv": "direct"}).conv_impl == "xla"
  with pytest.raises(ValueError, match="odd"):
    conv.Conv(3, 2).init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))


@pytest.mark.parametrize(
  "switches,rtol,atol",
  [
    (dict(weight_grad="im2col", winograd="off", upsample_conv="direct"), 1e-4, 1e-6),
    # Winograd's float32 error is ~10× the direct sum's
    (dict(weight_grad="xla", winograd="on", upsample_conv="direct"), 2e-4, 2e-6),
  ],
)
def test_unet_gradients_agree_between_conv_algorithms(force_cpu_kernels, switches, rtol, atol):
  """A whole (tiny) U-Net: parameter gradients with im2col or Winograd equal XLA's convolutions'."""
  cfg = dict(
    image_size=16,
    channels=8,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(8,),
    num_groups=4,
    head_dim=8,
  )
  grads = []
  force_cpu_kernels(**switches)
  for impl in ("xla", "cpu"):
    model = unet.UNet(unet.UNetConfig(conv_impl=impl, **cfg))
    params = unet.init_params(model, jax.random.key(0))
    # Zero-initialised output layers would stop most gradients: perturb every parameter.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = tree.unflatten([p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    z = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
    loss = lambda p: jnp.mean(jnp.square(model.apply({"params": p}, z, jnp.full((2,), 0.3), z) - z))
    grads.append(jax.jit(jax.grad(loss))(params))
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def test_chunk_shape_takes_rows_of_one_example_or_whole_maps_of_several():
  assert conv.chunk_shape(4, 128, 128) == (1, 4)  # 4 rows × 128 = 512 positions
  assert conv.chunk_shape(32, 16, 16) == (2, 16)  # two whole 16×16 maps
  assert conv.chunk_shape(6, 4, 4) == (6, 4)  # the whole batch in one step
  assert conv.chunk_shape(7, 8, 8) == (7, 8)  # 7 divides 7
  assert conv.chunk_shape(9, 16, 16) == (1, 16)  # 2 does not divide 9


def test_im2col_weight_grad_over_whole_maps_of_several_examples():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((40, 4, 4, 3)).astype(np.float32)  # two steps of 20 whole 4×4 maps
  dy = rng.standard_normal((40, 4, 4, 2)).astype(np.float32)
  assert conv.chunk_shape(40, 4, 4) == (20, 4)
  got = conv.im2col_weight_grad(jnp.asarray(x), jnp.asarray(dy), 3)
  np.testing.assert_allclose(np.asarray(got), _weight_grad_numpy(x, dy, 3), rtol=1e-5, atol=1e-4)
