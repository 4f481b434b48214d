"""The SR3 U-Net in Flax Linen (NHWC).

SR3 (Saharia et al. 2021, §3 and App. A) uses the DDPM U-Net with BigGAN residual blocks:
GroupNorm → SiLU → conv, up/down-sampling inside the residual blocks, residual connections
scaled by 1/√2, self-attention at chosen resolutions, and a noise-level embedding (sinusoidal
features of the noise level, then an MLP) applied as FiLM scale-and-shift in every block. The
low-resolution image, bicubic-upsampled to the output size, is concatenated to the noisy image.

The network sees the noise level γ (as log-SNR λ or as √γ), never a step index, so any inference
grid can be used. Params are float32; `dtype` sets the compute dtype (bfloat16 on TPU/GPU) with
GroupNorm statistics kept in float32.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sr3_jax.cpu import conv as cpu_conv
from sr3_jax.models.conv import CONV_IMPLS, Conv, resolve_conv_impl, upsample_nearest

Array = jax.Array
INV_SQRT2 = 1.0 / math.sqrt(2.0)
CONDITIONINGS = ("concat", "film", "cross_attention", "injection", "none")
NOISE_EMBEDDINGS = ("logsnr", "sqrt_gamma")


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """Shape of the network (paper Table A.1 names: channels, multipliers, res blocks)."""

  image_size: int = 128
  out_channels: int = 3
  channels: int = 64
  channel_mult: tuple[int, ...] = (1, 2, 4, 8, 8)
  num_res_blocks: int = 2
  attn_resolutions: tuple[int, ...] = (16,)
  head_dim: int = 64
  dropout: float = 0.0
  num_groups: int = 32
  conditioning: str = "concat"
  noise_embedding: str = "logsnr"
  dtype: str = "float32"
  # Where GroupNorm's scale-and-shift runs: float32 (default), or the compute dtype ("compute",
  # as flax.linen.GroupNorm(dtype=bfloat16) does). Statistics are float32 either way. Chosen by
  # the TPU compiler's figures for the bf16 train step (BENCHMARKS.md, "GroupNorm dtype").
  norm_dtype: str = "float32"
  remat: bool = False
  # The convolutions (sr3_jax/models/conv.py): xla (XLA's own: TPU, GPU, a CPU mesh of several
  # devices) | cpu (sr3_jax/cpu/: Winograd, im2col weight gradients, sub-pixel upsampling, chosen
  # per layer by shape; the reference CPU train step ran 1.35x faster with them, docs/cpu_performance.md) |
  # auto: decided once by `build` from the devices the model will run on (cpu on a single CPU
  # device, xla otherwise). The same params either way.
  conv_impl: str = "auto"
  # Block style. SR3/BigGAN (default): resampling inside residual blocks, FiLM scale-and-shift,
  # residual sums scaled by 1/√2, a 4·channels embedding. DDPM style (the widely used PyTorch
  # SR3 port): resample="conv", film="shift", skip_scale=1.0, emb_channels=channels.
  resample: str = "resblock"  # resblock | conv
  film: str = "scale_shift"  # scale_shift | shift
  skip_scale: float = INV_SQRT2
  emb_channels: int = 0  # 0: 4 · channels
  # Extra embeddings added to the noise embedding (cascades). num_classes > 0: a class label
  # (B,) int in [0, num_classes], the last index being the null class of classifier-free
  # guidance. aug_embedding: the conditioning-augmentation level s ∈ [0, 1] (B,) (CDM).
  num_classes: int = 0
  aug_embedding: bool = False
  # How the LR input (bicubic-upsampled, HR size) enters: concat (SR3: extra input channels), or
  # through an LR encoder (a conv per level, cond_channels wide): film (its pooled summary joins
  # the embedding that modulates every block), injection (its features, projected, are added at
  # every level) or cross_attention (U-Net features attend to its features at cond_resolutions;
  # empty: the lowest resolution).
  cond_channels: int = 0  # 0: channels
  cond_resolutions: tuple[int, ...] = ()

  @classmethod
  def from_config(cls, cfg) -> "UNetConfig":
    """From the `model` block of an experiment config (unknown keys are an error; the CPU-kernel
    fields that `conv_impl` replaced are read as it: see `_conv_impl_from_deprecated`)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = _conv_impl_from_deprecated(dict(cfg))
    unknown = sorted(set(values) - names)
    if unknown:
      raise ValueError(f"unknown model config field(s) {unknown}; known: {sorted(names)}")
    for key in ("channel_mult", "attn_resolutions", "cond_resolutions"):
      if key in values:
        values[key] = tuple(int(v) for v in values[key])
    out = cls(**values)
    out.validate()
    return out

  def validate(self) -> None:
    down = 2 ** (len(self.channel_mult) - 1)
    if self.image_size % down:
      raise ValueError(
        f"model.image_size={self.image_size} must be divisible by {down} "
        f"(2 ** (len(model.channel_mult) - 1))"
      )
    for m in self.channel_mult:
      if (self.channels * m) % self.num_groups:
        raise ValueError(
          f"model.channels * {m} = {self.channels * m} is not divisible by "
          f"model.num_groups={self.num_groups}"
        )
    if self.conditioning not in CONDITIONINGS:
      raise ValueError(f"model.conditioning={self.conditioning!r}; choose one of {CONDITIONINGS}")
    if self.noise_embedding not in NOISE_EMBEDDINGS:
      raise ValueError(
        f"model.noise_embedding={self.noise_embedding!r}; choose one of {NOISE_EMBEDDINGS}"
      )
    if self.resample not in ("resblock", "conv"):
      raise ValueError(f"model.resample={self.resample!r}; choose 'resblock' or 'conv'")
    if self.film not in ("scale_shift", "shift"):
      raise ValueError(f"model.film={self.film!r}; choose 'scale_shift' or 'shift'")
    if self.conv_impl not in CONV_IMPLS:
      raise ValueError(f"model.conv_impl={self.conv_impl!r}; choose one of {CONV_IMPLS}")
    if self.dtype not in ("float32", "bfloat16", "float16"):
      raise ValueError(f"model.dtype={self.dtype!r}; choose float32, bfloat16 or float16")
    if self.norm_dtype not in ("float32", "compute"):
      raise ValueError(f"model.norm_dtype={self.norm_dtype!r}; choose 'float32' or 'compute'")

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)


# The variable collection of kernels transformed ahead of inference (CPU Winograd only).
PREPARED = cpu_conv.PREPARED


def conv_factory(impl: str):
  """The seam to the CPU kernels: the convolution class of every block for a resolved
  `model.conv_impl` (cpu: sr3_jax.cpu.conv.Conv; xla, or an unresolved auto: models.conv.Conv)."""
  return cpu_conv.Conv if impl == "cpu" else Conv


# Fields that model.conv_impl replaced, and the implementation each non-auto value asked for.
DEPRECATED_CONV_FIELDS = {
  "weight_grad": {"xla": "xla", "im2col": "cpu"},
  "winograd": {"off": "xla", "on": "cpu"},
  "upsample_conv": {"direct": "xla", "subpixel": "cpu"},
}


def _conv_impl_from_deprecated(values: dict) -> dict:
  """Drops the replaced fields (configs saved before conv_impl hold them as `auto`); a value that
  chose an algorithm sets conv_impl (cpu if any asked for a CPU kernel) with a warning."""
  asked = set()
  for name, meaning in DEPRECATED_CONV_FIELDS.items():
    value = values.pop(name, "auto")
    if value == "auto":
      continue
    if value not in meaning:
      raise ValueError(
        f"model.{name}={value!r} is replaced by model.conv_impl (one of {CONV_IMPLS})"
      )
    asked.add(meaning[value])
  if asked and values.get("conv_impl", "auto") == "auto":
    impl = "cpu" if "cpu" in asked else "xla"
    warnings.warn(
      f"model.weight_grad / winograd / upsample_conv are replaced by model.conv_impl; "
      f"reading them as conv_impl={impl!r}",
      DeprecationWarning,
      stacklevel=3,
    )
    values["conv_impl"] = impl
  return values


def noise_features(gamma: Array, kind: str) -> Array:
  """The scalar the embedding sees: λ = log(γ/(1−γ)) or SR3's 1000·√γ (B,)."""
  gamma = jnp.clip(gamma.astype(jnp.float32), 1e-12, 1.0 - 1e-7)
  if kind == "logsnr":
    return jnp.log(gamma) - jnp.log1p(-gamma)
  return 1000.0 * jnp.sqrt(gamma)


def sinusoidal_embedding(x: Array, dim: int, min_period: float, max_period: float) -> Array:
  """[sin(x·ω_k), cos(x·ω_k)] with periods geometric from min_period to max_period; (B,) → (B, dim)."""
  half = dim // 2
  periods = min_period * (max_period / min_period) ** (
    jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1)
  )
  args = x[:, None] * (2.0 * jnp.pi / periods)[None, :]
  return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class GroupNorm32(nn.Module):
  """GroupNorm with float32 statistics whatever the compute dtype; returns the input dtype.

  Written as two reductions over the positions (Σx, Σx² per channel, then per group) and one
  fused scale-and-shift: fewer passes over the activations than a reshape to (B, H, W, G, C/G)
  with reductions over three axes (docs/cpu_performance.md has the CPU figure); on TPU/GPU it fuses the
  same way.
  """

  num_groups: int
  epsilon: float = 1e-5
  apply_in_float32: bool = True  # False: the scale-and-shift in the input's dtype

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    groups = min(self.num_groups, c)
    per = c // groups
    xf = x.astype(jnp.float32).reshape(b, h * w, c)
    n = h * w * per
    mean = jnp.sum(xf, axis=1).reshape(b, groups, per).sum(-1) / n
    mean_sq = jnp.sum(jnp.square(xf), axis=1).reshape(b, groups, per).sum(-1) / n
    inv = jax.lax.rsqrt(jnp.maximum(mean_sq - jnp.square(mean), 0.0) + self.epsilon)
    gamma = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    beta = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    scale = jnp.repeat(inv, per, axis=1) * gamma  # (B, C)
    shift = beta - jnp.repeat(mean, per, axis=1) * scale
    if not self.apply_in_float32:
      return x * scale[:, None, None, :].astype(x.dtype) + shift[:, None, None, :].astype(x.dtype)
    y = x.astype(jnp.float32) * scale[:, None, None, :] + shift[:, None, None, :]
    return y.astype(x.dtype)


def downsample_avg(x: Array) -> Array:
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class ResBlock(nn.Module):
  """BigGAN-style residual block with FiLM from the noise embedding; output (skip + h)/√2."""

  out_channels: int
  num_groups: int
  dropout: float
  dtype: Any
  resample: str | None = None  # None, "up" or "down"
  film: str = "scale_shift"
  skip_scale: float = INV_SQRT2
  conv_cls: Any = None  # models.conv.conv_factory(...): the class of every convolution here
  norm_f32: bool = True  # GroupNorm32.apply_in_float32

  @nn.compact
  def __call__(self, x, emb, train: bool):
    conv = lambda c, k, name, init=nn.initializers.lecun_normal(), upsample=False: self.conv_cls(
      c, k, dtype=self.dtype, kernel_init=init, upsample=upsample, name=name
    )
    norm = lambda name: GroupNorm32(self.num_groups, apply_in_float32=self.norm_f32, name=name)
    h = nn.silu(norm("norm_in")(x))
    if self.resample == "up":  # h is upsampled inside conv_in
      x = upsample_nearest(x)
    elif self.resample == "down":
      h, x = downsample_avg(h), downsample_avg(x)
    h = conv(self.out_channels, 3, "conv_in", upsample=self.resample == "up")(h)
    if self.film == "scale_shift":
      scale_shift = nn.Dense(2 * self.out_channels, dtype=self.dtype, name="film")(nn.silu(emb))
      scale, shift = jnp.split(scale_shift[:, None, None, :], 2, axis=-1)
      h = norm("norm_out")(h) * (1.0 + scale) + shift
    else:  # DDPM: the embedding is added before the second norm
      h = h + nn.Dense(self.out_channels, dtype=self.dtype, name="film")(emb)[:, None, None, :]
      h = norm("norm_out")(h)
    h = nn.silu(h)
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = conv(self.out_channels, 3, "conv_out", nn.initializers.zeros)(h)
    if x.shape[-1] != self.out_channels:
      x = conv(self.out_channels, 1, "skip")(x)
    return (x + h) * self.skip_scale if self.skip_scale != 1.0 else x + h


class Resample(nn.Module):
  """DDPM-style resampling outside the residual blocks: stride-2 3×3 conv, or nearest ×2 + 3×3 conv."""

  direction: str
  dtype: Any
  conv_cls: Any = None  # models.conv.conv_factory(...)

  @nn.compact
  def __call__(self, x):
    if self.direction == "up":
      return self.conv_cls(x.shape[-1], 3, dtype=self.dtype, upsample=True, name="conv")(x)
    return nn.Conv(
      x.shape[-1], (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), dtype=self.dtype, name="conv"
    )(x)


class AttnBlock(nn.Module):
  """Multi-head self-attention over the H·W positions, via jax.nn.dot_product_attention."""

  head_dim: int
  num_groups: int
  dtype: Any
  skip_scale: float = INV_SQRT2
  norm_f32: bool = True  # GroupNorm32.apply_in_float32

  @nn.compact
  def __call__(self, x):
    b, hgt, wid, c = x.shape
    heads = max(1, c // self.head_dim)
    h = GroupNorm32(self.num_groups, apply_in_float32=self.norm_f32, name="norm")(x)
    h = h.reshape(b, hgt * wid, c)
    qkv = nn.DenseGeneral((3, heads, c // heads), dtype=self.dtype, name="qkv")(h)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    h = jax.nn.dot_product_attention(q, k, v)  # (B, L, heads, head_dim)
    h = nn.DenseGeneral(
      c, axis=(-2, -1), dtype=self.dtype, kernel_init=nn.initializers.zeros, name="proj"
    )(h)
    h = h.reshape(b, hgt, wid, c)
    return (x + h) * self.skip_scale if self.skip_scale != 1.0 else x + h


class LREncoder(nn.Module):
  """Features of the conditioning image at every U-Net level: 3×3 conv, then stride-2 conv + 3×3
  conv per level down; (B, H, W, C) → [(B, H/2^l, W/2^l, channels) for l < levels]."""

  channels: int
  levels: int
  dtype: Any

  @nn.compact
  def __call__(self, cond):
    conv = lambda name, stride=1: nn.Conv(
      self.channels,
      (3, 3),
      strides=(stride, stride),
      padding=((1, 1), (1, 1)),
      dtype=self.dtype,
      name=name,
    )
    h = nn.silu(conv("conv_in")(cond.astype(self.dtype)))
    feats = [h]
    for level in range(1, self.levels):
      h = nn.silu(conv(f"down{level}", 2)(h))
      h = nn.silu(conv(f"conv{level}")(h))
      feats.append(h)
    return feats


class CrossAttnBlock(nn.Module):
  """U-Net features (queries) attend to LR-encoder features (keys, values) of the same level."""

  head_dim: int
  num_groups: int
  dtype: Any
  skip_scale: float = INV_SQRT2
  norm_f32: bool = True  # GroupNorm32.apply_in_float32

  @nn.compact
  def __call__(self, x, ctx):
    b, hgt, wid, c = x.shape
    heads = max(1, c // self.head_dim)
    q = nn.DenseGeneral((heads, c // heads), dtype=self.dtype, name="q")(
      GroupNorm32(self.num_groups, apply_in_float32=self.norm_f32, name="norm")(x).reshape(
        b, hgt * wid, c
      )
    )
    ctx = ctx.reshape(b, -1, ctx.shape[-1]).astype(self.dtype)
    kv = nn.DenseGeneral((2, heads, c // heads), dtype=self.dtype, name="kv")(ctx)
    h = jax.nn.dot_product_attention(q, kv[:, :, 0], kv[:, :, 1])
    h = nn.DenseGeneral(
      c, axis=(-2, -1), dtype=self.dtype, kernel_init=nn.initializers.zeros, name="proj"
    )(h).reshape(b, hgt, wid, c)
    return (x + h) * self.skip_scale if self.skip_scale != 1.0 else x + h


class UNet(nn.Module):
  """SR3 U-Net: (z (B,H,W,C), γ (B,), cond (B,H,W,C) or None) → prediction (B,H,W,out_channels)."""

  config: UNetConfig

  @nn.compact
  def __call__(
    self,
    z: Array,
    gamma: Array,
    cond: Array | None = None,
    train: bool = False,
    *,
    label: Array | None = None,
    aug_level: Array | None = None,
  ) -> Array:
    cfg = self.config
    dtype = cfg.compute_dtype
    conv = conv_factory(cfg.conv_impl)
    block_cls = nn.remat(ResBlock, static_argnums=(3,)) if cfg.remat else ResBlock
    norm_f32 = cfg.norm_dtype == "float32"
    res_block = lambda c, name, resample=None: block_cls(
      c,
      cfg.num_groups,
      cfg.dropout,
      dtype,
      resample,
      cfg.film,
      cfg.skip_scale,
      conv,
      norm_f32,
      name=name,
    )
    attn = lambda name: AttnBlock(
      cfg.head_dim, cfg.num_groups, dtype, cfg.skip_scale, norm_f32, name=name
    )

    def resample(h, direction, name):
      if cfg.resample == "conv":
        return Resample(direction, dtype, conv, name=name)(h)
      return res_block(h.shape[-1], name, direction)(h, emb, train)

    # Noise-level embedding: sinusoidal features of λ (or √γ), then a two-layer MLP.
    emb_dim = cfg.emb_channels or 4 * cfg.channels
    feats = noise_features(gamma, cfg.noise_embedding)
    if cfg.noise_embedding == "logsnr":
      emb = sinusoidal_embedding(feats, cfg.channels, min_period=0.05, max_period=200.0)
    else:
      emb = sinusoidal_embedding(
        feats, cfg.channels, min_period=2 * jnp.pi, max_period=2 * jnp.pi * 1e4
      )
    emb = nn.Dense(4 * cfg.channels, name="emb_dense0")(emb)
    emb = nn.Dense(emb_dim, name="emb_dense1")(nn.silu(emb))
    if cfg.num_classes:
      if label is None:  # no label given: the null class (unconditional)
        label = jnp.full((z.shape[0],), cfg.num_classes, jnp.int32)
      emb = emb + nn.Embed(cfg.num_classes + 1, emb_dim, name="class_emb")(label)
    if cfg.aug_embedding:
      level = (
        jnp.zeros((z.shape[0],), jnp.float32)
        if aug_level is None
        else aug_level.astype(jnp.float32)
      )
      a = sinusoidal_embedding(level, cfg.channels, min_period=2e-3, max_period=4.0)
      a = nn.Dense(emb_dim, name="aug_dense1")(
        nn.silu(nn.Dense(4 * cfg.channels, name="aug_dense0")(a))
      )
      emb = emb + a
    emb = emb.astype(dtype)

    # Conditioning seam: how the LR input enters the network.
    if cfg.conditioning != "none" and cond is None:
      raise ValueError(
        f"model.conditioning={cfg.conditioning!r} needs the upsampled LR image as `cond`"
      )
    x = jnp.concatenate([z, cond.astype(z.dtype)], axis=-1) if cfg.conditioning == "concat" else z
    feats = None
    if cfg.conditioning in ("film", "injection", "cross_attention"):
      feats = LREncoder(
        cfg.cond_channels or cfg.channels, len(cfg.channel_mult), dtype, name="lr_encoder"
      )(cond)
    if cfg.conditioning == "film":
      summary = jnp.mean(feats[-1].astype(jnp.float32), axis=(1, 2))
      emb = emb + nn.Dense(emb_dim, name="film_dense")(summary).astype(emb.dtype)
    cross_res = cfg.cond_resolutions or (cfg.image_size // 2 ** (len(cfg.channel_mult) - 1),)

    def inject(h, level, name):
      if cfg.conditioning != "injection":
        return h
      return h + conv(h.shape[-1], 1, dtype=dtype, name=name)(feats[level])

    def cross(h, level, res, name):
      if cfg.conditioning != "cross_attention" or res not in cross_res:
        return h
      return CrossAttnBlock(
        cfg.head_dim, cfg.num_groups, dtype, cfg.skip_scale, norm_f32, name=name
      )(h, feats[level])

    h = conv(cfg.channels, 3, dtype=dtype, name="conv_in")(x.astype(dtype))

    skips = [h]
    res = cfg.image_size
    for level, mult in enumerate(cfg.channel_mult):
      h = inject(h, level, f"down{level}_inject")
      for i in range(cfg.num_res_blocks):
        h = res_block(cfg.channels * mult, f"down{level}_res{i}")(h, emb, train)
        if res in cfg.attn_resolutions:
          h = attn(f"down{level}_attn{i}")(h)
        h = cross(h, level, res, f"down{level}_cross{i}")
        skips.append(h)
      if level != len(cfg.channel_mult) - 1:
        h = resample(h, "down", f"down{level}_resample")
        res //= 2
        skips.append(h)

    h = res_block(h.shape[-1], "mid_res0")(h, emb, train)
    h = attn("mid_attn")(h)
    h = res_block(h.shape[-1], "mid_res1")(h, emb, train)

    for level in reversed(range(len(cfg.channel_mult))):
      mult = cfg.channel_mult[level]
      h = inject(h, level, f"up{level}_inject")
      for i in range(cfg.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = res_block(cfg.channels * mult, f"up{level}_res{i}")(h, emb, train)
        if res in cfg.attn_resolutions:
          h = attn(f"up{level}_attn{i}")(h)
        h = cross(h, level, res, f"up{level}_cross{i}")
      if level != 0:
        h = resample(h, "up", f"up{level}_resample")
        res *= 2
    assert not skips

    h = nn.silu(GroupNorm32(cfg.num_groups, apply_in_float32=norm_f32, name="norm_out")(h))
    out = conv(
      cfg.out_channels, 3, dtype=dtype, kernel_init=nn.initializers.zeros, name="conv_out"
    )(h)
    return out.astype(jnp.float32)


def build(model_cfg, devices=None) -> UNet:
  """A UNet from the config's `model` block (a ConfigDict or a UNetConfig), with `conv_impl=auto`
  decided here, once, from `devices` (the mesh's; default: jax.devices())."""
  cfg = model_cfg if isinstance(model_cfg, UNetConfig) else UNetConfig.from_config(model_cfg)
  cfg.validate()
  if cfg.conv_impl == "auto":
    devices = jax.devices() if devices is None else list(devices)
    cfg = dataclasses.replace(cfg, conv_impl=resolve_conv_impl("auto", devices))
  return UNet(cfg)


def input_shapes(cfg: UNetConfig, batch: int) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
  hw = (batch, cfg.image_size, cfg.image_size, cfg.out_channels)
  return hw, (None if cfg.conditioning == "none" else hw)


def init_params(model: UNet, rng: Array, batch: int = 1) -> Any:
  """Initial params (a plain pytree) for `batch` dummy inputs."""
  z_shape, c_shape = input_shapes(model.config, batch)

  def init(rng):
    z = jnp.zeros(z_shape, jnp.float32)
    cond = None if c_shape is None else jnp.zeros(c_shape, jnp.float32)
    extra = {}
    if model.config.num_classes:
      extra["label"] = jnp.zeros((batch,), jnp.int32)
    if model.config.aug_embedding:
      extra["aug_level"] = jnp.zeros((batch,), jnp.float32)
    return model.init({"params": rng}, z, jnp.full((batch,), 0.5), cond, train=False, **extra)[
      "params"
    ]

  # One compiled call instead of hundreds of eager ops; under an outer jit this simply inlines.
  return jax.jit(init)(rng)


def prepare_inference(
  model: UNet, params: Any, z: Array, gamma: Array, cond: Array | None = None, **extra
) -> dict:
  """The variables for `model.apply` at inference: {"params": params} plus, where a convolution runs
  as Winograd on inputs of these shapes, its transformed kernel (conv.PREPARED), made once here
  instead of at every sampling step. Call it under the same jit as the sampler: only the kernel
  transforms are then computed; the forward pass it traces has no used output and is removed.
  `z`, `cond` and `extra` need only the shapes the sampler's calls will have. Only the CPU
  convolutions prepare anything: with conv_impl xla (every TPU and GPU) nothing is traced and the
  variables are {"params": params}.
  """
  if model.config.conv_impl != "cpu":
    return {"params": params}
  _, prepared = model.apply(
    {"params": params}, z, gamma, cond, train=False, mutable=[PREPARED], **extra
  )
  return {"params": params, **prepared}


def count_params(model_cfg) -> int:
  """Number of parameters, from shapes alone (jax.eval_shape: nothing is allocated)."""
  model = build(model_cfg)
  shapes = jax.eval_shape(lambda k: init_params(model, k), jax.random.key(0))
  return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes)))
