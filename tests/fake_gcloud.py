"""A stand-in for `gcloud compute tpus …`, put on PATH as `gcloud` by tests/test_pods.py.

State lives in $FAKE_GCLOUD_DIR: every call is appended to calls.jsonl; a queued resource is a
file qr/NAME; a node's home is nodes/NAME (with sr3_jax → $FAKE_GCLOUD_REPO, as after setup).
A queued resource answers WAITING_FOR_RESOURCES on its first describe and ACTIVE after. script.json
may hold {"preempt": {"NAME": "PATH"}}: once PATH exists, the next describe of NAME answers
SUSPENDED and SIGTERMs every process started on the node (a spot preemption), once per NAME.
`tpu-vm ssh NAME --command C` runs C with bash in the node's home, as its one worker, with the
environment jax.distributed.initialize() reads on a one-process cluster.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys

STATE = pathlib.Path(os.environ["FAKE_GCLOUD_DIR"])


def fail(msg: str) -> None:
  print(f"ERROR: (gcloud) {msg}", file=sys.stderr)
  sys.exit(1)


def free_port() -> int:
  """A free port in the range JAX's Slurm detection derives from the job id."""
  for port in range(61440 + os.getpid() % 2000, 65536):
    with socket.socket() as s:
      try:
        s.bind(("localhost", port))
        return port
      except OSError:
        continue
  raise RuntimeError("no free port")


def main(args: list[str]) -> None:
  with open(STATE / "calls.jsonl", "a") as f:
    f.write(json.dumps(args) + "\n")
  if args[:2] != ["compute", "tpus"]:
    fail(f"unsupported: {args}")
  script_path = STATE / "script.json"
  script = json.loads(script_path.read_text()) if script_path.exists() else {}
  (STATE / "qr").mkdir(exist_ok=True)
  if args[2] == "queued-resources":
    op, name = args[3], args[4]
    qr = STATE / "qr" / name
    if op == "create":
      if qr.exists():
        fail(f"queued resource {name} already exists")
      qr.write_text(json.dumps({"describes": 0, "state": "WAITING_FOR_RESOURCES"}))
    elif op == "describe":
      if not qr.exists():
        fail(f"NOT_FOUND: queued resource {name}")
      d = json.loads(qr.read_text())
      d["describes"] += 1
      if d["describes"] > 1 and d["state"] == "WAITING_FOR_RESOURCES":
        d["state"] = "ACTIVE"
      marker = STATE / f"preempted-{name}"
      trigger = script.get("preempt", {}).get(name)
      if d["state"] == "ACTIVE" and trigger and os.path.exists(trigger) and not marker.exists():
        marker.touch()
        d["state"] = "SUSPENDED"
        pids = STATE / "nodes" / name / ".pgids"
        for pgid in pids.read_text().split() if pids.exists() else []:
          try:
            os.killpg(int(pgid), signal.SIGTERM)
          except ProcessLookupError:
            pass
      qr.write_text(json.dumps(d))
      print(d["state"])
    elif op == "delete":
      qr.unlink(missing_ok=True)
    else:
      fail(f"unsupported: {args}")
  elif args[2] == "tpu-vm" and args[3] == "ssh":
    name = args[4]
    qr = STATE / "qr" / name
    if not qr.exists() or json.loads(qr.read_text())["state"] != "ACTIVE":
      fail(f"ssh: node {name} is not ready")
    command = args[args.index("--command") + 1]
    home = STATE / "nodes" / name
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "sr3_jax").exists():
      (home / "sr3_jax").symlink_to(os.environ["FAKE_GCLOUD_REPO"])
    env = dict(os.environ, HOME=str(home))
    env.update(
      SLURM_JOB_ID=str(free_port() - 61440),
      SLURM_STEP_NODELIST="localhost",
      SLURM_NTASKS="1",
      SLURM_PROCID="0",
      SLURM_LOCALID="0",
    )
    proc = subprocess.Popen(
      ["bash", "-c", command],
      cwd=home,
      env=env,
      start_new_session=True,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    with open(home / ".pgids", "a") as f:
      f.write(f"{proc.pid}\n")
    out, err = proc.communicate()
    sys.stdout.write(out)
    sys.stderr.write(err)
    sys.exit(proc.returncode)
  else:
    fail(f"unsupported: {args}")


if __name__ == "__main__":
  main(sys.argv[1:])
