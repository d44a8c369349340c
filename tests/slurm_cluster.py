"""A real single-node SLURM for the integration tests (slurm/local_slurm.sh), and small job helpers.

Import the ``slurm`` fixture into a test module. It starts the cluster if it is not running (root + apt needed,
else the tests are skipped; a running one gets the current slurm.conf), exports SLURM_CONF for the commands and
jobs the tests start, and stops the daemons at the end only if it started them. ``GALMASS_TEST_SLURM=0`` skips these tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO

SCRIPT = REPO / "slurm" / "local_slurm.sh"
SLURM_DIR = Path(os.environ.get("GALMASS_SLURM_DIR", "/tmp/galmass-slurm"))
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def _can_run() -> str | None:
    if os.environ.get("GALMASS_TEST_SLURM", "1") == "0":
        return "GALMASS_TEST_SLURM=0"
    if os.geteuid() != 0:
        return "the local SLURM needs root (slurm/local_slurm.sh)"
    if not (shutil.which("slurmctld") or shutil.which("apt-get")):
        return "neither SLURM nor apt-get is available"
    return None


@pytest.fixture(scope="session")
def slurm() -> Path:
    """Path of the local cluster's slurm.conf, with the cluster running."""
    why = _can_run()
    if why:
        pytest.skip(why)
    was_running = subprocess.run([str(SCRIPT), "status"], capture_output=True, text=True).returncode == 0
    # Also when it runs: `start` then only applies this version's slurm.conf (e.g. EnforcePartLimits) if it changed.
    proc = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"slurm/local_slurm.sh start failed:\n{proc.stdout}\n{proc.stderr}")
    conf = SLURM_DIR / "slurm.conf"
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    yield conf
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old
    if not was_running:
        subprocess.run([str(SCRIPT), "stop"], capture_output=True, text=True, timeout=120)


def node_cpus() -> int:
    """CPUs of the local cluster's node as sinfo reports them (``nproc`` of this machine, e.g. 2)."""
    out = subprocess.run(["sinfo", "-h", "-e", "-o", "%c"], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0].rstrip("+"))


def job_info(job_id: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (JobState, Reason, Restarts, ...); empty if SLURM forgot the job."""
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True).stdout
    return dict(w.split("=", 1) for w in out.split() if "=" in w)


def wait_for_state(job_id: str, states: set[str], timeout: float = 180, poll: float = 0.25) -> dict[str, str]:
    """Poll until the job reaches one of ``states`` (``sbatch --wait`` polls far more slowly)."""
    t0 = time.monotonic()
    info: dict[str, str] = {}
    while time.monotonic() - t0 < timeout:
        info = job_info(job_id)
        if info.get("JobState") in states:
            return info
        time.sleep(poll)
    raise AssertionError(f"job {job_id} did not reach {states} in {timeout} s; last: {info}")


def release_requeued(job_id: str, timeout: float = 60, poll: float = 0.25, settle: float = 2.0) -> dict[str, str]:
    """Let a requeued job start again now instead of after SLURM's 120 s hold (Reason=BeginTime).

    The hold is set when the old run has finished completing, so the update is repeated for as long as the job
    is seen pending for BeginTime; returns once it runs again (or ended). The first update waits ``settle``
    seconds after the job was first seen pending: slurmd revokes the old run's credential with a time stamp of
    whole seconds, and a restart within that same second is refused ("Killing non-startable batch job: Job
    credential revoked"), which ends the job instead of restarting it.
    """
    t0 = time.monotonic()
    info: dict[str, str] = {}
    pending_since: float | None = None
    while time.monotonic() - t0 < timeout:
        info = job_info(job_id)
        state = info.get("JobState")
        if state == "PENDING":
            pending_since = pending_since or time.monotonic()
            if info.get("Reason") == "BeginTime" and time.monotonic() - pending_since >= settle:
                subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
        elif pending_since is not None and (state == "RUNNING" or state in TERMINAL):
            return info
        time.sleep(poll)
    raise AssertionError(f"requeued job {job_id} did not start again in {timeout} s; last: {info}")


def wait_for_file(path: Path, timeout: float = 180, poll: float = 0.1) -> None:
    t0 = time.monotonic()
    while not path.exists():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{path} did not appear in {timeout} s\n{queue_diagnostics()}")
        time.sleep(poll)


def queue_diagnostics() -> str:
    """The queue and the recent jobs' states and reasons: what a timeout message needs to be read on CI."""
    out = []
    for cmd in (["squeue", "-a", "-o", "%i %j %T %r %M %C %m"],
                ["sacct", "-X", "-n", "-o", "JobID,JobName,State,ExitCode,Elapsed,Reason%30", "-S", "now-1hour"]):
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            out.append(f"$ {' '.join(cmd)}\n{res.stdout}{res.stderr}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            out.append(f"$ {' '.join(cmd)}: {exc}")
    return "\n".join(out)
