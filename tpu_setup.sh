#!/usr/bin/env bash
# Create a Cloud TPU VM or pod slice, install recog on every worker, run an experiment on all of
# them, follow its log, stop it, delete the TPU. Every gcloud command acts on --worker=all where
# it matters; --dry-run prints the commands instead of running them.
#
#   ./tpu_setup.sh create  --name=recog-pod --accelerator-type=v5litepod-16 --queued
#   ./tpu_setup.sh install --name=recog-pod
#   ./tpu_setup.sh run     --name=recog-pod --experiment=cats_resnet -- --config.num_steps=20000
#   ./tpu_setup.sh logs    --name=recog-pod
#   ./tpu_setup.sh stop    --name=recog-pod     # SIGTERM: recog saves a checkpoint and exits
#   ./tpu_setup.sh delete  --name=recog-pod
#
# The command and its flags come in any order (only what follows `--` is kept apart).
# `install` ships this checkout's HEAD to every worker, installs uv there and, with it, a
# uv-managed Python 3.12 (whatever Python the TPU image ships) in ~/recog-venv, then recog[tpu] with
# the versions CI tests (constraints.txt); `run` starts ~/recog-venv/bin/python on every worker.
#
# Settings come from flags or the environment (flag wins):
#   --project          RECOG_TPU_PROJECT   (default: gcloud's configured project)
#   --zone             RECOG_TPU_ZONE      (default: us-central2-b)
#   --name             RECOG_TPU_NAME      (default: recog-tpu)
#   --accelerator-type RECOG_TPU_TYPE      (default: v4-8; e.g. v4-32, v5litepod-16, v6e-8)
#   --version          RECOG_TPU_VERSION   (TPU software version; default: tpu-ubuntu2204-base)
#   --bucket           RECOG_TPU_BUCKET    (gs://BUCKET: TFDS data in gs://BUCKET/tensorflow_datasets,
#                                           work directories in gs://BUCKET/workdirs/EXPERIMENT)
#   --experiment       RECOG_EXPERIMENT    (default: cats_resnet)
#   --queued           create through a queued resource (needed for most pod slices)
#   --spot             spot (preemptible) capacity
#   --dry-run          print the gcloud commands, run nothing
# Arguments after `--` go to `python -m recog.main` unchanged.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

[[ $# -eq 0 ]] && usage 0

command_name=""
project=${RECOG_TPU_PROJECT:-}
zone=${RECOG_TPU_ZONE:-us-central2-b}
name=${RECOG_TPU_NAME:-recog-tpu}
accelerator_type=${RECOG_TPU_TYPE:-v4-8}
version=${RECOG_TPU_VERSION:-tpu-ubuntu2204-base}
bucket=${RECOG_TPU_BUCKET:-}
experiment=${RECOG_EXPERIMENT:-cats_resnet}
queued=false
spot=false
dry_run=false
train_args=()

# What `install` puts on every worker: uv (pinned), a uv-managed Python and the venv it makes.
uv_version=0.13.9
python_version=3.12
venv=recog-venv  # in each worker's home directory

commands="create install run logs stop delete"
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage 0 ;;
    --project=*) project=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --name=*) name=${1#*=} ;;
    --accelerator-type=*) accelerator_type=${1#*=} ;;
    --version=*) version=${1#*=} ;;
    --bucket=*) bucket=${1#*=} ;;
    --experiment=*) experiment=${1#*=} ;;
    --queued) queued=true ;;
    --spot) spot=true ;;
    --dry-run) dry_run=true ;;
    --) shift; train_args=("$@"); break ;;
    -*) echo "tpu_setup.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *)
      if [[ -n "$command_name" ]]; then
        echo "tpu_setup.sh: one command at a time, got $command_name and $1 (arguments for recog go after --)" >&2
        exit 2
      fi
      command_name=$1
      ;;
  esac
  shift
done

if [[ " $commands " != *" ${command_name:-none} "* ]]; then
  echo "tpu_setup.sh: ${command_name:+unknown command $command_name; }commands: $commands (see --help)" >&2
  exit 2
fi

if [[ -z "$project" && "$dry_run" == false ]]; then
  project=$(gcloud config get-value project 2>/dev/null || true)
fi
if [[ -z "$project" ]]; then
  project=${RECOG_TPU_PROJECT:-YOUR_PROJECT}
  [[ "$dry_run" == true ]] || { echo "tpu_setup.sh: set --project or RECOG_TPU_PROJECT" >&2; exit 2; }
fi

# Runs a command, or prints it under --dry-run, single-quoting arguments so it can be pasted.
run() {
  if [[ "$dry_run" == false ]]; then
    "$@"
    return
  fi
  local arg words=()
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=@,+-]+$ ]]; then
      words+=("$arg")
    else
      words+=("'${arg//\'/\'\\\'\'}'")
    fi
  done
  echo "${words[*]}"
}

location=(--project="$project" --zone="$zone")
on_all_workers=(gcloud compute tpus tpu-vm ssh "$name" "${location[@]}" --worker=all)

case "$command_name" in
  create)
    capacity=()
    [[ "$spot" == true ]] && capacity=(--spot)
    if [[ "$queued" == true ]]; then
      run gcloud compute tpus queued-resources create "$name" "${location[@]}" \
        --node-id="$name" --accelerator-type="$accelerator_type" \
        --runtime-version="$version" "${capacity[@]}"
      echo "# wait until: gcloud compute tpus queued-resources describe $name --zone=$zone shows ACTIVE"
    else
      run gcloud compute tpus tpu-vm create "$name" "${location[@]}" \
        --accelerator-type="$accelerator_type" --version="$version" "${capacity[@]}"
    fi
    ;;
  install)
    # Ship the committed tree (not .venv or work directories) to every worker. There, uv (a static
    # binary, so any image will do) installs a Python of its own and recog[tpu] at CI's versions.
    archive=${TMPDIR:-/tmp}/recog-src.tar.gz
    run git -C "$(dirname "$0")" archive --format=tar.gz --prefix=recog/ -o "$archive" HEAD
    run gcloud compute tpus tpu-vm scp "$archive" "$name:recog-src.tar.gz" "${location[@]}" --worker=all
    uv="\$HOME/.local/bin/uv"
    run "${on_all_workers[@]}" --command="set -o pipefail; rm -rf recog && tar xzf recog-src.tar.gz \
&& curl -LsSf https://astral.sh/uv/$uv_version/install.sh | env UV_UNMANAGED_INSTALL=\$HOME/.local/bin sh -s -- --quiet \
&& $uv venv --clear --managed-python --python $python_version $venv \
&& $uv pip install -q --python $venv/bin/python -c recog/constraints.txt -e './recog[tpu]' \
&& $venv/bin/python -c 'import sys, jax; print(sys.version.split()[0], jax.__version__, jax.process_index(), jax.local_device_count())'"
    ;;
  run)
    [[ -n "$bucket" ]] || { echo "tpu_setup.sh: run needs --bucket=gs://... for data and checkpoints" >&2; exit 2; }
    workdir="$bucket/workdirs/${experiment//:/_}"
    quoted_args=""
    if [[ ${#train_args[@]} -gt 0 ]]; then
      quoted_args=$(printf ' %q' "${train_args[@]}")
    fi
    # Every worker runs the same command; recog joins them with jax.distributed.initialize().
    run "${on_all_workers[@]}" --command="cd recog && TFDS_DATA_DIR=$bucket/tensorflow_datasets \
nohup ~/$venv/bin/python -m recog.main --experiment=$experiment --workdir=$workdir$quoted_args \
> ~/recog.log 2>&1 &"
    echo "# work directory: $workdir   follow it with: $0 logs --name=$name"
    ;;
  logs)
    run gcloud compute tpus tpu-vm ssh "$name" "${location[@]}" --worker=0 --command="tail -n 50 -f ~/recog.log"
    ;;
  stop)
    run "${on_all_workers[@]}" --command="pkill -TERM -f '[r]ecog[.]main' || true"
    ;;
  delete)
    if [[ "$queued" == true ]]; then
      run gcloud compute tpus queued-resources delete "$name" "${location[@]}" --force --quiet
    else
      run gcloud compute tpus tpu-vm delete "$name" "${location[@]}" --quiet
    fi
    ;;
esac
