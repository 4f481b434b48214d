#!/usr/bin/env bash
# TPU VM pod slices for sr3_jax: create, set up, launch `sr3 train` on every worker, follow logs, delete.
#
#   tpu/pod.sh create  --name N --zone Z --type v5p-64 [--spot] [--version V] [--dry-run]
#   tpu/pod.sh setup   --name N --zone Z --repo GIT_URL [--dry-run]
#   tpu/pod.sh launch  --name N --zone Z -- sr3 train --config ... --workdir gs://... [--dry-run]
#   tpu/pod.sh logs    --name N --zone Z [--dry-run]
#   tpu/pod.sh delete  --name N --zone Z [--dry-run]
#
# With --dry-run each gcloud command is printed instead of run. Slices are requested as queued
# resources, so a spot request waits for capacity instead of failing.
set -euo pipefail

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -ge 1 ]] || usage
cmd=$1; shift
name="" zone="" type="" version="v2-alpha-tpuv5" spot="" dry="" repo=""
train_cmd=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --name) name=$2; shift 2 ;;
    --zone) zone=$2; shift 2 ;;
    --type) type=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --repo) repo=$2; shift 2 ;;
    --spot) spot="--spot"; shift ;;
    --dry-run) dry=1; shift ;;
    --) shift; train_cmd=("$@"); break ;;
    *) echo "tpu/pod.sh: unknown argument $1" >&2; usage ;;
  esac
done
[[ -n $name && -n $zone ]] || { echo "tpu/pod.sh: --name and --zone are required" >&2; exit 2; }

run() {  # print, and run unless --dry-run
  printf '%q ' "$@"; echo
  [[ -n $dry ]] || "$@"
}
ssh_all() { run gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$1"; }

case $cmd in
  create)
    [[ -n $type ]] || { echo "tpu/pod.sh create: --type (e.g. v5p-64) is required" >&2; exit 2; }
    run gcloud compute tpus queued-resources create "$name" --node-id "$name" --zone "$zone" \
      --accelerator-type "$type" --runtime-version "$version" ${spot:+$spot}
    ;;
  setup)
    [[ -n $repo ]] || { echo "tpu/pod.sh setup: --repo (the git URL of your sr3_jax checkout) is required" >&2; exit 2; }
    ssh_all "set -e; if [ ! -d sr3_jax ]; then git clone $repo sr3_jax; fi; cd sr3_jax && git pull --ff-only && python3 -m pip install -q -e . 'jax[tpu]'"
    ;;
  launch)
    [[ ${#train_cmd[@]} -gt 0 ]] || { echo "tpu/pod.sh launch: give the command after --" >&2; exit 2; }
    # Every worker runs the same program; jax.distributed.initialize() finds the others on TPU VMs.
    ssh_all "cd sr3_jax && nohup $(printf '%q ' "${train_cmd[@]}") > train.log 2>&1 &"
    ;;
  logs)
    ssh_all "tail -n 50 -f sr3_jax/train.log"
    ;;
  delete)
    run gcloud compute tpus queued-resources delete "$name" --zone "$zone" --force --quiet
    ;;
  *) usage ;;
esac
