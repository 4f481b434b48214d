"""`sr3 export` and the exported sampler: the program's output equals the in-process sampler's,
one file serves several platforms, bad shapes and dtypes get one clear error, `sr3 upscale
--exported` writes what `sr3 upscale --checkpoint` writes, and the README's example runs it with
no sr3_jax or Flax imported."""

import json
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from sr3_jax import cli, export, exported, inference
from sr3_jax.checkpoint import load_for_inference
from sr3_jax.data import embedded


@pytest.fixture(scope="module")
def program(tiny_workdir, tmp_path_factory):
  path = tmp_path_factory.mktemp("export") / "sr.sr3x"
  export.export(str(tiny_workdir), str(path), steps=2, lr_size=(8, 8), batch=4)
  return path


def _lr(batch=4, h=8, w=8, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (batch, h, w, 3)).astype(np.float32)


def test_exported_equals_in_process_sampler(tiny_workdir, program):
  s = exported.ExportedSampler(program)
  assert s.meta["lr_shape"] == [4, 8, 8, 3] and s.meta["hr_shape"] == [4, 32, 32, 3]
  assert s.meta["steps"] == 2 and s.meta["platforms"] == ["cpu"]
  lr = _lr()
  out = s(lr, np.asarray(jax.random.key_data(jax.random.key(7))))
  config, model, params, _ = load_for_inference(str(tiny_workdir))
  sr_fn = inference.make_super_resolve(config, model)
  ref = np.asarray(sr_fn(params, lr, inference.inference_grid(config, 2), jax.random.key(7)))
  assert out.shape == (4, 32, 32, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out, ref, atol=1e-5)
  other = s(lr, np.asarray(jax.random.key_data(jax.random.key(8))))
  assert np.abs(other - out).max() > 1e-3  # the seed matters


def test_one_file_for_several_platforms_and_bfloat16(tiny_workdir, program, tmp_path):
  path = tmp_path / "multi.sr3x"
  meta = export.export(
    str(tiny_workdir), str(path), steps=2, lr_size=(8, 8), batch=4, dtype="bfloat16",
    platforms=("cpu", "cuda", "tpu"),
  )  # fmt: skip
  assert meta["platforms"] == ["cpu", "cuda", "tpu"] and meta["conv_impl"] == "xla"
  s = exported.ExportedSampler(path)
  assert tuple(s.program.platforms) == ("cpu", "cuda", "tpu")
  kd = np.asarray(jax.random.key_data(jax.random.key(0)))
  lr = _lr()
  bf16, f32 = s(lr, kd), exported.ExportedSampler(program)(lr, kd)
  assert np.isfinite(bf16).all() and np.abs(bf16 - f32).mean() < 0.05


def test_wrong_inputs_get_one_clear_error(tiny_workdir, program, tmp_path, capsys):
  s = exported.ExportedSampler(program)
  kd = np.asarray(jax.random.key_data(jax.random.key(0)))
  with pytest.raises(
    ValueError, match=r"takes LR batches of shape \(4, 8, 8, 3\) float32.*got \(4, 8, 12, 3\)"
  ):
    s(_lr(w=12), kd)
  with pytest.raises(ValueError, match=r"got \(4, 8, 8, 3\) float64"):
    s(_lr().astype(np.float64), kd)
  with pytest.raises(ValueError, match="key_data"):
    s(_lr(), np.zeros(3, np.uint32))
  bad = tmp_path / "bad.sr3x"
  bad.write_bytes(b"not an export")
  with pytest.raises(ValueError, match="is not an sr3 export"):
    exported.ExportedSampler(bad)
  # a size the U-Net cannot take, a malformed size, an unknown platform
  assert (
    cli.main(
      [
        "export",
        "--checkpoint",
        str(tiny_workdir),
        "--lr-size",
        "0,8",
        "--output",
        str(tmp_path / "x"),
      ]
    )
    == 2
  )
  assert (
    "--lr-size 0,8: the U-Net takes HR sizes that are multiples of 4" in capsys.readouterr().err
  )
  assert (
    cli.main(
      [
        "export",
        "--checkpoint",
        str(tiny_workdir),
        "--lr-size",
        "8",
        "--output",
        str(tmp_path / "x"),
      ]
    )
    == 2
  )
  assert "write HEIGHT,WIDTH" in capsys.readouterr().err
  assert (
    cli.main(
      [
        "export",
        "--checkpoint",
        str(tiny_workdir),
        "--lr-size",
        "8,8",
        "--platforms",
        "gpu",
        "--output",
        str(tmp_path / "x"),
      ]
    )
    == 2
  )
  assert "--platforms gpu" in capsys.readouterr().err
  assert not (tmp_path / "x").exists()


def test_upscale_exported_matches_checkpoint(tiny_workdir, program, tmp_path, capsys):
  lr = tmp_path / "lr"
  lr.mkdir()
  photo = embedded.load_photo("coffee")
  Image.fromarray(photo[40:60, 100:120]).save(lr / "cup.png")  # 20×20: 8×8 tiles either way
  Image.fromarray(photo[0:5, 0:6]).save(lr / "tiny.png")  # smaller than a tile: padded up
  common = ["--input", str(lr), "--samples", "2", "--overlap", "2", "--seed", "3"]
  assert (
    cli.main(["upscale", "--exported", str(program), "--output", str(tmp_path / "a")] + common) == 0
  )
  assert cli.main(
    ["upscale", "--checkpoint", str(tiny_workdir), "--output", str(tmp_path / "b"), "--steps", "2",
     "--tile", "8", "--batch", "4"] + common
  ) == 0  # fmt: skip
  report = json.loads((tmp_path / "a" / "upscale.json").read_text())
  assert report["exported"] and report["steps"] == 2 and report["batch"] == 4
  for name in ("cup_sample0", "cup_sample1", "cup_mean"):  # the same 8×8 tiles: the same images
    a = np.asarray(Image.open(tmp_path / "a" / f"{name}.png"), np.int16)
    b = np.asarray(Image.open(tmp_path / "b" / f"{name}.png"), np.int16)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1, name
  # an image smaller than the export's tile is padded up to it and cropped back
  with Image.open(tmp_path / "a" / "tiny_mean.png") as im:
    assert im.size == (24, 20)
  capsys.readouterr()
  assert (
    cli.main(
      ["upscale", "--exported", str(program), "--output", str(tmp_path / "c"), "--steps", "5"]
      + common
    )
    == 2
  )
  err = capsys.readouterr().err
  assert "--steps 5: " in err and "was exported with --steps 2" in err, err
  assert cli.main(["upscale", "--output", str(tmp_path / "d")] + common) == 2
  assert "give --checkpoint RUN or --exported FILE" in capsys.readouterr().err


def test_readme_example_runs_with_jax_alone(program, tmp_path):
  readme = open("README.md").read()
  code = re.search(r"<!-- exported-example -->\s*```python\n(.*?)```", readme, re.S).group(1)
  assert len(code.strip().splitlines()) <= 20
  shutil.copy(program, tmp_path / "sr3_x4.sr3x")
  Image.fromarray(embedded.load_photo("chelsea")[:40, :40]).save(tmp_path / "lr.png")
  check = "\nimport sys\nassert not [m for m in sys.modules if m.split('.')[0] in ('sr3_jax', 'flax', 'optax', 'orbax')]\n"
  proc = subprocess.run(
    [sys.executable, "-c", code + check], cwd=tmp_path, capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  with Image.open(tmp_path / "sr.png") as im:
    assert im.size == (32, 32)
