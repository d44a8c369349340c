#!/usr/bin/env bash
# Multi-node DDP training of one galmass run under SLURM: srun starts one torchrun per node, torchrun starts one
# training process per GPU (or per CPU slot on a CPU-only node) and they meet by c10d rendezvous on the first node.
#
#   sbatch slurm/train_ddp.sh CONFIG.yaml [--section.key=value ...]
#   sbatch --nodes=2 --ntasks-per-node=4 --gpus-per-node=4 slurm/train_ddp.sh configs/quickstart.yaml \
#          --model.tracer=gas+stars --train.run_dir=runs/gs
#   # CPU-only node (gloo), e.g. the local test cluster of slurm/local_slurm.sh:
#   sbatch --ntasks-per-node=2 --cpus-per-task=1 --gpus-per-node=0 slurm/train_ddp.sh configs/quickstart.yaml
#
# Command-line sbatch options override the #SBATCH lines below. The global batch (train.batch_size) is split
# over nodes × tasks-per-node ranks, so changing the geometry does not change what is computed.
#
# Python: $GALMASS_PYTHON if set, else $SLURM_SUBMIT_DIR/.venv/bin/python (the repository's `make` venv), else the
# .venv of the repository holding this script, else python3 on PATH (slurm/_python.sh). Output: the run directory
# (train.run_dir) and the log slurm-<jobname>-<jobid>.out in the submission directory (appended to across requeues).
# The log is a file, not a terminal (srun without --pty), so training prints plain per-epoch lines and no progress
# bar (no carriage returns).
#
# Checked at job start, before any rank starts: the config and overrides (galmass.config), the geometry (tasks
# split evenly over nodes, one task per GPU) and that the ranks' CPUs fit what the job holds on a node. A request
# that no node of the partition can hold is refused by sbatch itself where slurm.conf has EnforcePartLimits=ALL
# (slurm/local_slurm.sh sets it); elsewhere it may pend with Reason=PartitionConfig: check with `squeue`.
#
# Checkpoint-and-requeue: SLURM sends USR2 to this batch shell (`--signal=B:USR2@180`: 180 s before the time
# limit; SLURM checks every 30–60 s). The trap requeues the job (`--requeue`); the requeued job runs the same
# command, which resumes from the newest checkpoint in train.run_dir (galmass.train); a finished run (done.json) is
# skipped. The requeue ends the old job's steps with SIGTERM: galmass.train then finishes its current step and
# writes a mid-epoch checkpoint (hpc.preempt) if SLURM's KillWait leaves it time; otherwise the newest per-epoch
# checkpoint is used and at most one epoch is redone.
#
#SBATCH --job-name=galmass-train
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --signal=B:USR2@180
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

die() { echo "[train_ddp] error: $*" >&2; exit 2; }

[ $# -ge 1 ] || die "usage: sbatch slurm/train_ddp.sh CONFIG.yaml [--section.key=value ...]"
[ -n "${SLURM_JOB_ID:-}" ] || die "not inside a SLURM job. HINT: submit with sbatch, or use torchrun directly"
CONFIG="$1"; shift
[ -f "$CONFIG" ] || die "config file '$CONFIG' not found (relative paths are relative to $PWD)"

# Shared helpers (slurm/_python.sh). Under sbatch this script runs from a copy in the spool directory: look next to
# the script, next to the submitted script (scontrol's Command=), then in $SLURM_SUBMIT_DIR/slurm.
HELPERS="$(dirname "${BASH_SOURCE[0]}")"
[ -f "$HELPERS/_python.sh" ] || HELPERS="$(dirname "$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null \
                                                     | grep -o ' Command=[^ ]*' | cut -d= -f2 || true)")"
[ -f "$HELPERS/_python.sh" ] || HELPERS="${SLURM_SUBMIT_DIR:-$PWD}/slurm"
[ -f "$HELPERS/_python.sh" ] || die "slurm/_python.sh not found. HINT: submit from the repository root"
# shellcheck source=slurm/_python.sh
source "$HELPERS/_python.sh"
galmass_python "export GALMASS_PYTHON=/path/to/venv/bin/python (with galmass and torch)" galmass torch

# ---- geometry (checked before any rank starts: a wrong one would hang the rendezvous or share GPUs)
NNODES="${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}"
NTASKS="${SLURM_NTASKS:-$NNODES}"
NPROC="${SLURM_NTASKS_PER_NODE:-$((NTASKS / NNODES))}"
NPROC="${NPROC%%(*}"                       # "4(x2)" → 4: homogeneous nodes assumed
CPT="${SLURM_CPUS_PER_TASK:-1}"
GPUS="${SLURM_GPUS_PER_NODE:-0}"
GPUS="${GPUS##*:}"                         # "a100:4" → 4
[ "$((NPROC * NNODES))" -eq "$NTASKS" ] \
  || die "$NTASKS tasks do not split evenly over $NNODES nodes. HINT: use --ntasks-per-node instead of --ntasks"
if [ "$GPUS" -gt 0 ] && [ "$NPROC" -ne "$GPUS" ]; then
  die "$NPROC tasks per node but $GPUS GPUs per node: each training process needs one GPU. HINT: --ntasks-per-node=$GPUS"
fi
galmass_check_cpus "$((NPROC * CPT))" "$NPROC process(es) × $CPT CPU(s)"
# The config and overrides, once, here: a typo should not start (and fail in) every rank.
"$PY" - "$CONFIG" "$@" <<'PYCHECK' || die "the config does not load (message above). HINT: fix the file or override"
import sys
from galmass.config import ConfigError, load_config
try:
    load_config(sys.argv[1], sys.argv[2:])
except ConfigError as err:
    sys.exit(f"[train_ddp] config error: {err}")
PYCHECK

# ---- rendezvous on the first node of the allocation
# sed, not head: head exits after one line and, under pipefail, scontrol's SIGPIPE on a long node list would end
# the script with status 141.
MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)"
# Per job, so two jobs on a node do not collide: 12000 + SLURM_JOB_ID % 20000 (slurm/_python.sh; the same rule as
# hpc.launchers.slurm_master_port).
MASTER_PORT="${MASTER_PORT:-$(galmass_master_port "$SLURM_JOB_ID")}"
export MASTER_ADDR MASTER_PORT
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$CPT}"                  # torchrun would otherwise force 1

requeue() {
  echo "[train_ddp] $(date -u +%FT%TZ) caught USR2: requeueing job $SLURM_JOB_ID (resumes from the last checkpoint)"
  scontrol requeue "$SLURM_JOB_ID"
}
trap requeue USR2
# This script requeues its own job (the trap above); galmass.train must not ask Slurm a second time.
export GALMASS_REQUEUE=0

echo "[train_ddp] $(date -u +%FT%TZ) job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}): $NNODES node(s) × $NPROC" \
     "process(es), $GPUS GPU(s)/node, $CPT CPU(s)/process, rendezvous $MASTER_ADDR:$MASTER_PORT, python $PY"

# One srun task per node (it holds all the node's CPUs of this job); torchrun spawns the NPROC ranks. No --pty:
# the ranks' output goes to the log file, and training sees no terminal (plain lines, no progress bar).
# srun runs in the background so that the USR2 trap runs at once (bash delays traps until a foreground
# command ends).
srun --ntasks="$NNODES" --ntasks-per-node=1 --cpus-per-task="$((NPROC * CPT))" --kill-on-bad-exit=1 \
  "$PY" -m torch.distributed.run \
    --nnodes="$NNODES" --nproc_per_node="$NPROC" \
    --rdzv_id="$SLURM_JOB_ID" --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT" \
    -m galmass.train --config "$CONFIG" "$@" &
SRUN_PID=$!
# `wait` returns early (status > 128) when the trap ran; srun is then still running: keep waiting.
while kill -0 "$SRUN_PID" 2>/dev/null; do wait "$SRUN_PID" || true; done
rc=0
wait "$SRUN_PID" || rc=$?
echo "[train_ddp] $(date -u +%FT%TZ) srun exited with $rc"
exit "$rc"
