# Shared helpers of galmass's sbatch scripts (slurm/train_ddp.sh, slurm/eval_mpi.sh). Sourced, never run.
#
# Locating this file: under sbatch the batch script runs from a copy in slurmd's spool directory, so a script
# cannot look next to itself. Each script tries, in order: the directory of the script being run (direct `bash
# slurm/x.sh`), the directory of the submitted script as SLURM records it (`scontrol show job` Command=, works
# from any submission directory), and $SLURM_SUBMIT_DIR/slurm. The caller defines die() before sourcing.
#
# Functions:
#   galmass_python HINT MODULE...   choose the Python into PY and check that it imports MODULE...: $GALMASS_PYTHON if
#                                   set, else $SLURM_SUBMIT_DIR/.venv/bin/python (the repository's `make` venv), else
#                                   the .venv of the repository holding these scripts, else python3 on PATH.
#   galmass_master_port JOBID       the job's rendezvous port, 12000 + JOBID % 20000 (in [12000, 32000): above the
#                                   common registered ports, below Linux's ephemeral range 32768-60999). The same
#                                   rule as hpc.launchers.slurm_master_port (tests/test_hpc_launchers.py checks it).
#   galmass_check_cpus NEED WHAT    die unless this node gives the job NEED CPUs (SLURM_CPUS_ON_NODE), naming WHAT.

GALMASS_SLURM_HELPERS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

galmass_python() {
  local hint="$1" err
  shift
  local submit="${SLURM_SUBMIT_DIR:-$PWD}" repo="${GALMASS_SLURM_HELPERS%/*}"
  if [ -n "${GALMASS_PYTHON:-}" ]; then PY="$GALMASS_PYTHON"
  elif [ -x "$submit/.venv/bin/python" ]; then PY="$submit/.venv/bin/python"
  elif [ -x "$repo/.venv/bin/python" ]; then PY="$repo/.venv/bin/python"
  else PY="$(command -v python3 || true)"; fi
  [ -n "$PY" ] || die "no Python found (no \$GALMASS_PYTHON, no .venv, no python3 on PATH). HINT: $hint"
  err="$("$PY" -c "import $(IFS=,; echo "$*")" 2>&1)" \
    || die "'$PY' cannot import $* ($(tail -n1 <<<"$err")). HINT: $hint"
}

galmass_master_port() {
  local id="$1"
  [[ "$id" =~ ^[0-9]+$ ]] || die "job id '$id' is not a number. HINT: pass \$SLURM_JOB_ID"
  echo $((12000 + 10#$id % 20000))
}

galmass_check_cpus() {
  local need="$1" what="$2" have="${SLURM_CPUS_ON_NODE:-}"
  have="${have%%(*}"
  if [[ "$have" =~ ^[0-9]+$ ]] && [ "$need" -gt "$have" ]; then
    die "$what needs $need CPUs on this node but the job holds $have (SLURM_CPUS_ON_NODE). HINT: request" \
        "--cpus-per-task and --ntasks-per-node whose product fits a node (sinfo -o '%n %c')"
  fi
}
