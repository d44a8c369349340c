"""Training and evaluation refuse to mix runs, datasets or configs, and fail with a message, not a traceback."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY_DATA, TINY_MODEL, TINY_TRAIN, run_cmd, tiny_data_args

pytestmark = pytest.mark.slow
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
QUICK = ("--train.epochs=1", "--train.max_steps_per_epoch=2", "--train.threads=1")


def train_cmd(data, run, *extra, data_args=None):
    args = data_args if data_args is not None else tiny_data_args(data)
    return [sys.executable, "-m", "galmass.train", *args, f"--train.run_dir={run}", *TINY_MODEL, *TINY_TRAIN,
            *QUICK, *extra]


def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-200] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_corrupt_validation_shard_stops_training_before_any_file(tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    val = next(e for e in json.loads((data / "manifest.json").read_text())["shards"] if e["split"] == "val")
    _flip(data / val["file"])
    proc = run_cmd(train_cmd(data, tmp_path / "run"), env_extra=ONE_THREAD, check=False)
    assert proc.returncode == 2 and "checksum mismatch" in proc.stderr and val["file"] in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run" / "config.yaml").exists()


def test_data_settings_that_do_not_match_the_dataset_are_refused(tiny_dataset, tmp_path):
    proc = run_cmd(train_cmd(tiny_dataset, tmp_path / "run", "--data.suites=[compct]"), check=False)
    assert proc.returncode == 2 and "data.suites: unknown suites name 'compct'. Did you mean 'compact'" in proc.stderr
    proc = run_cmd(train_cmd(tiny_dataset, tmp_path / "run", "--data.suites=[median]"), check=False)  # real, other
    assert proc.returncode == 2 and "data.suites" in proc.stderr and "different data config" in proc.stderr
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_failed_start_leaves_no_config_and_path_spellings_resume(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    missing = run_cmd(train_cmd(tmp_path / "nowhere", run), check=False)
    assert missing.returncode == 2 and "no manifest" in missing.stderr and not (run / "config.yaml").exists()
    run_cmd(train_cmd(tiny_dataset, run, "--train.epochs=2"), env_extra=ONE_THREAD)  # the fixed command starts
    (run / "done.json").unlink()  # pretend it was interrupted
    spelled = f"./{run.relative_to(tmp_path)}"
    again = run_cmd(train_cmd(tiny_dataset, spelled, "--train.epochs=2"), cwd=tmp_path, env_extra=ONE_THREAD)
    assert "resuming" in again.stdout


def test_second_trainer_on_the_same_run_directory_is_refused(tiny_dataset, tmp_path):
    from hpc.lock import DirectoryLock

    run = tmp_path / "run"
    with DirectoryLock(run, "galmass train"):
        proc = run_cmd(train_cmd(tiny_dataset, run, "--train.lr=0.5"), check=False)
    assert proc.returncode == 2 and "in use by another galmass train" in proc.stderr
    assert not (run / "config.yaml").exists()


def test_divergence_is_detected_and_reported_not_written(tiny_dataset, tmp_path, monkeypatch):
    from galmass.config import load_config
    from galmass.models.network import MassPosterior
    from galmass.train import TrainingDiverged, train

    run = tmp_path / "run"
    args = tiny_data_args(tiny_dataset) + [f"--train.run_dir={run}", *TINY_MODEL, *TINY_TRAIN,
                                           "--train.epochs=3", "--train.max_steps_per_epoch=3"]
    forward, calls = MassPosterior.forward, {"n": 0}

    def poisoned(self, batch):
        calls["n"] += 1
        out = forward(self, batch)
        return out * math.nan if calls["n"] == 5 else out  # epoch 1, step 1 (validation adds calls)

    monkeypatch.setattr(MassPosterior, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch 1, step \d+.*not applied"):
        train(load_config(None, args))
    assert not (run / "done.json").exists() and (run / "checkpoints" / "ckpt-000000.pt").exists()
    good = torch.load(run / "checkpoints" / "ckpt-000000.pt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in good["model"].values() if v.is_floating_point())
    monkeypatch.setattr(MassPosterior, "forward", forward)
    train(load_config(None, args))  # a rerun resumes from the good epoch and finishes (done.json is valid JSON)
    assert json.loads((run / "done.json").read_text())["epochs_run"] == 3


def test_evaluate_never_evaluates_another_dataset_under_the_runs_name(tiny_dataset, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "data").mkdir(parents=True)
    shutil.copytree(tiny_dataset, a / "data" / "tiny")
    rel = ["--data.path=data/tiny", *TINY_DATA]
    run_cmd(train_cmd(None, "run", data_args=rel), cwd=a, env_extra=ONE_THREAD)
    galmass = [sys.executable, "-m", "galmass"]
    run_cmd(galmass + ["evaluate", "--run", str(a / "run"), "--samples", "20"], cwd=a)
    metrics = (a / "run" / "eval-test" / "metrics.json").read_bytes()
    # Another directory with a different dataset at the same relative path.
    b.mkdir()
    run_cmd(galmass + ["mock", *TINY_DATA, "--data.seed=4", "--data.path=data/tiny", "--workers", "1"], cwd=b)
    ok = run_cmd(galmass + ["evaluate", "--run", str(a / "run"), "--samples", "20"], cwd=b)
    assert "eval-test" in ok.stdout  # the run's own dataset, found by its recorded absolute path
    assert (a / "run" / "eval-test" / "metrics.json").read_bytes() == metrics  # same inputs: same bytes
    shutil.move(a / "data", a / "moved")
    bad = run_cmd(galmass + ["evaluate", "--run", str(a / "run"), "--samples", "20"], cwd=b, check=False)
    assert bad.returncode == 2 and "not the one" in bad.stderr and "Traceback" not in bad.stderr
    assert (a / "run" / "eval-test" / "metrics.json").read_bytes() == metrics
    zero = run_cmd(galmass + ["evaluate", "--run", str(a / "run"), "--samples", "0",
                              "--data", str(a / "moved" / "tiny")], check=False)
    assert zero.returncode == 2 and "--samples must be >= 1" in zero.stderr


def test_user_errors_exit_2_without_traceback(tiny_dataset, tmp_path):
    galmass = [sys.executable, "-m", "galmass"]
    no_model = run_cmd(galmass + ["evaluate", "--run", str(tmp_path / "empty")], check=False)
    assert no_model.returncode == 2 and "best.pt does not exist" in no_model.stderr
    run = tmp_path / "run"
    run_cmd(train_cmd(tiny_dataset, run, "--train.epochs=2"), env_extra=ONE_THREAD)
    (run / "done.json").unlink()
    for ck in (run / "checkpoints").glob("ckpt-*.pt"):
        ck.write_bytes(b"truncated")
    proc = run_cmd(train_cmd(tiny_dataset, run, "--train.epochs=2"), check=False)
    assert proc.returncode == 2 and "no loadable checkpoint" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cmd(galmass + ["mock", "--config", str(tmp_path / "missing.yaml")], check=False)
    assert proc.returncode == 2 and "missing.yaml" in proc.stderr and "Traceback" not in proc.stderr
