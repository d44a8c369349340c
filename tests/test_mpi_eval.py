"""MPI evaluation: `mpiexec -n 2 python -m galmass.evaluate` writes the same metrics as one process."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_MODEL, TINY_TRAIN, run_cmd, tiny_data_args

MPIEXEC = Path(sys.executable).parent / "mpiexec"


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset, tmp_path_factory) -> Path:
    """A tiny trained model whose evaluation config splits the 32 test projections into 7 uneven batches."""
    from galmass.config import load_config
    from galmass.train import train

    run = tmp_path_factory.mktemp("mpi") / "run"
    cfg = load_config(None, [*tiny_data_args(tiny_dataset), f"--train.run_dir={run}", *TINY_MODEL, *TINY_TRAIN,
                             "--train.epochs=1", "--train.max_steps_per_epoch=2", "--train.threads=1",
                             "--evaluate.batch_size=5", "--evaluate.posterior_samples=40"])
    train(cfg)
    return run


def test_batch_seed_depends_on_batch_not_rank():
    from galmass.evaluate import batch_seed

    seeds = [batch_seed(0, b) for b in range(50)]
    assert len(set(seeds)) == 50 and seeds == [batch_seed(0, b) for b in range(50)]
    assert batch_seed(1, 0) != batch_seed(0, 0) and 0 <= max(seeds) < 2**63
    with pytest.raises(ValueError, match="must be >= 0"):
        batch_seed(-1, 0)


class _FakeComm:
    """Two 'ranks' run one after the other in this process; gather hands rank 1's part to rank 0."""

    def __init__(self, rank: int, box: dict):
        self.rank, self.box = rank, box

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return 2

    def gather(self, obj, root=0):
        self.box[self.rank] = obj
        return [self.box[0], self.box[1]] if self.rank == 0 else None


def test_round_robin_split_reassembles_serial_order(tiny_run, tiny_dataset):
    from galmass.datasets import ShardedDataset
    from galmass.models.network import input_keys
    from galmass.evaluate import posterior_samples
    from galmass.models.io import load_trained

    model, cfg, _ = load_trained(tiny_run)
    data = ShardedDataset(tiny_dataset, "test", input_keys(cfg.model) + ("labels",), meta=True)
    serial = posterior_samples(model, data, 20, 5, 7)
    box: dict = {}
    assert posterior_samples(model, data, 20, 5, 7, comm=_FakeComm(1, box)) is None  # rank 1 returns nothing
    merged = posterior_samples(model, data, 20, 5, 7, comm=_FakeComm(0, box))
    assert serial["samples"].shape == (20, len(data), 10)
    for k in serial:
        np.testing.assert_array_equal(merged[k], serial[k])
    # Rank 1 really held the odd batches: its galaxy ids are those of projections 5..9, 15..19, 25..29.
    odd = np.concatenate([np.arange(5, 10), np.arange(15, 20), np.arange(25, 30)])
    np.testing.assert_array_equal(np.concatenate([box[1][b]["galaxy_id"] for b in sorted(box[1])]),
                                  serial["galaxy_id"][odd])


def test_serial_process_does_not_import_mpi4py():
    out = run_cmd([sys.executable, "-c", "import sys, galmass.evaluate as e; print(e.mpi_comm(), 'mpi4py' in sys.modules)"])
    assert out.stdout.split() == ["None", "False"]


@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec next to this python (pip install galmass[mpi])")
def test_mpiexec_two_ranks_equals_serial(tiny_run, tmp_path):
    serial, par = tmp_path / "serial", tmp_path / "mpi"
    run_cmd([sys.executable, "-m", "galmass.evaluate", "--run", str(tiny_run), "--out", str(serial)],
            env_extra={"OMP_NUM_THREADS": "1"})
    out = run_cmd([str(MPIEXEC), "-n", "2", sys.executable, "-m", "galmass.evaluate", "--run", str(tiny_run),
                   "--out", str(par)], env_extra={"OMP_NUM_THREADS": "1"})
    assert "evaluated with 2 MPI ranks" in out.stdout
    # Byte-identical metrics.json: every reported number (bias, scatter, coverage, TARP, estimators) is equal.
    assert (par / "metrics.json").read_bytes() == (serial / "metrics.json").read_bytes()
    m = json.loads((par / "metrics.json").read_text())
    assert m["n_projections"] == 32 and m["posterior_samples"] == 40
    a, b = np.load(serial / "residuals.npz"), np.load(par / "residuals.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k])
    shutil.rmtree(par)
