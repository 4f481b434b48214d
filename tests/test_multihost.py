"""Two processes on localhost form one JAX runtime (jax.distributed, CPU collectives), train, checkpoint, resume."""

import socket
import subprocess
import sys


def free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def launch(workdir, steps):
  port = free_port()
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        "-m",
        "sr3_jax",
        "train",
        "--config",
        "experiments/configs/demo.py:runlocal",
        "--workdir",
        str(workdir),
        f"--coordinator=localhost:{port}",
        "--num_processes=2",
        f"--process_id={i}",
        f"--config.train.num_steps={steps}",
        "--config.train.batch_size=4",
        "--config.train.log_every=1",
        "--config.checkpoint.every=2",
      ],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return [err for _, err in outs]


def test_two_processes_train_checkpoint_and_resume(tmp_path):
  work = tmp_path / "run"
  launch(work, 4)
  steps = sorted(int(d.name) for d in (work / "checkpoints").iterdir() if d.name.isdigit())
  assert steps[-1] == 4
  assert (
    len((work / "metrics.jsonl").read_text().splitlines()) == 4
  )  # process 0 writes, once per step
  errs = launch(work, 6)
  assert all(f"resumed {work} from step 4" in e for e in errs)
  assert len((work / "metrics.jsonl").read_text().splitlines()) == 6
