"""`galmass mock` as a job array: each task writes only its shards; `--merge` writes the manifest; the result is
bit-identical to single-process generation."""

from __future__ import annotations

import json

import pytest

from conftest import TINY_DATA, run_cmd
from galmass.config import load_config
from galmass.datasets import DatasetError
from galmass.mocks.generate import generate_dataset, plan_shards


def test_array_tasks_then_merge_equal_single_process(tiny_dataset, tmp_path):
    out = tmp_path / "array"
    cfg = load_config(None, TINY_DATA + [f"--data.path={out}"]).data
    n_tasks = 3
    plan = plan_shards(cfg)
    # Task 1 through the command line (as a SLURM array task would run it), the others in-process.
    run_cmd(["galmass", "mock", "--task-id", "1", "--num-tasks", str(n_tasks), "--workers", "1",
             *TINY_DATA, f"--data.path={out}"])
    written = sorted(p.name for p in out.glob("shard-*.h5"))
    assert written == sorted(f"shard-{t.index:05d}.h5" for t in plan if t.index % n_tasks == 1)
    assert not (out / "manifest.json").exists()
    with pytest.raises(DatasetError, match="missing"):
        generate_dataset(cfg, merge=True, progress=False)
    for task_id in (0, 2):
        generate_dataset(cfg, workers=1, progress=False, task_id=task_id, num_tasks=n_tasks)
    proc = run_cmd(["galmass", "mock", "--merge", *TINY_DATA, f"--data.path={out}"])
    assert "train" in proc.stdout
    ref = json.loads((tiny_dataset / "manifest.json").read_text())
    got = json.loads((out / "manifest.json").read_text())
    assert [s["sha256"] for s in got["shards"]] == [s["sha256"] for s in ref["shards"]]
    assert got["normalisation"] == ref["normalisation"] and got["counts"] == ref["counts"]
    with pytest.raises(ValueError, match="task_id"):
        generate_dataset(cfg, task_id=3, num_tasks=3)
