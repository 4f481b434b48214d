"""A face cascade 16→32→64→128 (CDM-style): an unconditional 16×16 base and three 2× SR stages.

Each stage trains independently on the same faces resized to its resolution; the SR stages train
with Gaussian conditioning augmentation (level s ~ U(0, 0.5), fed to the U-Net), the two upper
ones also blur half of their LR inputs. At sampling each SR stage sees its input noised to a
fixed level (non-truncated augmentation).

Train a stage:  sr3 train --config experiments/configs/cascade_faces_16_32_64_128.py:stage=sr32 \\
                          --workdir runs/cascade_faces/sr32
Run the cascade: sr3 cascade --config experiments/configs/cascade_faces_16_32_64_128.py --output out
Laptop:          add `runlocal` (…py:stage=sr32,runlocal and …py:runlocal): 8→16→32→64 on the
                 embedded photographs, tiny U-Nets.
Joint fine-tuning of adjacent SR stages (sr3_jax/joint.py), from their trained runs:
                 sr3 train --config …py:joint=sr32+sr64 --workdir runs/cascade_faces/joint_sr32_sr64
                 sr3 cascade --config …py:use_joint=sr32+sr64 --output out
`steps=N` sets every stage's sampling steps (default 100; 10 with runlocal). `augment=False`
(stages and cascade alike) trains the SR stages without conditioning augmentation and samples
them with none, into runs/cascade_faces[_runlocal]_noaug: the control for the CDM finding.
"""

from sr3_jax import configs

PATH = "experiments/configs/cascade_faces_16_32_64_128.py"
# name: (size, factor, model, blur_prob, sampling aug_level)
STAGES = {
  "base16": (
    16,
    1,
    dict(
      channels=128, channel_mult=(1, 2, 2), num_res_blocks=3, attn_resolutions=(8, 4), dropout=0.1
    ),
    0.0,
    0.0,
  ),
  "sr32": (
    32,
    2,
    dict(
      channels=128, channel_mult=(1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(8,), dropout=0.1
    ),
    0.0,
    0.2,
  ),
  "sr64": (
    64,
    2,
    dict(
      channels=128, channel_mult=(1, 2, 3, 4), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1
    ),
    0.5,
    0.1,
  ),
  "sr128": (
    128,
    2,
    dict(
      channels=64,
      channel_mult=(1, 2, 4, 8, 8),
      num_res_blocks=2,
      attn_resolutions=(16,),
      dropout=0.1,
    ),
    0.5,
    0.1,
  ),
}


def get_config(arg=None):
  a = configs.parse_arg(
    arg, runlocal=False, stage="", joint="", use_joint="", steps=0, augment=True
  )
  if a.stage:
    size, factor, model, blur, _ = configs.cascade_stage(STAGES, a.stage)
    if a.runlocal:
      size //= 2
    return configs.stage_config(
      size=size,
      factor=factor,
      dataset="ffhq",
      model=model,
      runlocal=a.runlocal,
      aug_noise=a.augment,
      blur_prob=blur if a.augment else 0.0,
    )
  workdir = "runs/cascade_faces" + ("_runlocal" if a.runlocal else "")
  local = ",runlocal" if a.runlocal else ""
  if not a.augment:
    workdir, local = workdir + "_noaug", local + ",augment=False"
  if a.joint:  # one training run fine-tuning these stages together, from WORKDIR/NAME
    members = {n: get_config(f"stage={n}{local}") for n in a.joint.split("+")}
    return configs.joint_config(members, init_root=workdir)
  c = configs.ml_collections.ConfigDict()
  c.workdir = workdir
  c.stages = [
    configs.cascade_entry(
      name,
      f"{PATH}:stage={name}{local}",
      steps=a.steps or (10 if a.runlocal else 100),
      aug_level=level if a.augment else 0.0,
    )
    for name, (_, _, _, _, level) in STAGES.items()
  ]
  if a.use_joint:
    configs.use_joint(c.stages, a.use_joint, f"{PATH}:joint={a.use_joint}{local}")
  return c
