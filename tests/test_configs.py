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
