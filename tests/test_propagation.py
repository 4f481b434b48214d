"""`sr3 cascade --propagation`: two SR stages fed the truth and fed each other, with and without
augmentation; the chained run is the cascade's own, and its PSNR matches a float64 closed form."""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from sr3_jax import cascade, cli, configs, images, propagation
from sr3_jax.data import degrade
from sr3_jax.metrics import fid, lpips

from cascade_stages import FACES, train_faces_sr  # tests/


@pytest.fixture(scope="module")
def two_stages(tmp_path_factory):
  """The faces cascade's runlocal 8→16 and 16→32 stages, trained 2 steps, and a config of them."""
  root = tmp_path_factory.mktemp("prop_runs")
  train_faces_sr(root)
  spec = root / "two_sr.py"
  spec.write_text(
    "from sr3_jax import configs\n"
    "def get_config(arg=None):\n"
    "  c = configs.ml_collections.ConfigDict()\n"
    f"  c.workdir = '{root}'\n"
    f"  c.stages = [configs.cascade_entry('sr32', '{FACES}:stage=sr32,runlocal', steps=3, aug_level=0.2),\n"
    f"              configs.cascade_entry('sr64', '{FACES}:stage=sr64,runlocal', steps=3, aug_level=0.1)]\n"
    "  return c\n"
  )
  stages = [cascade.stage_from_config(s, str(root)) for s in configs.load(str(spec)).stages]
  return spec, cascade.Cascade(stages)


def test_propagation_against_the_cascade_and_a_closed_form(two_stages, tmp_path):
  _, casc = two_stages
  hr = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
  key = jax.random.key(4)
  u8 = lambda x: [images.to_uint8(i) for i in x]
  inception = fid.Inception()
  fid.save_stats(tmp_path / "hr32.npz", fid.statistics_of(u8(hr), inception))
  extra = propagation.perceptual(
    use_lpips=True, reference_stats={"sr64": str(tmp_path / "hr32.npz")}
  )
  res = propagation.measure(casc, hr, key, augmentation=True, extra=extra)
  assert list(res) == ["sr32", "sr64"] and res["sr32"]["size"] == 16 and res["sr64"]["size"] == 32
  assert res["sr32"]["fed_truth"] == res["sr32"]["fed_cascade"]  # the first stage: one run
  for r in res.values():
    assert r["inherited_psnr"] == pytest.approx(r["fed_truth"]["psnr"] - r["fed_cascade"]["psnr"])
  # the chain is the cascade run from the truth at its input size: the same final images, whose
  # PSNR against the HR images (float64, per image, then the mean) is the report's
  lr = np.asarray(degrade.downsample(hr, 4, (-1.0, 1.0)))
  final = casc.run(key, lr=lr).images[-1].astype(np.float64)
  mse = (((final + 1) / 2 - (hr.astype(np.float64) + 1) / 2) ** 2).mean(axis=(1, 2, 3))
  assert res["sr64"]["fed_cascade"]["psnr"] == pytest.approx(
    np.mean(10 * np.log10(1 / mse)), abs=1e-3
  )

  # Cascade-level consistency: the final images taken down 4× (Pillow's bicubic, per channel in
  # float) against the first stage's input, on the [0, 1] scale.
  def pil_down(img):
    chans = [Image.fromarray(c, "F").resize((8, 8), Image.BICUBIC) for c in img.transpose(2, 0, 1)]
    return np.clip(np.stack([np.asarray(c) for c in chans], -1).astype(np.float64), 0, 1)

  f01 = (final + 1) / 2
  lr01 = (lr.astype(np.float64) + 1) / 2
  ref = np.mean([np.mean((pil_down(f.astype(np.float32)) - l) ** 2) for f, l in zip(f01, lr01)])
  got = res["sr64"]["cascade_consistency"]
  assert got == pytest.approx(ref, rel=0.05)
  # LPIPS and FID of the chained output; 16×16 is below what AlexNet's pooling takes.
  want = np.mean(lpips.LPIPS("alex")(np.clip(f01, 0, 1).astype(np.float32), (hr + 1) / 2))
  assert res["sr64"]["fed_cascade"]["lpips"] == pytest.approx(float(want), abs=1e-5)
  assert res["sr32"]["fed_truth"]["lpips"] is None and "fid" not in res["sr32"]["fed_truth"]
  stats = fid.statistics_of(u8(final.astype(np.float32)), inception)
  mu, cov, _ = fid.load_stats(tmp_path / "hr32.npz")
  want_fid = fid.frechet_distance(*stats.mean_cov(), mu, cov)
  assert res["sr64"]["fed_cascade"]["fid"] == pytest.approx(float(want_fid), rel=1e-4)
  assert res["sr64"]["fed_truth"]["fid"] != res["sr64"]["fed_cascade"]["fid"]
  off = propagation.measure(casc, hr, key, augmentation=False)
  assert off["sr32"]["fed_truth"]["psnr"] != res["sr32"]["fed_truth"]["psnr"]  # inputs not noised
  with pytest.raises(ValueError, match="do not divide by the cascade's total factor 4"):
    propagation.measure(casc, hr[:, :30, :30], key)


def test_cli_writes_the_report(two_stages, tmp_path, capsys):
  spec, _ = two_stages
  out = tmp_path / "prop"
  rc = cli.main(
    ["cascade", "--config", str(spec), "--propagation", "--num-images", "2", "--output", str(out),
     "--lpips"]
  )  # fmt: skip
  assert rc == 0, capsys.readouterr().err
  report = json.loads((out / "propagation.json").read_text())
  assert report["num_images"] == 2 and report["hr_size"] == 32  # the embedded held-out photos
  for key in ("with_augmentation", "without_augmentation"):
    assert set(report[key]) == {"sr32", "sr64"}
  md = (out / "propagation.md").read_text()
  assert "| on | sr64 | 32 | cascade |" in md and "| off | sr32 | 16 | truth |" in md
  assert "| LPIPS | cascade consistency |" in md and "| 16 | truth | " in md
  assert report["with_augmentation"]["sr64"]["fed_truth"]["lpips"] > 0
