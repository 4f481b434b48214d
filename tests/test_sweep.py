"""`sr3 sweep` on a two-run tiny sweep: runs, table, plot, skipping finished runs; printed commands;
`sr3 tune-schedule` ranks candidate inference schedules."""

import csv
import json

import pytest

from sr3_jax import cli, sweep, tune

SWEEP = """
from sr3_jax import sweep


def get_sweep(arg=None):
  runs = sweep.product(**{"diffusion.loss": ["l1", "l2"]})
  for r in runs:
    r.update({"train.num_steps": 2, "train.batch_size": 4, "train.log_every": 1})
  return sweep.Sweep(config="experiments/configs/demo.py:runlocal", runs=runs,
                     eval=dict(num_images=1, samples=2, steps=2))
"""


def test_sweep_runs_tabulates_plots_and_skips_finished(tmp_path, capsys):
  spec = tmp_path / "tiny_sweep.py"
  spec.write_text(SWEEP)
  root = tmp_path / "runs"
  assert cli.main(["sweep", "--sweep", str(spec), "--workdir", str(root), "--local"]) == 0
  rows = list(csv.DictReader(open(root / "results.csv")))
  names = [
    "loss=l1,num_steps=2,batch_size=4,log_every=1",
    "loss=l2,num_steps=2,batch_size=4,log_every=1",
  ]
  assert [r["run"] for r in rows] == names
  assert all(
    r["status"] == "done" and float(r["psnr_bicubic"]) > 15 and r["psnr_mean_of_k"] for r in rows
  )
  assert json.loads(rows[1]["overrides"])["diffusion.loss"] == "l2"
  assert (root / "results.md").read_text().count("| done |") == 2
  assert (root / "curves.png").stat().st_size > 1000
  mtimes = [(root / n / "eval.json").stat().st_mtime for n in names]
  capsys.readouterr()
  assert cli.main(["sweep", "--sweep", str(spec), "--workdir", str(root)]) == 0
  assert capsys.readouterr().err.count("is done; skipped") == 2
  assert [(root / n / "eval.json").stat().st_mtime for n in names] == mtimes
  assert cli.main(["sweep", "--sweep", str(spec), "--workdir", str(root), "--dry-run"]) == 0
  assert capsys.readouterr().out.count("\tdone\t") == 2


@pytest.mark.parametrize("name", ["schedule_family", "conditioning", "loss", "parameterization"])
def test_shipped_sweeps_expand_into_valid_configs(name, capsys):
  from sr3_jax import configs

  s = sweep.load(f"experiments/sweeps/{name}.py:runlocal")
  assert len(s.runs) >= 2
  for run in s.runs:
    configs.validate(configs.load(s.config, {k: v for k, v in run.items() if k != "_name"}))
  assert (
    cli.main(
      [
        "sweep",
        "--sweep",
        f"experiments/sweeps/{name}.py",
        "--workdir",
        "gs://b/sweep",
        "--print-commands",
        "--tpu",
        "sr3",
        "--zone",
        "us-central2-b",
      ]
    )
    == 0
  )
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 2 * len(s.runs)
  assert lines[0].startswith(
    "tpu/pod.sh launch --name sr3 --zone us-central2-b -- sr3 train --config"
  )
  assert all(l.startswith("sr3 eval --checkpoint gs://b/sweep/") for l in lines[1::2])


def test_tune_schedule_ranks_candidates(tiny_workdir, tmp_path, capsys):
  assert tune.parse_grid("family=linear,logsnr_cosine;steps=2,3") == [
    {"family": "linear", "steps": 2},
    {"family": "linear", "steps": 3},
    {"family": "logsnr_cosine", "steps": 2},
    {"family": "logsnr_cosine", "steps": 3},
  ]
  rc = cli.main(
    [
      "tune-schedule",
      "--checkpoint",
      str(tiny_workdir),
      "--grid",
      "family=linear,logsnr_cosine;steps=2;end=0.1,0.3",
      "--num-images",
      "1",
      "--samples",
      "2",
      "--metric",
      "consistency",
      "--output",
      str(tmp_path),
    ]
  )
  assert rc == 0, capsys.readouterr().err
  r = json.loads((tmp_path / "tune.json").read_text())
  ranked = r["ranked"]
  assert len(ranked) == 3  # the β range does not apply to the log-SNR family: one candidate
  assert [x["consistency"] for x in ranked] == sorted(x["consistency"] for x in ranked)
  assert (tmp_path / "tune.md").read_text().count("\n| ") == 4
  with pytest.raises(ValueError, match="unknown"):
    tune.parse_grid("colour=red")


def test_tune_schedule_by_fid(tiny_workdir, tmp_path, capsys):
  """SR3 chose its inference schedule by FID: candidates ranked by the FID of one sample per
  image against the HR crops, lowest first."""
  rc = cli.main(
    ["tune-schedule", "--checkpoint", str(tiny_workdir), "--grid", "family=linear;steps=2,3"]
    + ["--num-images", "2", "--samples", "1", "--metric", "fid", "--output", str(tmp_path)]
  )
  assert rc == 0, capsys.readouterr().err
  ranked = json.loads((tmp_path / "tune.json").read_text())["ranked"]
  assert len(ranked) == 2 and ranked[0]["fid"] <= ranked[1]["fid"]
  assert "FID (one sample)" in (tmp_path / "tune.md").read_text()
