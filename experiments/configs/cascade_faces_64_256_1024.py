"""SR3's face cascade 64→256→1024: two 4× stages from given 64×64 faces (SR3 §4.3).

- sr256: faces 64→256 (the 64→256 U-Net of paper Table A.1), with conditioning augmentation;
- sr1024: faces 256→1024 (Table A.1's 256→1024 U-Net), with conditioning augmentation.

Both train on FFHQ and are evaluated on CelebA-HQ, each prepared with `sr3 prepare` (see
experiments/configs/sr3_faces_64_256.py). The cascade has no base stage: it starts from 64×64
faces given with --input.
Train a stage:   sr3 train --config experiments/configs/cascade_faces_64_256_1024.py:stage=sr256 \\
                           --workdir runs/cascade_faces_1024/sr256
Run the cascade: sr3 cascade --config experiments/configs/cascade_faces_64_256_1024.py --output out --input LR64_DIR
Laptop:          add `runlocal`: 8→32→128 on the embedded photographs.
"""

from sr3_jax import configs

PATH = "experiments/configs/cascade_faces_64_256_1024.py"
SR256 = dict(configs.SR3_MODELS["64_256"], attn_resolutions=(16,), dtype="bfloat16")
SR1024 = dict(
  configs.SR3_MODELS["256_1024"], attn_resolutions=(16,), num_groups=16, dtype="bfloat16"
)
# name: (size, factor, model, sampling aug_level)
STAGES = {"sr256": (256, 4, SR256, 0.1), "sr1024": (1024, 4, SR1024, 0.1)}


def get_config(arg=None):
  a = configs.parse_arg(arg, runlocal=False, stage="")
  if a.stage:
    size, factor, model, _ = configs.cascade_stage(STAGES, a.stage)
    if a.runlocal:
      size //= 8
    c = configs.stage_config(
      size=size,
      factor=factor,
      dataset=configs.FACES["dataset"],
      model=model,
      runlocal=a.runlocal,
      aug_noise=True,
      preprocess=configs.FACES["preprocess"],
    )
    if not a.runlocal:
      c.data.update(
        dict(eval_dataset=configs.FACES["eval_dataset"], eval_split=configs.FACES["eval_split"])
      )
    return c
  c = configs.ml_collections.ConfigDict()
  c.workdir = "runs/cascade_faces_1024" + ("_runlocal" if a.runlocal else "")
  local = ",runlocal" if a.runlocal else ""
  c.stages = [
    configs.cascade_entry(
      name, f"{PATH}:stage={name}{local}", steps=10 if a.runlocal else 100, aug_level=level
    )
    for name, (_, _, _, level) in STAGES.items()
  ]
  return c
