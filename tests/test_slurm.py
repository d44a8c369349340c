"""Against a real local SLURM (slurm/local_slurm.sh): sbatch slurm/train_ddp.sh with 2 tasks (gloo DDP via srun +
torchrun), requeued mid-run by its USR2 trap and resumed; slurm/eval_mpi.sh equals a serial evaluation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY_MODEL, TINY_TRAIN, run_cmd, tiny_data_args
from slurm_cluster import SCRIPT, job_info, release_requeued, slurm, wait_for_file, wait_for_state  # noqa: F401

pytestmark = pytest.mark.slow


def _sbatch(args: list[str]) -> str:
    out = run_cmd(["sbatch", "--parsable", *args], cwd=REPO)
    return out.stdout.strip().split(";")[0]


def test_local_slurm_status(slurm):
    out = subprocess.run([str(SCRIPT), "status"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "slurmctld: running" in out.stdout and "slurmd: running" in out.stdout
    assert "idle" in out.stdout or "mix" in out.stdout or "alloc" in out.stdout


def test_train_ddp_two_tasks_requeue_and_mpi_eval(slurm, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    log = tmp_path / "train-%j.out"
    epochs = 16
    job = _sbatch([
        "--ntasks-per-node=2", "--cpus-per-task=1", "--gpus-per-node=0", "--time=10", f"--output={log}",
        "slurm/train_ddp.sh", "configs/quickstart.yaml", *tiny_data_args(tiny_dataset), f"--train.run_dir={run}",
        *TINY_MODEL, *TINY_TRAIN, f"--train.epochs={epochs}", "--train.max_steps_per_epoch=2",
        "--evaluate.batch_size=5", "--evaluate.posterior_samples=40",
    ])
    # Interrupt once the first epoch is on disk: USR2 to the batch shell, as --signal=B:USR2@T would do.
    wait_for_file(run / "checkpoints" / "ckpt-000000.pt", timeout=120)
    subprocess.run(["scancel", "--batch", "--signal=USR2", job], check=True)
    release_requeued(job)
    info = wait_for_state(job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=180)
    text = Path(str(log).replace("%j", job)).read_text()
    assert info["JobState"] == "COMPLETED", text
    assert int(info.get("Restarts", "0")) == 1, text
    assert "caught USR2: requeueing" in text and "resuming" in text, text
    assert "2 rank(s) [torchrun, gloo, cpu]" in text, text
    done = json.loads((run / "done.json").read_text())
    # Every epoch exactly once across the two runs of the job, by 2 ranks.
    assert [h["epoch"] for h in done["history"]] == list(range(epochs)) and done["world_size"] == 2
    assert (run / "best.pt").exists() and list((run / "checkpoints").glob("ckpt-*.pt"))

    # slurm/eval_mpi.sh with 2 MPI ranks under SLURM writes the serial metrics.
    serial, par = tmp_path / "serial", tmp_path / "mpi"
    run_cmd([sys.executable, "-m", "galmass.evaluate", "--run", str(run), "--out", str(serial)])
    elog = tmp_path / "eval-%j.out"
    ejob = _sbatch(["--ntasks=2", "--time=5", f"--output={elog}", "slurm/eval_mpi.sh", str(run), "--out", str(par)])
    info = wait_for_state(ejob, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=120)
    etext = Path(str(elog).replace("%j", ejob)).read_text()
    assert info["JobState"] == "COMPLETED", etext
    assert "evaluated with 2 MPI ranks" in etext, etext
    assert (par / "metrics.json").read_bytes() == (serial / "metrics.json").read_bytes()


def test_train_ddp_refuses_bad_geometry(slurm, tmp_path):
    # 2 tasks per node with 1 GPU per node: refused before any rank starts. The local node has no GPU, so the
    # check is exercised with the environment the script reads.
    env = {"SLURM_JOB_ID": "1", "SLURM_JOB_NUM_NODES": "1", "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2",
           "SLURM_GPUS_PER_NODE": "a100:1", "SLURM_JOB_NODELIST": "localhost"}
    out = run_cmd(["bash", "slurm/train_ddp.sh", "configs/quickstart.yaml"], cwd=REPO, env_extra=env, check=False)
    assert out.returncode == 2
    assert "2 tasks per node but 1 GPUs per node" in out.stderr and "--ntasks-per-node=1" in out.stderr
