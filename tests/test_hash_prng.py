"""The counter-hash PRNG of train.dropout_rng='hash': statistics against closed forms, and sharding."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from sr3_jax import hash_prng

N = 1 << 20
KEY = hash_prng.key_from(jax.random.key(0))


def z_limit(n):
  """Five standard deviations of a correlation estimated from n independent pairs."""
  return 5.0 / np.sqrt(n)


def test_keys_are_hash_keys_and_deterministic():
  assert jax.random.key_impl(KEY) == hash_prng.HASH_PRNG
  a, b = (np.asarray(jax.random.bits(KEY, (64,), jnp.uint32)) for _ in range(2))
  np.testing.assert_array_equal(a, b)
  assert len(np.unique(a)) == 64


def test_dropout_keep_rate_matches_the_binomial():
  for p in (0.8, 0.5, 0.1):
    keep = np.asarray(
      jax.random.bernoulli(jax.random.fold_in(KEY, int(p * 10)), p, (N,)), np.float64
    )
    sigma = np.sqrt(p * (1 - p) / N)  # binomial standard deviation of the mean
    assert abs(keep.mean() - p) < 5 * sigma, (p, keep.mean())


def test_every_bit_is_fair_and_bytes_are_uniform():
  bits = np.asarray(jax.random.bits(KEY, (1 << 18,), jnp.uint32)).astype(np.uint64)
  n = bits.size
  for b in range(32):
    freq = ((bits >> b) & 1).mean()
    assert abs(freq - 0.5) < 5 * np.sqrt(0.25 / n), (b, freq)
  for shift in (0, 8, 16, 24):
    counts = np.bincount(((bits >> shift) & 0xFF).astype(np.int64), minlength=256)
    chi2 = ((counts - n / 256) ** 2 / (n / 256)).sum()
    assert chi2 < stats.chi2.ppf(1 - 1e-6, df=255), (shift, chi2)


def test_neighbours_along_every_axis_are_uncorrelated():
  u = np.asarray(jax.random.uniform(KEY, (4, 64, 64, 64)), np.float64)
  for axis in range(4):
    a = np.moveaxis(u, axis, 0)
    x, y = a[:-1].ravel(), a[1:].ravel()
    r = np.corrcoef(x, y)[0, 1]
    assert abs(r) < z_limit(x.size), (axis, r)


def test_split_and_folded_keys_give_independent_streams():
  keys = jax.random.split(KEY, 4096)
  data = np.asarray(jax.random.key_data(keys)).reshape(-1)
  assert len(np.unique(data)) == data.size  # no two derived words collide
  streams = [
    jax.random.uniform(k, (N // 4,))
    for k in (keys[0], keys[1], jax.random.fold_in(KEY, 0), jax.random.fold_in(KEY, 1), KEY)
  ]
  streams = np.asarray(jnp.stack(streams), np.float64)
  r = np.corrcoef(streams)
  off_diagonal = r[~np.eye(len(streams), dtype=bool)]
  assert np.abs(off_diagonal).max() < z_limit(N // 4), r
  # the same element index under two keys: its bits agree about half the time, as for unrelated words
  a, b = (np.asarray(jax.random.bits(k, (N // 4,), jnp.uint32)) for k in (keys[0], keys[1]))
  same = np.unpackbits((a ^ b).view(np.uint8)).mean()
  assert abs(same - 0.5) < 5 * np.sqrt(0.25 / (32 * a.size))


def test_other_bit_widths():
  for dtype in (jnp.uint8, jnp.uint16):
    v = np.asarray(jax.random.bits(KEY, (1 << 16,), dtype))
    assert v.dtype == dtype
    assert abs(v.astype(np.float64).mean() / np.iinfo(dtype).max - 0.5) < 0.01
  u = np.asarray(jax.random.normal(KEY, (1 << 16,)), np.float64)
  assert abs(u.mean()) < 5 / np.sqrt(u.size) and abs(u.std() - 1) < 0.02


def _np_mix(v):
  """hash_prng.mix in numpy: 32-bit wrapping arithmetic carried in uint64."""
  m = np.uint64(0xFFFFFFFF)
  v = v ^ (v >> np.uint64(16))
  v = (v * np.uint64(0x7FEB352D)) & m
  v = v ^ (v >> np.uint64(15))
  v = (v * np.uint64(0x846CA68B)) & m
  return v ^ (v >> np.uint64(16))


def _np_bits(key, index, block):
  """The closed form bits[b, i] = mix(mix(i·φ ⊕ k0) + (k1 ⊕ mix(b·φ))) in numpy."""
  m, phi = np.uint64(0xFFFFFFFF), np.uint64(0x9E3779B9)
  k0, k1 = (np.uint64(k) for k in np.asarray(jax.random.key_data(key)))
  k1 = k1 ^ _np_mix((block.astype(np.uint64) * phi) & m)
  return _np_mix((_np_mix(((index.astype(np.uint64) * phi) & m) ^ k0) + k1) & m)


def test_a_draw_beyond_one_counter_is_numbered_in_blocks(monkeypatch):
  """With the counter shrunk to 2**12 elements, an (8, 32, 32) draw (2**13) is 8 blocks of 1024
  numbered by the leading axis; each equals the closed form, and block 0 is the unblocked draw."""
  shape = (8, 32, 32)
  flat = np.arange(np.prod(shape)).reshape(shape)
  whole = np.asarray(jax.random.bits(KEY, shape, jnp.uint32))
  np.testing.assert_array_equal(whole, _np_bits(KEY, flat, np.zeros(shape, np.int64)))
  monkeypatch.setattr(hash_prng, "COUNTER_LIMIT", 2**12)
  blocked = np.asarray(jax.jit(lambda k: jax.random.bits(k, shape, jnp.uint32))(KEY))
  block, index = np.divmod(flat, 32 * 32)
  np.testing.assert_array_equal(blocked, _np_bits(KEY, index, block))
  np.testing.assert_array_equal(blocked[0], whole[0])
  assert len(np.unique(blocked)) > 0.99 * blocked.size  # blocks are not copies of each other
  with pytest.raises(ValueError, match="two 32-bit counters"):
    jax.jit(lambda k: jax.random.bits(k, (2, 8192), jnp.uint32)).lower(KEY)


def test_a_pod_batch_of_masks_lowers():
  """The dropout masks of the paper 16→128 U-Net's top level at a global batch of 2048 (2**33
  elements): two counters number them, so the draw traces without materialising anything."""
  draw = jax.jit(lambda k: jax.random.bernoulli(k, 0.8, (2048, 128, 128, 256)))
  assert draw.lower(KEY).out_info.shape == (2048, 128, 128, 256)


def test_the_same_mask_on_any_sharding():
  """The counter is the global index, so 8 devices draw exactly the 1-device mask."""
  script = textwrap.dedent("""
      import jax, numpy as np
      jax.config.update("jax_num_cpu_devices", 8)
      from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
      from sr3_jax import hash_prng
      key = hash_prng.key_from(jax.random.key(7))
      draw = lambda k: jax.random.bernoulli(k, 0.8, (8, 16, 16, 32))
      one = np.asarray(jax.jit(draw)(key))
      mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
      sharded = jax.jit(draw, out_shardings=NamedSharding(mesh, P("data", None, None, "model")))(key)
      assert len(sharded.sharding.device_set) == 8
      print("equal", bool((np.asarray(sharded) == one).all()), one.mean())
  """)
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split()[:2] == ["equal", "True"], proc.stdout
