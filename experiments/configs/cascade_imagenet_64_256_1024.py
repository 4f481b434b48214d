"""ImageNet cascade 64→256→1024: SR3's two 4× stages above a class-conditional 64×64 base (CDM).

- base64: class-conditional (1000 classes, 10% of labels dropped to the null class in training),
  sampled with classifier-free guidance;
- sr256: SR3's ImageNet 64→256 U-Net (Table A.1), trained with Gaussian conditioning augmentation;
- sr1024: SR3's 256→1024 U-Net, with conditioning augmentation and blur on half of its inputs.

SR3 itself starts from given 64×64 images: `sr3 cascade … --input LR_DIR` skips the base.
Train a stage:  sr3 train --config experiments/configs/cascade_imagenet_64_256_1024.py:stage=sr256 \\
                          --workdir runs/cascade_imagenet/sr256
Run the cascade: sr3 cascade --config experiments/configs/cascade_imagenet_64_256_1024.py --output out --class 207
Laptop:          add `runlocal`: 8→32→128 on the embedded photographs (classes: which photograph).
"""

from sr3_jax import configs

PATH = "experiments/configs/cascade_imagenet_64_256_1024.py"
SR256 = dict(configs.SR3_MODELS["64_256"], attn_resolutions=(16,), dtype="bfloat16")
SR1024 = dict(
  configs.SR3_MODELS["256_1024"], attn_resolutions=(16,), num_groups=16, dtype="bfloat16"
)
BASE64 = dict(
  channels=192,
  channel_mult=(1, 2, 3, 4),
  num_res_blocks=3,
  attn_resolutions=(32, 16, 8),
  dropout=0.1,
  dtype="bfloat16",
)
# name: (size, factor, model, blur_prob, sampling aug_level)
STAGES = {
  "base64": (64, 1, BASE64, 0.0, 0.0),
  "sr256": (256, 4, SR256, 0.0, 0.1),
  "sr1024": (1024, 4, SR1024, 0.5, 0.1),
}


def get_config(arg=None):
  a = configs.parse_arg(arg, runlocal=False, stage="", guidance=2.0)
  if a.stage:
    size, factor, model, blur, _ = configs.cascade_stage(STAGES, a.stage)
    if a.runlocal:
      size //= 8
    c = configs.stage_config(
      size=size,
      factor=factor,
      dataset="imagenet2012",
      model=model,
      runlocal=a.runlocal,
      aug_noise=True,
      blur_prob=blur,
      num_classes=1000 if factor == 1 else 0,
    )
    c.sampling.guidance = a.guidance
    return c
  c = configs.ml_collections.ConfigDict()
  c.workdir = "runs/cascade_imagenet" + ("_runlocal" if a.runlocal else "")
  local = ",runlocal" if a.runlocal else ""
  c.stages = [
    configs.cascade_entry(
      name,
      f"{PATH}:stage={name}{local}",
      steps=10 if a.runlocal else 100,
      aug_level=level,
      guidance=a.guidance if factor == 1 else 1.0,
    )
    for name, (_, factor, _, _, level) in STAGES.items()
  ]
  return c
