"""Against a real local SLURM (slurm/local_slurm.sh): sbatch slurm/train_ddp.sh with 2 tasks (gloo DDP via srun +
torchrun), requeued mid-run by its USR2 trap and resumed, with a plain log; slurm/eval_mpi.sh, submitted from
another directory, equals a serial evaluation; requests the partition can never hold are refused by sbatch; the
launcher detection of hpc.launchers under a real `srun -n 2`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY_MODEL, TINY_TRAIN, run_cmd, tiny_data_args
from hpc.launchers import slurm_master_port
from slurm_cluster import (SCRIPT, job_info, node_cpus, release_requeued, slurm, wait_for_file,  # noqa: F401
                           wait_for_state)

pytestmark = pytest.mark.slow


def _sbatch(args: list[str], cwd: Path = REPO) -> str:
    out = run_cmd(["sbatch", "--parsable", *args], cwd=cwd)
    return out.stdout.strip().split(";")[0]


def _queue() -> set[str]:
    return set(run_cmd(["squeue", "-h", "-o", "%i"]).stdout.split())


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
        "--train.progress=true",  # asked for, but the log is no terminal: plain lines instead of a bar
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
    # the rendezvous port follows the one rule of hpc.launchers (on every run of the job)
    assert re.findall(r"rendezvous \S+:(\d+), python", text) == [str(slurm_master_port(int(job)))] * 2, text
    # No progress bar in a log: no carriage returns, one plain line per epoch (of both runs of the job)
    raw = Path(str(log).replace("%j", job)).read_bytes()
    assert b"\r" not in raw, raw[:2000]
    assert len(re.findall(r"epoch +\d+ +train NLL +[\d.]+ +val NLL", text)) == epochs, text
    done = json.loads((run / "done.json").read_text())
    # Every epoch exactly once across the two runs of the job, by 2 ranks.
    assert [h["epoch"] for h in done["history"]] == list(range(epochs)) and done["world_size"] == 2
    assert (run / "best.pt").exists() and list((run / "checkpoints").glob("ckpt-*.pt"))

    # slurm/eval_mpi.sh with 2 MPI ranks under SLURM writes the serial metrics. Submitted from a directory without
    # slurm/ or .venv: the script (run from slurmd's spool copy) finds slurm/_python.sh next to the submitted script
    # (scontrol's Command=) and the Python in that repository's .venv.
    serial, par = tmp_path / "serial", tmp_path / "mpi"
    run_cmd([sys.executable, "-m", "galmass.evaluate", "--run", str(run), "--out", str(serial)])
    elog = tmp_path / "eval-%j.out"
    ejob = _sbatch(["--ntasks=2", "--time=5", f"--output={elog}", str(REPO / "slurm" / "eval_mpi.sh"), str(run),
                    "--out", str(par)], cwd=tmp_path)
    info = wait_for_state(ejob, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=120)
    etext = Path(str(elog).replace("%j", ejob)).read_text()
    assert info["JobState"] == "COMPLETED", etext
    assert "evaluated with 2 MPI ranks" in etext, etext
    if not os.environ.get("GALMASS_PYTHON") and (REPO / ".venv" / "bin" / "python").exists():
        assert f"{REPO}/.venv/bin/python -m galmass.evaluate" in etext, etext
    assert (par / "metrics.json").read_bytes() == (serial / "metrics.json").read_bytes()


def test_train_ddp_refuses_bad_geometry(slurm, tmp_path):
    # 2 tasks per node with 1 GPU per node: refused before any rank starts. The local node has no GPU, so the
    # check is exercised with the environment the script reads.
    env = {"SLURM_JOB_ID": "1", "SLURM_JOB_NUM_NODES": "1", "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2",
           "SLURM_GPUS_PER_NODE": "a100:1", "SLURM_JOB_NODELIST": "localhost"}
    out = run_cmd(["bash", "slurm/train_ddp.sh", "configs/quickstart.yaml"], cwd=REPO, env_extra=env, check=False)
    assert out.returncode == 2
    assert "2 tasks per node but 1 GPUs per node" in out.stderr and "--ntasks-per-node=1" in out.stderr


def test_impossible_request_is_refused_at_submission(slurm, tmp_path):
    """EnforcePartLimits=ALL (slurm/local_slurm.sh): more ranks than the partition's CPUs fail in sbatch at once,
    with Slurm's message, instead of pending forever (Reason=PartitionConfig); a request that fits is queued and the
    script's own job-start check then fails it with a HINT."""
    cpus = node_cpus()
    before = _queue()
    for ntasks in sorted({cpus + 1, 8} - set(range(cpus + 1))):  # 8: the README's example, where it cannot fit
        out = run_cmd(["sbatch", f"--ntasks={ntasks}", f"--output={tmp_path}/x-%j.out", "slurm/eval_mpi.sh",
                       str(tmp_path)], cwd=REPO, check=False, timeout=30)
        assert out.returncode != 0, out.stdout
        assert "More processors requested than permitted" in out.stderr, out.stderr
    out = run_cmd(["sbatch", f"--cpus-per-task={cpus + 1}", "--wrap=true"], check=False, timeout=30)
    assert out.returncode != 0 and "More processors requested than permitted" in out.stderr, out.stderr
    out = run_cmd(["sbatch", "--nodes=2", "--wrap=true"], check=False, timeout=30)
    assert out.returncode != 0 and "Node count specification invalid" in out.stderr, out.stderr
    assert _queue() == before  # nothing was queued

    # Fits: queued, runs, and eval_mpi.sh refuses a directory without a trained model before starting any rank.
    log = tmp_path / "fits-%j.out"
    job = _sbatch([f"--ntasks={cpus}", "--time=2", f"--output={log}", "slurm/eval_mpi.sh", str(tmp_path)])
    info = wait_for_state(job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=60)
    text = Path(str(log).replace("%j", job)).read_text()
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0", info
    assert "holds no trained model (best.pt). HINT" in text, text


SLURM_ENV_PROBE = """
import json, os, sys
from hpc.launchers import SlurmEnv, detect_launcher
env = detect_launcher()
keys = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_JOB_ID", "SLURM_STEP_NODELIST",
        "SLURM_STEP_TASKS_PER_NODE")
print(json.dumps({"launcher": type(env).__name__, "rank": env.rank, "world": env.world_size,
                  "local_rank": env.local_rank, "local_world": env.local_world_size, "node": env.node_rank,
                  "addr": env.master_addr, "port": env.master_port, "env": {k: os.environ.get(k) for k in keys}}))
"""


def test_slurm_env_under_real_srun(slurm, tmp_path):
    """hpc.launchers.SlurmEnv (one srun task per rank, as a sweep cell with tasks_per_node > 1 runs) read from the
    environment a real `srun -n 2` sets, against srun's own variables and `scontrol show hostnames`."""
    drop = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")
    clean = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("SLURM_JOB", "SLURM_STEP"))}
    out = subprocess.run(["srun", "-n", "2", "--cpus-per-task=1", "--time=2", f"--output={tmp_path}/task-%t.json",
                          sys.executable, "-c", SLURM_ENV_PROBE], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={**clean, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stdout + out.stderr
    tasks = [json.loads((tmp_path / f"task-{i}.json").read_text()) for i in range(2)]
    hosts = run_cmd(["scontrol", "show", "hostnames", tasks[0]["env"]["SLURM_STEP_NODELIST"]]).stdout.split()
    job = int(tasks[0]["env"]["SLURM_JOB_ID"])
    for i, task in enumerate(tasks):
        e = task["env"]
        assert task["launcher"] == "SlurmEnv", task
        assert task["rank"] == int(e["SLURM_PROCID"]) == i and task["world"] == int(e["SLURM_NTASKS"]) == 2
        assert task["local_rank"] == int(e["SLURM_LOCALID"]) and task["node"] == int(e["SLURM_NODEID"]) == 0
        assert task["local_world"] == 2 and e["SLURM_STEP_TASKS_PER_NODE"] == "2"  # one node holds both
        assert task["addr"] == hosts[0] and task["port"] == slurm_master_port(job)
        assert int(e["SLURM_JOB_ID"]) == job  # both tasks in one job: one rendezvous address and port
