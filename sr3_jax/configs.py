"""Shared pieces of experiment configs (experiments/configs/*.py build on these).

Every experiment file defines `get_config(arg=None)`; `arg` is a comma-separated list such as
"runlocal" or "runlocal,batch=8" parsed by `parse_arg`.
"""

from __future__ import annotations

import importlib.util
import pathlib

import ml_collections

from sr3_jax import augment, frequency, processes
from sr3_jax.data import embedded
from sr3_jax.models import unet


def parse_arg(arg: str | None, **defaults):
  """ "runlocal,batch=8" → ConfigDict(runlocal=True, batch=8), typed by the defaults given."""
  out = ml_collections.ConfigDict(dict(defaults))
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    key, eq, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
    if not eq:
      out[key] = True
    else:
      kind = type(defaults[key])
      out[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
  return out


DROPOUT_RNGS = ("auto", "threefry", "hash", "rbg", "unsafe_rbg")
LOGSNR_FIELDS = dict(logsnr_min=-15.0, logsnr_max=15.0, image_size=64, base=64)


def base_config() -> ml_collections.ConfigDict:
  """SR3's training recipe (paper §4 and App. A); experiment files set the model and data."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  # HR crops of data.image_size; LR = HR downsampled by data.factor on device.
  c.data = ml_collections.ConfigDict(
    dict(
      dataset="embedded",  # "embedded" or a prepared TFDS name, e.g. "div2k/bicubic_x4"
      data_dir=ml_collections.config_dict.placeholder(str),
      image_key="image",
      train_split="train",
      eval_split="test",
      image_size=128,
      factor=8,
      preprocess="random_crop",  # random_crop (patches of large images) | center_resize (SR3 ImageNet)
      flip=True,
      num_threads=2,
      prefetch=8,
      num_workers=0,
      label_key="",
      # Held-out data for sample grids and `sr3 eval`: another prepared dataset ("": data.dataset).
      eval_dataset="",
    )
  )  # class labels for a class-conditional base stage ("": none)

  c.model = ml_collections.ConfigDict(
    {f: getattr(unet.UNetConfig, f) for f in unet.UNetConfig.__dataclass_fields__}
  )

  # Training noise levels: SR3's p(γ) on a linear β grid, T = 2000.
  # Every schedule block carries the fields of all families (unused ones are ignored), so any
  # family is one set of --config.schedule.* flags away: β grids read start/end, log-SNR ones
  # logsnr_min/max, the resolution-shifted cosine image_size/base.
  c.schedule = ml_collections.ConfigDict(
    dict(kind="beta", name="linear", num_steps=2000, start=1e-6, end=1e-2, **LOGSNR_FIELDS)
  )

  c.diffusion = ml_collections.ConfigDict(
    dict(
      target="eps",  # eps | x0 | v
      loss="l1",  # SR3 Table 5: L1 slightly better than L2
      diffuse="hr",  # hr | residual (HR − bicubic(LR)) × residual_scale
      residual_scale=1.0,
      min_snr_gamma=0.0,  # 0: off
      p_uncond=0.0,  # class-conditional models: share of labels replaced by the null class (CFG)
      process="gaussian",  # gaussian | blur | band (sr3_jax/processes.py)
      consistency_weight=0.0,  # λ of the loss term λ·‖D(x̂0) − x_lr‖² (sr3_jax/consistency.py)
    )
  )
  c.frequency = frequency.default_config()

  # Conditioning augmentation of the LR input (cascade stages above the base; sr3_jax/augment.py).
  c.augment = augment.default_config()

  # Inference: its own grid (SR3: ≤ 100 steps, chosen by search on held-out data).
  c.sampling = ml_collections.ConfigDict(
    dict(
      sampler="ddpm",
      steps=100,
      clip_x0=1.0,
      variance="beta",
      eta=0.0,
      schedule=dict(
        kind="beta", name="linear", num_steps=100, start=1e-4, end=0.1, **LOGSNR_FIELDS
      ),
      guidance=1.0,  # classifier-free guidance: ε_u + w·(ε_c − ε_u); 1 conditional, 0 unconditional
      aug_level=0.0,  # augmentation level s of the LR input at sampling (augment.noise stages)
      project_consistency=False,  # project x̂0 onto {x : D(x) = x_lr} at every step
    )
  )

  c.optim = ml_collections.ConfigDict(
    dict(
      name="adam",
      lr=1e-4,
      warmup_steps=10_000,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      weight_decay=0.0,
      grad_clip=1.0,
      ema_decay=0.9999,
    )
  )

  c.train = ml_collections.ConfigDict(
    dict(
      batch_size=256,
      num_steps=1_000_000,
      log_every=100,
      sample_every=0,  # every K steps: PNG grid (LR | bicubic | EMA sample | HR) of
      # held-out crops and their PSNR/SSIM/consistency; 0: off
      sample_steps=20,  # sampler steps for those grids
      max_consecutive_skips=20,  # stop after this many non-finite steps in a row
      # Dropout masks' random bits: threefry (JAX's default) | hash (a counter hash,
      # sr3_jax/hash_prng.py) | rbg | unsafe_rbg (XLA's RngBitGenerator) | auto, decided once by
      # train.make_train_step from the mesh's devices:
      # - CPU: hash. A (4, 128, 128, 64) mask takes 3-4 ms against Threefry's 46-55 ms, the
      #   reference train step 11.15 s against 12.03 s (docs/cpu_performance.md, dropout masks).
      # - TPU: hash. The TPU compiler's own figures for the reference network's train step on
      #   v5p:2x2x1 (`sr3 aot`, BENCHMARKS.md "dropout masks on TPU"): optimal time 30.9 ms
      #   against Threefry's 35.7 ms, bytes accessed 60.9 GB against 71.5 GB, peak HBM 4.85 GiB
      #   against 5.12; rbg and unsafe_rbg access 69.5 GB and the cost model has no time for them.
      # - GPU: threefry, JAX's own default. On an H200 the paper 16→128 step took 0.471 s with it,
      #   0.460 s with hash and 0.465 s with unsafe_rbg, each inside the others' spread
      #   (BENCHMARKS.md, "Dropout masks on the H200"): no generator beats it measurably.
      dropout_rng="auto",
    )
  )
  c.checkpoint = ml_collections.ConfigDict(dict(every=1000, keep=3, keep_every=0, async_save=True))
  # Mesh axes: data-parallel × FSDP (sharding.make_mesh). data, fsdp: within a slice (ICI; MaxText's
  # ici_data, ici_fsdp); dcn_data, dcn_fsdp: across slices (DCN); −1 takes the rest of its pair.
  # rules: [(regex on the state path, axis sharded over fsdp or None)].
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, dcn_data=-1, dcn_fsdp=1, rules=()))
  # Progressive distillation (sr3_jax/distill.py; `sr3 distill` sets these): a teacher workdir or
  # step folder, and the steps it samples with; the student samples with half (sampling.steps).
  c.distill = ml_collections.ConfigDict(dict(teacher="", teacher_steps=0))
  c.allow_config_change = False
  return c


def validate(config) -> None:
  """Checks that the config's parts agree; one error naming the field."""
  if config.get("distill") and config.distill.get("teacher"):
    from sr3_jax import distill

    distill.validate(config)
  if config.get("joint") and config.joint.get("stages"):
    from sr3_jax import joint

    joint.validate(config)
  model = unet.UNetConfig.from_config(config.model)
  if config.data.image_size != model.image_size:
    raise ValueError(
      f"data.image_size={config.data.image_size} differs from model.image_size={model.image_size}"
    )
  if config.data.factor < 1 or config.data.image_size % config.data.factor:
    raise ValueError(
      f"data.factor={config.data.factor} must divide data.image_size={config.data.image_size}"
    )
  if config.diffusion.diffuse == "hr" and config.diffusion.residual_scale != 1.0:
    raise ValueError("diffusion.residual_scale applies only with diffusion.diffuse='residual'")
  if model.conditioning == "none" and config.diffusion.diffuse != "hr":
    raise ValueError(
      "model.conditioning='none' (a base stage) has no LR to form a residual over; "
      "set diffusion.diffuse='hr'"
    )
  if model.num_classes and not config.data.get("label_key"):
    raise ValueError(
      f"model.num_classes={model.num_classes} needs class labels: set data.label_key (e.g. 'label')"
    )
  if not 0.0 <= config.diffusion.get("p_uncond", 0.0) < 1.0:
    raise ValueError(f"diffusion.p_uncond={config.diffusion.p_uncond} must lie in [0, 1)")
  if config.train.get("dropout_rng", "auto") not in DROPOUT_RNGS:
    raise ValueError(
      f"train.dropout_rng={config.train.dropout_rng!r}; choose one of {DROPOUT_RNGS}"
    )
  augment.validate(config)
  processes.validate(config)
  if config.sampling.get("project_consistency") and model.conditioning == "none":
    raise ValueError("sampling.project_consistency needs an LR input; a base stage has none")


# The paper's data (SR3 §4): faces train on FFHQ and are evaluated on CelebA-HQ, each aligned face
# resized whole to the HR size (center_resize of a square image); ImageNet models
# train on ImageNet's train split, resized from the central square, and are evaluated on its
# validation split. Each is a prepared TFDS dataset (data.loader.PREPARE_HOWTO says how to make it).
FACES = dict(
  dataset="ffhq", eval_dataset="celeb_a_hq", eval_split="train", preprocess="center_resize"
)
IMAGENET = dict(
  dataset="imagenet2012", eval_dataset="", eval_split="validation", preprocess="center_resize"
)


# SR3's U-Nets (paper Table A.1), by task; attention at 16×16 and bfloat16 compute are set where used.
SR3_MODELS = {
  "16_128": dict(channels=128, channel_mult=(1, 2, 4, 8, 8), num_res_blocks=3, dropout=0.2),
  "64_256": dict(channels=128, channel_mult=(1, 2, 4, 4, 8, 8), num_res_blocks=3, dropout=0.0),
  "64_512": dict(channels=64, channel_mult=(1, 2, 4, 8, 8, 16, 16), num_res_blocks=3, dropout=0.0),
  "256_1024": dict(
    channels=16, channel_mult=(1, 2, 4, 8, 16, 32, 32, 32), num_res_blocks=2, dropout=0.0
  ),
}


def paper_config(
  arg,
  *,
  hr,
  factor,
  channels,
  channel_mult,
  num_res_blocks,
  dropout,
  data,
  attn_resolutions=(16,),
):
  """SR3 paper model (Table A.1), training recipe and data (`data`: FACES or IMAGENET);
  `runlocal` shrinks it for a laptop CPU and switches the data to the embedded photographs."""
  a = parse_arg(arg, runlocal=False, batch=0)
  c = base_config()
  c.data.update(dict(data, image_size=hr, factor=factor))
  c.model.update(
    dict(
      image_size=hr,
      channels=channels,
      channel_mult=tuple(channel_mult),
      num_res_blocks=num_res_blocks,
      attn_resolutions=tuple(attn_resolutions),
      dropout=dropout,
      num_groups=min(32, channels),
      dtype="bfloat16",
    )
  )
  c.train.batch_size = 256
  if a.runlocal:
    # Same task and factor at a small size: LR of 4 pixels a side, a tiny U-Net on the CPU.
    c.data.update(
      dict(dataset="embedded", eval_dataset="", eval_split="test", preprocess="random_crop")
    )
    c.data.image_size = c.model.image_size = 4 * factor
    c.model.update(
      dict(
        channels=16,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attn_resolutions=(c.data.image_size // 4,),
        num_groups=8,
        dtype="float32",
      )
    )
    c.train.update(dict(batch_size=4, num_steps=20, log_every=5))
    c.optim.warmup_steps = 5
    c.optim.lr = 1e-3
    c.sampling.steps = 10
    c.sampling.schedule.num_steps = 10
  if a.batch:
    c.train.batch_size = a.batch
  return c


def repo_root():
  """The checkout holding experiments/ (the package is installed in development mode)."""
  return pathlib.Path(__file__).resolve().parent.parent


def load(spec: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
  """Loads "path/to/file.py[:arg]" (relative to the cwd or to the checkout) and applies
  dotted overrides such as {"train.num_steps": 10}."""
  path, _, arg = spec.partition(":")
  p = pathlib.Path(path)
  if not p.exists() and (repo_root() / p).exists():
    p = repo_root() / p
  if not p.exists():
    raise FileNotFoundError(
      f"config file {path} not found (looked in the cwd and in {repo_root()})"
    )
  module_spec = importlib.util.spec_from_file_location(f"sr3_config_{p.stem}", p)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  apply_overrides(config, overrides)
  return config


def apply_sampling_overrides(config, overrides: dict | None, command: str) -> None:
  """`--set` overrides for a command that samples a trained model (eval, upscale): only the
  sampling.* fields may change, since the rest describe the checkpoint."""
  for key in overrides or {}:
    if not key.startswith("sampling."):
      raise ValueError(f"--set {key}: {command} may change sampling.* fields only")
  apply_overrides(config, overrides)


def apply_overrides(config, overrides: dict | None) -> None:
  """Dotted overrides such as {"train.num_steps": 10}, in place; an unknown field is a KeyError."""
  for key, value in (overrides or {}).items():
    parent = config
    *head, last = key.split(".")
    for h in head:
      parent = parent[h]
    if last not in parent:
      if head == ["model"] and last in unet.DEPRECATED_CONV_FIELDS:
        raise KeyError(f"config field {key!r} is replaced by model.conv_impl (auto | xla | cpu)")
      raise KeyError(f"config has no field {key!r}")
    parent[last] = value


# ---------------------------------------------------------------------------------------------
# Cascades: one file holds every stage's training config (FILE.py:stage=NAME) and, without a
# stage argument, the cascade config that chains them (`sr3 cascade --config FILE.py`).


def cascade_stage(stages: dict, name: str) -> tuple:
  """A cascade file's stage entry by name; an unknown name is one error listing the stages."""
  if name not in stages:
    raise ValueError(f"stage={name!r}; this cascade has stages {list(stages)}")
  return stages[name]


def stage_config(
  *,
  size: int,
  factor: int,
  dataset: str,
  model: dict,
  runlocal: bool,
  aug_noise: bool,
  blur_prob: float = 0.0,
  num_classes: int = 0,
  preprocess: str = "center_resize",
):
  """A cascade stage's training config: factor 1 is a base stage (no LR input); SR stages above
  the base train with conditioning augmentation when `aug_noise` (CDM)."""
  c = base_config()
  base = factor == 1
  c.data.update(dict(dataset=dataset, image_size=size, factor=factor, preprocess=preprocess))
  c.model.update(
    dict(
      model,
      image_size=size,
      conditioning="none" if base else "concat",
      aug_embedding=aug_noise and not base,
      num_classes=num_classes,
    )
  )
  c.augment.update(dict(noise=aug_noise and not base, blur_prob=0.0 if base else blur_prob))
  if num_classes:
    c.data.label_key = "label"
    c.diffusion.p_uncond = 0.1
  # Cascade stages sample on a cosine log-SNR grid; the training levels stay SR3's p(γ).
  c.sampling.update(dict(sampler="ddpm", steps=100, variance="posterior"))
  c.sampling.schedule.update(
    dict(kind="logsnr", name="cosine", num_steps=100, logsnr_min=-20.0, logsnr_max=20.0)
  )
  c.train.batch_size = 256
  if runlocal:
    c.data.dataset = "embedded"
    if num_classes:
      c.model.num_classes = len(embedded.PHOTOS)
    c.model.update(
      dict(
        channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(),
        num_groups=8,
        dropout=0.0,
        dtype="float32",
      )
    )
    c.train.update(dict(batch_size=4, num_steps=10, log_every=5))
    c.optim.update(dict(lr=1e-3, warmup_steps=5))
    c.sampling.steps = c.sampling.schedule.num_steps = 10
    c.checkpoint.every = 10
  return c


def cascade_entry(
  name: str,
  spec: str,
  *,
  steps: int,
  aug_level: float = 0.0,
  truncated: bool = False,
  guidance: float = 1.0,
  sampler: str = "ddpm",
):
  """One stage of a cascade config: its training config spec and how it samples in the cascade.
  `checkpoint` (a workdir) defaults to WORKDIR/NAME with WORKDIR the cascade's `workdir`, or to
  WORKDIR/JOINT when `joint` names a joint fine-tuning run holding the stage (`use_joint`)."""
  return ml_collections.ConfigDict(
    dict(
      name=name,
      config=spec,
      checkpoint="",
      sampler=sampler,
      steps=steps,
      aug_level=aug_level,
      truncated=truncated,
      guidance=guidance,
      joint="",
    )
  )


def joint_config(
  members: dict,
  *,
  init_root: str,
  weight: float = 1.0,
  sample_steps: int = 4,
  grad: str = "stop",
  shared_noise: bool = False,
  feed: bool = True,
):
  """A joint fine-tuning config for adjacent SR stages (sr3_jax/joint.py): `members` maps stage
  names, lowest first, to their training configs. Data, batch, optimizer, mesh and checkpoints are
  the top stage's (its HR images feed every stage, downsampled); each member keeps its own model,
  diffusion and augmentation in `joint.members`, and starts from INIT_ROOT/NAME."""
  names = list(members)
  c = ml_collections.ConfigDict(members[names[-1]].to_dict())
  c.train.sample_every = 0  # no single sampler: evaluate with `sr3 cascade --propagation`
  c.joint = ml_collections.ConfigDict(
    dict(
      stages=names,
      members={n: members[n].to_dict() for n in names},
      init_root=init_root,
      weight=weight,
      sample_steps=sample_steps,
      sampler="ddim",
      grad=grad,
      shared_noise=shared_noise,
      feed=feed,
    )
  )
  return c


def joint_folder(spec: str) -> str:
  """ "sr32+sr64" → "joint_sr32_sr64": where a cascade's joint run of those stages lives."""
  return "joint_" + "_".join(spec.split("+"))


def use_joint(entries: list, spec: str, train_spec: str) -> None:
  """Points the cascade entries of the stages in `spec` ("sr32+sr64") at their joint run, which
  `sr3 train --config TRAIN_SPEC` makes."""
  names = spec.split("+")
  known = [e.name for e in entries]
  for n in names:
    if n not in known:
      raise ValueError(f"use_joint={spec!r}: this cascade has stages {known}, not {n!r}")
  for e in entries:
    if e.name in names:
      e.joint, e.config = joint_folder(spec), train_spec
