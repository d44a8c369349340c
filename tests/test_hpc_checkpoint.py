"""Tests for hpc.atomic (atomic replacement) and hpc.checkpoint (rotation, corrupt fallback, RNG state)."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from hpc.atomic import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text
from hpc.checkpoint import (
    CheckpointError,
    capture_rng_state,
    list_checkpoints,
    load_latest,
    restore_rng_state,
    save_checkpoint,
)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# ---------------------------------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------------------------------
def test_atomic_writes_roundtrip(tmp_path):
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01\xff")
    atomic_write_text(tmp_path / "t.txt", "größe 3 kpc\n")
    atomic_write_json(tmp_path / "j.json", {"b": [1, 2.5], "a": None})
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01\xff"
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "größe 3 kpc\n"
    assert json.loads((tmp_path / "j.json").read_text()) == {"a": None, "b": [1, 2.5]}
    assert _leftovers(tmp_path) == []


def test_atomic_replaces_existing_file(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"


def test_writer_exception_leaves_old_file_intact(tmp_path):
    target = tmp_path / "manifest.json"
    target.write_text("old content")
    with pytest.raises(RuntimeError, match="writer died"):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent  # same directory: the rename cannot cross file systems
            tmp.write_text("half of the new cont")
            # readers see the old file while the new one is being written
            assert target.read_text() == "old content"
            raise RuntimeError("writer died")
    assert target.read_text() == "old content"
    assert _leftovers(tmp_path) == []


def test_keyboard_interrupt_also_cleans_up(tmp_path):
    target = tmp_path / "x.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert not target.exists()
    assert _leftovers(tmp_path) == []


def test_json_nan_rejected_before_touching_file(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"loss": 1.0})
    with pytest.raises(ValueError, match="HINT"):
        atomic_write_json(target, {"loss": float("nan")})
    assert json.loads(target.read_text()) == {"loss": 1.0}


def test_body_must_create_the_temp_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="did not create"):
        with atomic_path(tmp_path / "never.txt"):
            pass
    assert not (tmp_path / "never.txt").exists()


def test_missing_directory_is_readable(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist. HINT"):
        atomic_write_text(tmp_path / "nope" / "f.txt", "x")


# ---------------------------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------------------------
def _state(i: int) -> dict:
    return {"epoch": i, "weights": torch.full((3,), float(i)), "note": f"epoch {i}"}


def test_rotation_keeps_newest(tmp_path):
    for epoch in range(1, 6):
        path = save_checkpoint(tmp_path / "run", epoch, _state(epoch), keep=2)
        assert path.name == f"ckpt-{epoch:06d}.pt"
    assert [n for n, _ in list_checkpoints(tmp_path / "run")] == [4, 5]
    state, path = load_latest(tmp_path / "run")
    assert path.name == "ckpt-000005.pt"
    assert state["epoch"] == 5 and torch.equal(state["weights"], torch.full((3,), 5.0))
    assert _leftovers(tmp_path / "run") == []


def test_numeric_order_beyond_six_digits(tmp_path):
    save_checkpoint(tmp_path, 999_999, _state(1), keep=5)
    save_checkpoint(tmp_path, 1_000_000, _state(2), keep=5)
    state, _ = load_latest(tmp_path)
    assert state["epoch"] == 2


def test_fresh_run_has_no_checkpoint(tmp_path):
    assert load_latest(tmp_path / "does-not-exist") == (None, None)
    assert load_latest(tmp_path) == (None, None)


def test_truncated_latest_falls_back_with_warning(tmp_path):
    for epoch in (1, 2, 3):
        save_checkpoint(tmp_path, epoch, _state(epoch), keep=3)
    newest = tmp_path / "ckpt-000003.pt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # a copy cut short, a disk that filled up
    with pytest.warns(UserWarning, match=r"ckpt-000003\.pt could not be loaded \(\w+"):
        state, path = load_latest(tmp_path)
    assert path.name == "ckpt-000002.pt"
    assert state["epoch"] == 2


def test_all_corrupt_raises_instead_of_restarting(tmp_path):
    for epoch in (1, 2):
        save_checkpoint(tmp_path, epoch, _state(epoch), keep=3)
        (tmp_path / f"ckpt-{epoch:06d}.pt").write_bytes(b"garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match=r"(?s)ckpt-000002\.pt.*ckpt-000001\.pt.*HINT"):
            load_latest(tmp_path)


def test_stray_temp_files_are_ignored(tmp_path):
    save_checkpoint(tmp_path, 1, _state(1), keep=2)
    (tmp_path / ".ckpt-000002.pt.123.abcd.tmp").write_bytes(b"killed mid-write")
    state, path = load_latest(tmp_path)
    assert path.name == "ckpt-000001.pt" and state["epoch"] == 1


def test_save_argument_checks(tmp_path):
    with pytest.raises(ValueError, match="keep must be >= 1"):
        save_checkpoint(tmp_path, 1, _state(1), keep=0)
    with pytest.raises(ValueError, match="step_or_epoch"):
        save_checkpoint(tmp_path, -1, _state(1), keep=1)


# ---------------------------------------------------------------------------------------------------------------
# RNG state
# ---------------------------------------------------------------------------------------------------------------
def _draw() -> tuple:
    return (
        [random.random() for _ in range(3)],
        np.random.standard_normal(3).tolist(),  # normal draws exercise numpy's cached-gaussian state too
        torch.rand(3).tolist(),
        torch.randn(2).tolist(),
    )


def test_rng_capture_restore_reproduces_draws():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leave a cached gaussian in numpy's state
    snap = capture_rng_state()
    first = _draw()
    second = _draw()
    assert first != second  # the draws really advance the generators
    restore_rng_state(snap)
    assert _draw() == first


def test_rng_state_survives_checkpoint_roundtrip(tmp_path):
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    save_checkpoint(tmp_path, 0, {"rng": capture_rng_state()}, keep=1)
    expected = _draw()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    state, _ = load_latest(tmp_path)  # weights_only=True: the snapshot must hold only safe types
    restore_rng_state(state["rng"])
    assert _draw() == expected


@pytest.mark.parametrize("durable,min_fsyncs", [(True, 2), (False, 0)])
def test_non_durable_writes_are_atomic_but_leave_the_fsync_to_the_caller(tmp_path, monkeypatch, durable, min_fsyncs):
    import os

    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    target = tmp_path / "a.json"
    atomic_write_json(target, {"x": 1}, durable=durable)
    assert json.loads(target.read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary left behind
    assert (len(calls) >= min_fsyncs) if durable else not calls  # file + directory, or none
