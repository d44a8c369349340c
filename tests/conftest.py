"""Shared fixtures: a tiny mock dataset (generated once per session) and helpers to run galmass commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# A dataset small enough for CPU tests: 2 suites × 2 feedback models × 6 galaxies × 8 projections, 16×16 maps.
TINY_DATA = [
    "--data.galaxies_per_cell=6", "--data.projections=8", "--data.npix=16", "--data.star_pool=3000",
    "--data.gas_cells=300", "--data.shard_size=16", "--data.val_fraction=0.17", "--data.test_fraction=0.17",
    "--data.seed=3",
]


def tiny_data_args(path) -> list[str]:
    """Overrides naming the tiny dataset at ``path`` with the data config that made it (train checks the hash)."""
    return [*TINY_DATA, f"--data.path={path}"]


TINY_MODEL = ["--model.widths=[8,16]", "--model.embed_dim=16", "--model.flow_transforms=2",
              "--model.flow_hidden=[32,32]"]
TINY_TRAIN = ["--train.batch_size=16", "--train.epochs=3", "--train.progress=false", "--train.lr=1e-3",
              "--train.patience=0"]


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    from galmass.config import load_config
    from galmass.mocks.generate import generate_dataset

    path = tmp_path_factory.mktemp("data") / "tiny"
    cfg = load_config(None, TINY_DATA + [f"--data.path={path}"])
    generate_dataset(cfg.data, workers=1, progress=False)
    return path


@pytest.fixture(scope="session")
def tiny_stars_run(tiny_dataset, tmp_path_factory) -> Path:
    """A stars model trained by ``galmass train`` on the tiny dataset (3 epochs); tests derive runs from it, never
    modify it."""
    run = tmp_path_factory.mktemp("stars") / "run"
    run_cmd([sys.executable, "-m", "galmass", "train", *tiny_data_args(tiny_dataset), f"--train.run_dir={run}",
             *TINY_MODEL, *TINY_TRAIN], env_extra={"OMP_NUM_THREADS": "1"})
    return run


def run_cmd(args: list[str], cwd: Path | None = None, timeout: float = 600, env_extra: dict | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run a command with this interpreter's environment (venv bin first on PATH)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra or {})
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}")
    return proc
