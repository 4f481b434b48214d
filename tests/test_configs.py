"""Config helpers: argument parsing, loading by path with overrides, validation."""

import pytest

from sr3_jax import configs


def test_parse_arg_types():
  a = configs.parse_arg("runlocal,batch=8", runlocal=False, batch=0)
  assert a.runlocal is True and a.batch == 8
  with pytest.raises(ValueError, match="unknown config argument 'nope'"):
    configs.parse_arg("nope", runlocal=False)


def test_load_with_overrides_and_paper_recipe():
  c = configs.load("experiments/configs/sr3_faces_16_128.py", {"train.num_steps": 7})
  assert c.train.num_steps == 7
  assert (c.optim.name, c.optim.lr, c.optim.warmup_steps) == ("adam", 1e-4, 10_000)
  assert (c.train.batch_size, c.model.dropout, c.diffusion.loss, c.schedule.num_steps) == (
    256,
    0.2,
    "l1",
    2000,
  )
  with pytest.raises(KeyError, match="no field 'train.nope'"):
    configs.load("experiments/configs/demo.py", {"train.nope": 1})
  with pytest.raises(FileNotFoundError, match="missing.py"):
    configs.load("experiments/configs/missing.py")


def test_validate_names_the_field():
  c = configs.load("experiments/configs/demo.py")
  c.data.factor = 5
  with pytest.raises(ValueError, match="data.factor=5"):
    configs.validate(c)
  c = configs.load("experiments/configs/demo.py")
  c.data.image_size = 64
  with pytest.raises(ValueError, match="data.image_size=64"):
    configs.validate(c)


def test_demo_v_is_the_demo_network_as_a_distillation_teacher():
  base, v = (
    configs.load("experiments/configs/demo.py"),
    configs.load("experiments/configs/demo.py:v"),
  )
  assert (v.diffusion.target, v.diffusion.loss) == ("v", "l2")
  assert (v.schedule.kind, v.schedule.name) == ("logsnr", "cosine")
  assert (v.sampling.schedule.kind, v.sampling.schedule.name) == ("logsnr", "cosine")
  # Everything else is the demo's: the same network, data, optimiser and length.
  for block in ("model", "data", "optim", "train", "augment"):
    assert v[block].to_dict() == base[block].to_dict(), block
  assert v.diffusion.diffuse == base.diffusion.diffuse == "residual"
  assert v.sampling.steps == base.sampling.steps


PAPER = {  # config: (train data, eval data, eval split, preprocess, HR size, factor)
  "sr3_faces_16_128": ("ffhq", "celeb_a_hq", "train", "center_resize", 128, 8),
  "sr3_faces_64_256": ("ffhq", "celeb_a_hq", "train", "center_resize", 256, 4),
  "sr3_64_512": ("ffhq", "celeb_a_hq", "train", "center_resize", 512, 8),
  "sr3_256_1024": ("ffhq", "celeb_a_hq", "train", "center_resize", 1024, 4),
  "sr3_imagenet_64_256": ("imagenet2012", "", "validation", "center_resize", 256, 4),
  "cascade_faces_64_256_1024:stage=sr256": ("ffhq", "celeb_a_hq", "train", "center_resize", 256, 4),
  "cascade_faces_64_256_1024:stage=sr1024": (
    "ffhq",
    "celeb_a_hq",
    "train",
    "center_resize",
    1024,
    4,
  ),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_configs_train_on_the_papers_data(name):
  """SR3 §4: faces train on FFHQ and are evaluated on CelebA-HQ; ImageNet 64→256 trains on
  ImageNet's central squares and is evaluated on its validation split. `runlocal` switches to the
  embedded photographs."""
  file, _, arg = name.partition(":")
  c = configs.load(f"experiments/configs/{file}.py" + (f":{arg}" if arg else ""))
  configs.validate(c)
  d = c.data
  got = (d.dataset, d.eval_dataset, d.eval_split, d.preprocess, d.image_size, d.factor)
  assert got == PAPER[name]
  assert (d.train_split, c.model.image_size) == ("train", PAPER[name][4])
  local = configs.load(
    f"experiments/configs/{file}.py:" + ",".join(filter(None, [arg, "runlocal"]))
  )
  configs.validate(local)
  assert (local.data.dataset, local.data.eval_dataset) == ("embedded", "")


def test_face_cascade_chains_64_to_256_to_1024():
  c = configs.load("experiments/configs/cascade_faces_64_256_1024.py")
  stages = [configs.load(s.config) for s in c.stages]
  assert [(s.data.image_size // s.data.factor, s.data.image_size) for s in stages] == [
    (64, 256),
    (256, 1024),
  ]


def test_face_cascade_without_conditioning_augmentation():
  """`augment=False` is the CDM control: SR stages with no noise, blur or aug embedding, sampled
  at level 0, in their own workdir; the default trains and samples with augmentation."""
  path = "experiments/configs/cascade_faces_16_32_64_128.py"
  on, off = configs.load(f"{path}:runlocal"), configs.load(f"{path}:runlocal,augment=False")
  assert off.workdir == on.workdir + "_noaug"
  assert [s.aug_level for s in on.stages] == [0.0, 0.2, 0.1, 0.1]
  assert [s.aug_level for s in off.stages] == [0.0] * 4
  for s_on, s_off in zip(on.stages[1:], off.stages[1:]):
    a, b = configs.load(s_on.config), configs.load(s_off.config)
    assert (a.augment.noise, a.model.aug_embedding) == (True, True)
    assert (b.augment.noise, b.augment.blur_prob, b.model.aug_embedding) == (False, 0.0, False)
    assert b.model.to_dict() | {"aug_embedding": True} == a.model.to_dict()
  assert configs.load(f"{path}:stage=sr128,runlocal").augment.blur_prob == 0.5


def test_a_paper_config_without_its_data_stops_before_compiling(tmp_path):
  from sr3_jax import train

  c = configs.load(
    "experiments/configs/sr3_faces_16_128.py", {"data.data_dir": str(tmp_path / "tfds")}
  )
  with pytest.raises(FileNotFoundError) as e:
    train.train_and_evaluate(c, tmp_path / "run")
  msg = str(e.value)
  assert "'ffhq'" in msg and str(tmp_path / "tfds") in msg and "sr3 prepare --images" in msg
  assert not (tmp_path / "run").exists()  # stopped before writing anything
