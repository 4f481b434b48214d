"""A counter-hash PRNG for dropout masks: a JAX key type whose bits cost a few integer ops each.

Every bit stream of a key is a keyed hash of each element's global row-major index,
    bits[i] = mix(mix(i·φ ⊕ k0) + k1),
with `mix` a 32-bit avalanche mixer (three xorshifts around two multiplies) and φ the 32-bit
golden-ratio constant. The index comes from broadcasted iotas, so XLA partitions it: the same key
gives the same mask whatever the sharding (as Threefry does and XLA's RngBitGenerator does not).
On the 2-core dev CPU a dropout mask over (4, 128, 128, 64) costs about 4 ms, against about 50 ms
with Threefry or RngBitGenerator (docs/cpu_performance.md).

A draw of more than 2**32 elements (a global batch of dropout masks on a pod: 1024 × 128 × 128 ×
256 is 2**32) splits its shape into leading axes, whose row-major index b picks a block, and
trailing axes of at most 2**32 elements, whose index i counts within it:
    bits[b, i] = mix(mix(i·φ ⊕ k0) + (k1 ⊕ mix(b·φ))),
which is the formula above when b = 0 (mix(0) = 0), so smaller draws are unchanged.

It is a statistical generator, not a cryptographic one: good enough to decide which activations
dropout zeroes (tests/test_hash_prng.py checks the keep rate, neighbour correlations, byte
frequencies and independence of split and folded keys), not a replacement for Threefry where
streams must be unpredictable. Selected by `train.dropout_rng="hash"`, and by its default `auto` on a CPU mesh.
"""

from __future__ import annotations

import math

import jax
import jax.extend.random as jex_random
import jax.numpy as jnp
from jax import lax

_PHI = 0x9E3779B9
_M1, _M2 = 0x7FEB352D, 0x846CA68B  # multipliers of a low-bias xorshift–multiply mixer
_SALT = (0x243F6A88, 0x85A308D3)  # distinct constants for the two words of a derived key
_FOLD_SALT = (0x13198A2E, 0x03707344)  # other ones for fold_in, so fold_in(k, i) ≠ split(k)[i]


def _u32(v):
  return jnp.asarray(v).astype(jnp.uint32) if not isinstance(v, int) else jnp.uint32(v & 0xFFFFFFFF)


def mix(v: jax.Array) -> jax.Array:
  """A bijective 32-bit avalanche mixer: each input bit flips about half the output bits."""
  v = v ^ (v >> 16)
  v = v * jnp.uint32(_M1)
  v = v ^ (v >> 15)
  v = v * jnp.uint32(_M2)
  return v ^ (v >> 16)


def keyed(key: jax.Array, counter: jax.Array, block: jax.Array | None = None) -> jax.Array:
  """32 hashed bits of `counter` (uint32, any shape) under `key` ((2,) uint32), in `block`."""
  k1 = key[1] if block is None else key[1] ^ mix(block * jnp.uint32(_PHI))
  return mix(mix(counter * jnp.uint32(_PHI) ^ key[0]) + k1)


COUNTER_LIMIT = 2**32  # elements one 32-bit counter numbers; larger draws are split in blocks


def _row_major(shape: tuple[int, ...], axes: range) -> jax.Array:
  """The row-major index over `axes` of `shape` at every element, from partitionable iotas."""
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(axes):
    index = index + lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
    stride *= shape[axis]
  return index


def _index(shape: tuple[int, ...]) -> jax.Array:
  """The row-major index of every element of `shape` as uint32 (at most 2**32 elements)."""
  if math.prod(shape) > COUNTER_LIMIT:
    raise ValueError(
      f"hash PRNG: {math.prod(shape)} keys in one split exceed its 2**32 counter; split in "
      f"smaller pieces"
    )
  return _row_major(shape, range(len(shape)))


def _counter(shape: tuple[int, ...]) -> tuple[jax.Array | None, jax.Array]:
  """(block, index within the block) of every element: no block when the draw fits one counter."""
  if math.prod(shape) <= COUNTER_LIMIT:
    return None, _row_major(shape, range(len(shape)))
  split = next(j for j in range(len(shape) + 1) if math.prod(shape[j:]) <= COUNTER_LIMIT)
  if split == len(shape) or math.prod(shape[:split]) > COUNTER_LIMIT:
    raise ValueError(
      f"hash PRNG: a draw of shape {shape} cannot be numbered by two 32-bit counters (its last "
      f"axis, or its leading axes, exceed 2**32 elements); draw in smaller pieces or use "
      f"train.dropout_rng='threefry'"
    )
  return _row_major(shape, range(split)), _row_major(shape, range(split, len(shape)))


def _seed(seed: jax.Array) -> jax.Array:
  s = _u32(seed)
  return jnp.stack([mix(s ^ jnp.uint32(_SALT[0])), mix(mix(s) + jnp.uint32(_SALT[1]))])


def _words(key: jax.Array, counter: jax.Array, salts: tuple[int, int]) -> list[jax.Array]:
  """Two independent 32-bit hashes of `counter`, under salted copies of `key`."""
  return [keyed(key ^ jnp.uint32(salt), counter) for salt in salts]


def _derive(key: jax.Array, counter: jax.Array, salts: tuple[int, int]) -> jax.Array:
  """A new key (…, 2) for each counter value."""
  return jnp.stack(_words(key, counter, salts), axis=-1)


def _split(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  return _derive(key, _index(tuple(shape)), _SALT)


def _fold_in(key: jax.Array, data) -> jax.Array:
  return _derive(key, _u32(data), _FOLD_SALT)


def _random_bits(key: jax.Array, bit_width: int, shape: tuple[int, ...]) -> jax.Array:
  shape = tuple(shape)
  block, index = _counter(shape)
  if bit_width == 64:  # two independent 32-bit streams for the high and low words
    words = (keyed(key ^ jnp.uint32(salt), index, block) for salt in _SALT)
    hi, lo = (w.astype(jnp.uint64) for w in words)
    return (hi << jnp.uint64(32)) | lo
  bits = keyed(key, index, block)
  return bits if bit_width == 32 else bits.astype(jnp.dtype(f"uint{bit_width}"))


HASH_PRNG = jex_random.define_prng_impl(
  key_shape=(2,),
  seed=_seed,
  split=_split,
  random_bits=_random_bits,
  fold_in=_fold_in,
  name="sr3_hash32",
  tag="h32",
)


def key_from(key: jax.Array) -> jax.Array:
  """A hash-PRNG key drawn from any JAX key (the two words are that key's random bits)."""
  return jax.random.wrap_key_data(jax.random.bits(key, (2,), jnp.uint32), impl=HASH_PRNG)
