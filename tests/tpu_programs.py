"""Small programs compiled by the TPU compiler for the AOT tests (no TPU needed)."""

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def mlp_gradient_step(devices, shapes, batch=512):
  """An MLP's SGD step (tanh layers of `shapes`, mean-square loss), the batch split over
  `devices` along 'data' and the weights replicated, compiled for those (TPU) devices."""
  mesh = Mesh(devices, ("data",))
  rep, dat = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

  def step(ws, x):
    def loss(ws):
      h = x
      for w in ws:
        h = jnp.tanh(h @ w)
      return jnp.mean(h**2)

    return [w - 0.01 * g for w, g in zip(ws, jax.grad(loss)(ws))]

  ws = [jax.ShapeDtypeStruct(shape, jnp.float32, sharding=rep) for shape in shapes]
  x = jax.ShapeDtypeStruct((batch, shapes[0][0]), jnp.float32, sharding=dat)
  return jax.jit(step, out_shardings=[rep] * len(shapes)).lower(ws, x).compile()
