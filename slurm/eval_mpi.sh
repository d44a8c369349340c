#!/usr/bin/env bash
# MPI evaluation of a trained run under SLURM: N ranks split the test projections by global batch, rank 0 gathers
# them (mpi4py) and writes metrics.json identical to a single-process `galmass evaluate`.
#
#   sbatch slurm/eval_mpi.sh RUN_DIR [galmass evaluate options: --data DIR --split test --out DIR --samples N]
#   sbatch --ntasks=8 slurm/eval_mpi.sh runs/quickstart/gas_stars
#
# Ranks are started with the mpiexec of the MPI that mpi4py was built against: $GALMASS_MPIEXEC if set, else the
# `mpiexec` next to the Python (the `mpich` wheel of `pip install galmass[mpi]` puts it in the venv's bin/; its
# Hydra launcher starts remote ranks through SLURM by itself). On sites whose mpi4py uses the system MPI, set
# GALMASS_MPIEXEC="srun --mpi=pmix" (or pmi2).
#
# Python: $GALMASS_PYTHON, else $SLURM_SUBMIT_DIR/.venv/bin/python, else the .venv of the repository holding this
# script, else python3 (slurm/_python.sh). Output: RUN_DIR/eval-SPLIT/ (metrics.json, residuals.npz) and the log
# slurm-<jobname>-<jobid>.out in the submission directory.
#
# Checked at job start: the run directory holds a trained model (best.pt), the Python imports galmass and mpi4py,
# an mpiexec exists. More ranks than a partition's CPUs are refused by sbatch itself where slurm.conf has
# EnforcePartLimits=ALL (slurm/local_slurm.sh sets it); elsewhere such a job may pend with Reason=PartitionConfig.
#
#SBATCH --job-name=galmass-eval
#SBATCH --ntasks=4
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

die() { echo "[eval_mpi] error: $*" >&2; exit 2; }
[ $# -ge 1 ] || die "usage: sbatch slurm/eval_mpi.sh RUN_DIR [--data DIR] [--split test] [--out DIR] [--samples N]"
RUN="$1"; shift
[ -d "$RUN" ] || die "run directory '$RUN' not found (relative paths are relative to $PWD)"
[ -f "$RUN/best.pt" ] || die "'$RUN' holds no trained model (best.pt). HINT: train it first (slurm/train_ddp.sh)"

# Shared helpers (slurm/_python.sh). Under sbatch this script runs from a copy in the spool directory: look next to
# the script, next to the submitted script (scontrol's Command=), then in $SLURM_SUBMIT_DIR/slurm.
HELPERS="$(dirname "${BASH_SOURCE[0]}")"
[ -f "$HELPERS/_python.sh" ] || [ -z "${SLURM_JOB_ID:-}" ] || HELPERS="$(dirname "$(scontrol show job -o \
    "$SLURM_JOB_ID" 2>/dev/null | grep -o ' Command=[^ ]*' | cut -d= -f2 || true)")"
[ -f "$HELPERS/_python.sh" ] || HELPERS="${SLURM_SUBMIT_DIR:-$PWD}/slurm"
[ -f "$HELPERS/_python.sh" ] || die "slurm/_python.sh not found. HINT: submit from the repository root"
# shellcheck source=slurm/_python.sh
source "$HELPERS/_python.sh"
galmass_python "pip install 'galmass[mpi]', or export GALMASS_PYTHON" galmass mpi4py

NTASKS="${SLURM_NTASKS:-1}"
if [ -n "${GALMASS_MPIEXEC:-}" ]; then
  read -r -a LAUNCH <<<"$GALMASS_MPIEXEC"
  [[ "${LAUNCH[0]}" == srun ]] && LAUNCH+=(--ntasks="$NTASKS") || LAUNCH+=(-n "$NTASKS")
else
  MPIEXEC="$(dirname "$PY")/mpiexec"
  [ -x "$MPIEXEC" ] || MPIEXEC="$(command -v mpiexec)" || die "no mpiexec found. HINT: export GALMASS_MPIEXEC"
  LAUNCH=("$MPIEXEC" -n "$NTASKS")
fi
# One thread per rank unless the job asked for more CPUs per task.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"
echo "[eval_mpi] $(date -u +%FT%TZ) job ${SLURM_JOB_ID:-none}: ${LAUNCH[*]} $PY -m galmass.evaluate --run $RUN $*"
exec "${LAUNCH[@]}" "$PY" -m galmass.evaluate --run "$RUN" "$@"
