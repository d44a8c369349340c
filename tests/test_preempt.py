"""Preemption: signal → finish the step → checkpoint with the loader position → exit 75 → the rerun resumes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY_MODEL, TINY_TRAIN, run_cmd, tiny_data_args
from hpc.dali_loader import dali_available
from hpc.preempt import PREEMPT_EXIT_CODE, PreemptionHandler, request_requeue

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
# 128 training projections in the tiny dataset / batch 4 = 32 steps per epoch: plenty of room to land mid-epoch.
STEPS = 32


def train_args(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return [*tiny_data_args(data), f"--train.run_dir={run_dir}", "--train.threads=1", *TINY_MODEL, *TINY_TRAIN,
            "--train.batch_size=4", *extra]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)["model"]


# -- unit level ----------------------------------------------------------------------------------------------------
def test_handler_records_signal_and_restores_previous_handler():
    before = signal.getsignal(signal.SIGUSR2)
    with PreemptionHandler() as pre:
        assert not pre.requested and not pre.should_stop()
        os.kill(os.getpid(), signal.SIGUSR2)  # a real signal; without the handler it would kill pytest
        deadline = time.time() + 5
        while not pre.requested and time.time() < deadline:
            time.sleep(0.01)
        assert pre.received == signal.SIGUSR2 and pre.should_stop()
        assert pre.describe() == "SIGUSR2"
    assert signal.getsignal(signal.SIGUSR2) is before


def test_one_signalled_rank_stops_all_ranks():
    other_rank_flags = [1.0]  # a peer rank saw the signal, this one did not
    pre = PreemptionHandler()
    assert pre.should_stop(lambda v: [v[0] + other_rank_flags[0]])
    assert not pre.should_stop(lambda v: [v[0] + 0.0])


def test_request_requeue_calls_scontrol_only_under_slurm(tmp_path, monkeypatch):
    assert "not under Slurm" in request_requeue(env={})
    log = tmp_path / "calls.txt"
    fake = tmp_path / "scontrol"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert request_requeue(env={"SLURM_JOB_ID": "4242"}) == "requeued Slurm job 4242"
    # An array task is requeued by its own id, not the whole array.
    request_requeue(env={"SLURM_JOB_ID": "4250", "SLURM_ARRAY_JOB_ID": "4200", "SLURM_ARRAY_TASK_ID": "7"})
    assert log.read_text().split("\n")[:2] == ["requeue 4242", "requeue 4200_7"]


# -- a real training process ---------------------------------------------------------------------------------------
def _preempt_mid_epoch(cmd: list[str], run: Path) -> tuple[int, str]:
    """Start training, freeze it inside epoch 1, send SIGUSR2, let it go; returns (exit status, output)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), **ONE_THREAD)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.time() + 300
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(f"[galmass] epoch 1 step 2/{STEPS}"):
            # SIGSTOP first: the process is then frozen a few steps into epoch 1 however busy this machine is,
            # and receives SIGUSR2 the moment it continues.
            proc.send_signal(signal.SIGSTOP)
            proc.send_signal(signal.SIGUSR2)
            proc.send_signal(signal.SIGCONT)
            break
        if time.time() > deadline:
            break
    rest, _ = proc.communicate(timeout=300)
    return proc.returncode, "".join(lines) + rest


@pytest.fixture(scope="module")
def reference_run(tiny_dataset, tmp_path_factory) -> Path:
    """An uninterrupted run with the torch loader (the DALI run must reproduce it exactly too)."""
    ref = tmp_path_factory.mktemp("preempt") / "ref"
    run_cmd([sys.executable, "-m", "galmass.train", *train_args(tiny_dataset, ref, "--train.epochs=3")],
            env_extra=ONE_THREAD)
    return ref


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["torch", "dali"])
def test_sigusr2_mid_epoch_then_rerun_equals_uninterrupted(tiny_dataset, tmp_path, loader, reference_run):
    if loader == "dali" and not dali_available():
        pytest.skip("NVIDIA DALI is not installed (pip install nvidia-dali-cuda120)")
    extra = ("--train.epochs=3", "--train.log_every=1", f"--train.loader={loader}")
    ref = reference_run

    run = tmp_path / "preempted"
    cmd = [sys.executable, "-m", "galmass.train", *train_args(tiny_dataset, run, *extra)]
    rc, out = _preempt_mid_epoch(cmd, run)
    assert rc == PREEMPT_EXIT_CODE, out
    assert "SIGUSR2 received" in out and "not under Slurm" in out
    assert not (run / "done.json").exists()
    state = torch.load(run / "checkpoints" / "ckpt-000001.pt", weights_only=True)
    pos = state["position"]
    assert pos["epoch"] == 1 and 2 <= pos["step"] < STEPS, pos  # really in the middle of epoch 1
    assert state["epoch"] == 0  # epoch 0 is the last complete one

    again = run_cmd(cmd, env_extra=ONE_THREAD)
    assert f"(epoch 1, step {pos['step']})" in again.stdout
    # The resumed epoch starts exactly where the preempted one stopped.
    assert f"[galmass] epoch 1 step {pos['step'] + 1}/{STEPS}" in again.stdout
    assert f"[galmass] epoch 1 step {pos['step']}/{STEPS}" not in again.stdout
    w_ref, w_run = weights(ref), weights(run)
    for key in w_ref:
        assert torch.equal(w_ref[key], w_run[key]), key
