"""`sr3 upscale`: tiling round-trips exactly; real files of odd sizes, gray, RGBA and a corrupt one."""

import json

import numpy as np
import pytest
from PIL import Image

from sr3_jax import cli, images, upscale
from sr3_jax.data import embedded


@pytest.mark.parametrize(
  "h,w,tile,overlap,multiple",
  [(5, 7, 16, 4, 4), (37, 20, 16, 4, 1), (33, 50, 12, 3, 2), (16, 16, 16, 0, 8), (40, 9, 8, 7, 1)],
)
def test_tiles_blend_back_to_the_whole_image(h, w, tile, overlap, multiple):
  """Any per-pixel upscaler applied tile by tile and blended equals it applied to the whole image."""
  x = np.random.default_rng(0).normal(size=(h, w, 3))
  th, tw, ph, pw = upscale.plan(h, w, tile, multiple, overlap)
  assert (
    th % multiple == 0
    and tw % multiple == 0
    and th <= max(tile, multiple)
    and tw <= max(tile, multiple)
  )
  padded = np.pad(x, ((0, ph - h), (0, pw - w), (0, 0)), mode="symmetric")
  tiles, pos = upscale.split_tiles(padded, th, tw, overlap)
  assert tiles.shape[1:] == (th, tw, 3)
  full = len(upscale.tile_starts(ph, tile, overlap)) * len(upscale.tile_starts(pw, tile, overlap))
  assert len(pos) <= max(full, 1)  # balanced tiles: never more tiles than full-length ones
  nearest = lambda a, s=3: np.repeat(np.repeat(a, s, axis=-3), s, axis=-2)
  out = upscale.blend_tiles(nearest(tiles), pos, ph, pw, 3, overlap)[: h * 3, : w * 3]
  np.testing.assert_allclose(out, nearest(x), atol=1e-12)


def test_tile_starts_cover_with_overlap():
  for n, tile, ov in [(100, 16, 4), (17, 16, 4), (16, 16, 4), (64, 8, 0)]:
    s = upscale.tile_starts(n, tile, ov)
    assert s[0] == 0 and s[-1] + tile == max(n, tile)
    assert all(b - a <= tile - ov for a, b in zip(s, s[1:]))  # neighbours share ≥ ov pixels
  assert upscale.tile_length(100, 64, 8, 1) == 54 and upscale.tile_length(75, 64, 8, 4) == 44
  assert upscale.ramp(10, 3).min() > 0 and upscale.ramp(10, 0).tolist() == [1.0] * 10


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  d = tmp_path_factory.mktemp("lr")
  photo = embedded.load_photo("chelsea")
  Image.fromarray(photo[100:121, 200:213]).save(d / "cat.png")  # 13×21, tiled at --tile 8
  Image.fromarray(photo[50:59, 80:90]).convert("L").save(d / "gray.jpg")  # 10×9 grayscale
  rgba = Image.fromarray(photo[0:12, 0:12]).convert("RGBA")
  rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 12).astype(np.uint8), (12, 1))))
  rgba.save(d / "logo.png")
  (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
  return d


def test_upscale_folder_with_samples(tiny_workdir, inputs, tmp_path, capsys):
  out = tmp_path / "sr"
  rc = cli.main(
    [
      "upscale",
      "--checkpoint",
      str(tiny_workdir),
      "--input",
      str(inputs),
      "--output",
      str(out),
      "--samples",
      "2",
      "--steps",
      "2",
      "--tile",
      "8",
      "--overlap",
      "2",
      "--batch",
      "4",
    ]
  )
  captured = capsys.readouterr()
  assert rc == 1  # one file failed …
  assert "broken.png: not a readable image" in captured.err
  assert captured.out.strip().splitlines()[-1] == str(out)
  report = json.loads((out / "upscale.json").read_text())
  assert report["failed"] == 1 and report["samples"] == 2 and report["factor"] == 4
  by_name = {e["input"].rsplit("/", 1)[-1]: e for e in report["files"]}
  assert "broken.png" in by_name["broken.png"]["error"]
  # … and every other file was written, at 4× its size, in its own mode.
  for name, stem, (w, h), mode in [
    ("cat.png", "cat", (13, 21), "RGB"),
    ("gray.jpg", "gray", (10, 9), "L"),
    ("logo.png", "logo", (12, 12), "RGBA"),
  ]:
    assert by_name[name]["hr_size"] == [4 * w, 4 * h]
    for suffix in ("_sample0", "_sample1", "_mean"):
      with Image.open(out / f"{stem}{suffix}.png") as im:
        assert im.size == (4 * w, 4 * h) and im.mode == mode, (name, suffix, im.mode)
    with Image.open(out / f"{stem}_std.png") as im:
      assert im.size == (4 * w, 4 * h) and im.mode == "RGB"
    assert by_name[name]["std_max"] > 0  # two different samples
  s0, s1, mean = (
    np.asarray(Image.open(out / f"cat{s}.png"), np.float64)
    for s in ("_sample0", "_sample1", "_mean")
  )
  assert np.abs(mean - (s0 + s1) / 2).max() <= 1.0  # the mean of the two (up to uint8 rounding)
  with Image.open(out / "logo_mean.png") as im:  # the alpha ramp survives the upscale
    alpha = np.asarray(im.getchannel("A"), np.float64)
  assert alpha[:, 0].mean() < 30 and alpha[:, -1].mean() > 225


def test_upscale_single_file_and_bad_paths(tiny_workdir, inputs, tmp_path, capsys):
  rc = cli.main(
    [
      "upscale",
      "--checkpoint",
      str(tiny_workdir),
      "--input",
      str(inputs / "gray.jpg"),
      "--output",
      str(tmp_path / "one"),
      "--steps",
      "2",
    ]
  )
  assert rc == 0
  with Image.open(tmp_path / "one" / "gray.png") as im:
    assert im.size == (40, 36) and im.mode == "L"
  (tmp_path / "empty").mkdir()
  assert (
    cli.main(
      [
        "upscale",
        "--checkpoint",
        str(tiny_workdir),
        "--input",
        str(tmp_path / "empty"),
        "--output",
        str(tmp_path / "x"),
      ]
    )
    == 2
  )
  assert "holds no files" in capsys.readouterr().err
  assert (
    cli.main(
      [
        "upscale",
        "--checkpoint",
        str(tmp_path),
        "--input",
        str(inputs),
        "--output",
        str(tmp_path / "x"),
      ]
    )
    == 2
  )
  assert "neither a workdir" in capsys.readouterr().err


def test_set_changes_how_upscale_samples(tiny_workdir, inputs, tmp_path, capsys):
  """`--set sampling.KEY=VALUE` reaches the sampler's config and the report; fields outside
  sampling.* describe the checkpoint and are refused, as are fields that do not exist."""
  up = upscale.Upscaler(str(tiny_workdir), sampler="ddim", overrides={"sampling.eta": 1.0})
  assert up.config.sampling.eta == 1.0 and up.config.sampling.sampler == "ddim"
  assert upscale.Upscaler(str(tiny_workdir)).config.sampling.eta == 0.0  # the run's own
  base = ["upscale", "--checkpoint", str(tiny_workdir), "--input", str(inputs / "gray.jpg")]
  base += ["--steps", "2"]
  out = tmp_path / "ddim1"
  assert (
    cli.main([*base, "--output", str(out), "--sampler", "ddim", "--set", "sampling.eta=1"]) == 0
  )
  with Image.open(out / "gray.png") as im:
    assert im.size == (40, 36)
  report = json.loads((out / "upscale.json").read_text())
  assert report["overrides"] == {"sampling.eta": 1} and report["sampler"] == "ddim"
  for bad, message in (
    ("model.channels=8", "--set model.channels: upscale may change sampling.* fields only"),
    ("sampling.nope=1", "sampling.nope"),
  ):
    assert cli.main([*base, "--output", str(tmp_path / "bad"), "--set", bad]) == 2
    assert message in capsys.readouterr().err


def test_load_image_modes(tmp_path):
  Image.fromarray(np.full((4, 5), 40000, np.uint16)).save(tmp_path / "deep.png")  # 16-bit gray
  img = images.load_image(tmp_path / "deep.png")
  assert (
    img.gray
    and img.rgb.shape == (4, 5, 3)
    and abs(int(img.rgb[0, 0, 0]) - round(40000 / 65535 * 255)) <= 1
  )
  (tmp_path / "text.txt").write_text("hello")
  with pytest.raises(images.ImageReadError, match="text.txt: not a readable image"):
    images.load_image(tmp_path / "text.txt")


def test_adaptive_steps_per_tile(tiny_workdir, inputs, tmp_path, capsys):
  """--adaptive: with nothing refined the image is the mean of the probes, exactly the plain
  upscale with that many samples and steps; refined tiles are the most uncertain ones and each
  costs the full steps more; bad values are named before anything samples."""
  cat = np.asarray(Image.open(inputs / "cat.png"))
  up = upscale.Upscaler(str(tiny_workdir), steps=3, samples=1, batch=4, tile=8, overlap=2)
  none, info0 = up.adaptive(cat, 0, probe_steps=1, probes=2, fraction=0.0)
  plain = upscale.Upscaler(str(tiny_workdir), steps=1, samples=2, batch=4, tile=8, overlap=2)
  np.testing.assert_allclose(none, plain(cat, 0).mean(axis=0), atol=1e-6)
  assert info0["refined"] == [] and info0["network_evaluations"] == 2 * info0["tiles"]
  half, info = up.adaptive(cat, 0, probe_steps=1, probes=2, fraction=0.5)
  n = info["tiles"]
  u = np.asarray(info["uncertainty"])
  assert len(info["refined"]) == round(0.5 * n)
  assert set(info["refined"]) == set(np.argsort(-u, kind="stable")[: round(0.5 * n)])
  assert info["steps_per_tile"] == [2 + 3 * (i in info["refined"]) for i in range(n)]
  assert np.abs(half - none).max() > 1e-3  # refined tiles were re-sampled at 3 steps
  out = tmp_path / "ad"
  argv = ["upscale", "--checkpoint", str(tiny_workdir), "--input", str(inputs / "cat.png")]
  argv += ["--output", str(out), "--tile", "8", "--overlap", "2", "--steps", "3", "--adaptive"]
  assert cli.main(argv + ["--probe-steps", "1", "--threshold", "0"]) == 0
  entry = json.loads((out / "upscale.json").read_text())["files"][0]["adaptive"]
  assert entry["refined"] == list(range(entry["tiles"]))  # every std exceeds 0
  with Image.open(out / "cat.png") as im:
    assert im.size == (4 * 13, 4 * 21)
  for bad, says in (
    (["--probes", "1", "--refine-fraction", "0.5"], "at least 2 probe samples"),
    (["--refine-fraction", "1.5"], "must be in [0, 1]"),
    (["--threshold", "0.1", "--refine-fraction", "0.5"], "one of --threshold T or"),
  ):
    assert cli.main(argv + bad) == 2
    assert says in capsys.readouterr().err
