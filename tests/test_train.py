"""Training: DDP equivalence (real torchrun, gloo), exact resume after SIGKILL, finished runs untouched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY_MODEL, TINY_TRAIN, run_cmd, tiny_data_args

pytestmark = pytest.mark.slow

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def train_args(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return [*tiny_data_args(data), f"--train.run_dir={run_dir}", "--train.threads=1", *TINY_MODEL, *TINY_TRAIN,
            *extra]


def params(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)["model"]


def test_two_rank_torchrun_equals_one_rank(tiny_dataset, tmp_path):
    extra = ("--train.epochs=2", "--train.max_steps_per_epoch=4")
    run_cmd([sys.executable, "-m", "galmass.train", *train_args(tiny_dataset, tmp_path / "r1", *extra)],
            env_extra=ONE_THREAD)
    out = run_cmd([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   "-m", "galmass.train", *train_args(tiny_dataset, tmp_path / "r2", *extra)], env_extra=ONE_THREAD)
    assert "2 rank(s) [torchrun, gloo" in out.stdout
    p1, p2 = params(tmp_path / "r1"), params(tmp_path / "r2")
    init = torch.load(tmp_path / "r1" / "checkpoints" / "ckpt-000000.pt", weights_only=False)["model"]
    moved = max(float((p1[k] - init[k]).abs().max()) for k in p1 if p1[k].is_floating_point())
    assert moved > 0  # training did something between the first checkpoint and the end
    for key in p1:
        torch.testing.assert_close(p2[key], p1[key], atol=1e-5, rtol=0, msg=key)


def test_sigkill_then_rerun_equals_uninterrupted(tiny_dataset, tmp_path):
    extra = ("--train.epochs=8",)
    ref = tmp_path / "ref"
    run_cmd([sys.executable, "-m", "galmass.train", *train_args(tiny_dataset, ref, *extra)], env_extra=ONE_THREAD)
    # One epoch's wall time on this machine, from the reference run's checkpoint stamps (fast CI machines finish the
    # remaining epochs well within a fixed sleep).
    stamps = sorted(p.stat().st_mtime for p in (ref / "checkpoints").glob("ckpt-*.pt"))
    epoch_s = (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)

    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "galmass.train", *train_args(tiny_dataset, run, *extra)]
    env = dict(os.environ, PYTHONPATH=str(REPO), **ONE_THREAD)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    target = run / "checkpoints" / "ckpt-000002.pt"
    deadline = time.time() + 300
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed:\n" + proc.stdout.read()
    time.sleep(0.4 * epoch_s)  # somewhere inside the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "done.json").exists()

    again = run_cmd(cmd, env_extra=ONE_THREAD)
    assert "resuming" in again.stdout
    p_ref, p_run = params(ref), params(run)
    for key in p_ref:
        assert torch.equal(p_ref[key], p_run[key]), key
    best_ref = torch.load(ref / "best.pt", weights_only=False)
    best_run = torch.load(run / "best.pt", weights_only=False)
    assert best_ref["epoch"] == best_run["epoch"] and best_ref["val_nll"] == best_run["val_nll"]


def test_finished_run_is_not_overwritten_and_other_config_is_refused(tiny_dataset, tmp_path):
    run = tmp_path / "done"
    args = train_args(tiny_dataset, run, "--train.epochs=1", "--train.max_steps_per_epoch=2")
    run_cmd([sys.executable, "-m", "galmass.train", *args], env_extra=ONE_THREAD)
    stamp = (run / "last.pt").stat().st_mtime_ns
    out = run_cmd([sys.executable, "-m", "galmass.train", *args], env_extra=ONE_THREAD)
    assert "already finished" in out.stdout and (run / "last.pt").stat().st_mtime_ns == stamp

    other = tmp_path / "other"
    (other).mkdir()
    base = train_args(tiny_dataset, other, "--train.epochs=2", "--train.max_steps_per_epoch=2")
    run_cmd([sys.executable, "-m", "galmass.train", *base], env_extra=ONE_THREAD)
    (other / "done.json").unlink()  # pretend it was interrupted, then change a numeric setting
    bad = run_cmd([sys.executable, "-m", "galmass.train", *base, "--train.lr=0.5"], env_extra=ONE_THREAD,
                  check=False)
    assert bad.returncode == 2 and "different config" in bad.stderr and "train.lr" in bad.stderr


def test_misspelled_override_fails_before_work(tiny_dataset, tmp_path):
    run = tmp_path / "typo"
    bad = run_cmd([sys.executable, "-m", "galmass.train", *train_args(tiny_dataset, run), "--train.epoch=3"],
                  check=False)
    assert bad.returncode == 2 and "Did you mean 'epochs'" in bad.stderr
    assert not run.exists()
