"""The DALI data path (CPU mode): global-rank sharding under real torchrun, same batches as the torch path,
augmentation equal to its NumPy reference, a clear error when DALI is missing."""

from __future__ import annotations

import json
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, TINY_MODEL, TINY_TRAIN, run_cmd, tiny_data_args
from hpc.augment import apply_numpy, draw_symmetries, symmetry_numpy
from hpc.dali_loader import BatchSource, DaliLoader, TorchLoader, dali_available

needs_dali = pytest.mark.skipif(not dali_available(),
                                reason="NVIDIA DALI is not installed (pip install nvidia-dali-cuda120)")
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _dataset(path: Path, split: str | None, keys: tuple[str, ...], meta: bool = False):
    from galmass.datasets import ShardedDataset

    return ShardedDataset(path, split, keys, verify=False, meta=meta)


# -- augmentation, independent of DALI -----------------------------------------------------------------------------
def test_symmetry_flags_give_exactly_the_eight_square_symmetries():
    x = np.random.default_rng(1).normal(size=(1, 2, 5, 5)).astype(np.float32)
    # Independent construction of D4: 4 rotations of the map and of its mirror image.
    d4 = [np.rot90(m, k, axes=(-2, -1)) for m in (x[0], x[0][..., ::-1]) for k in range(4)]
    got = [symmetry_numpy(x, np.array([[t, fw, fh]]))[0] for t in (0, 1) for fw in (0, 1) for fh in (0, 1)]
    for ref in d4:
        assert sum(np.array_equal(ref, g) for g in got) == 1
    with pytest.raises(ValueError, match="square"):
        symmetry_numpy(np.zeros((1, 1, 4, 5)), np.zeros((1, 3)))


def test_symmetries_do_not_depend_on_the_number_of_ranks():
    full = draw_symmetries(3, 2, 5, 8)
    assert full.shape == (8, 3) and set(np.unique(full)) <= {0, 1}
    assert np.array_equal(full, draw_symmetries(3, 2, 5, 8))
    assert not np.array_equal(full, draw_symmetries(3, 2, 6, 8))  # another step, other draws (2^-24 chance)


# -- DALI pipeline (CPU) ------------------------------------------------------------------------------------------
def _d4_matches(raw: np.ndarray, aug: np.ndarray) -> set[int]:
    """Which of the 8 symmetries (independent np.rot90 construction) map ``raw [C,N,N]`` onto ``aug``."""
    d4 = [np.rot90(m, k, axes=(-2, -1)) for m in (raw, raw[..., ::-1]) for k in range(4)]
    return {i for i, m in enumerate(d4) if np.array_equal(m, aug)}


@needs_dali
def test_dali_augmentation_same_symmetry_for_all_sky_maps_and_equal_to_torch_path(tiny_dataset):
    keys = ("maps_gas", "maps_stars", "phase_gas", "phase_stars", "labels")
    data = _dataset(tiny_dataset, "train", keys)
    src = BatchSource(data, keys, 16, 0, 1, seed=7, sky_keys=("maps_gas", "maps_stars"), augment=True)
    dali, torch_path = DaliLoader(src, num_workers=0), TorchLoader(src)
    seen = set()
    for a, b, step in zip(dali.epoch(0), torch_path.epoch(0), range(3)):
        raw = src.raw(0, step)
        for key in keys:
            assert torch.equal(a[key], b[key]), key  # DALI graph == NumPy reference, bit for bit
        for key in ("phase_gas", "phase_stars", "labels"):
            assert np.array_equal(a[key].numpy(), raw[key]), key  # untouched
        for i in range(16):
            stars = _d4_matches(raw["maps_stars"][i], a["maps_stars"][i].numpy())
            gas = _d4_matches(raw["maps_gas"][i], a["maps_gas"][i].numpy())
            assert stars & gas, (step, i, stars, gas)  # one symmetry explains both tracers' maps
            if len(stars) == 1:
                seen |= stars
    assert len(seen) >= 6  # 48 samples cover (nearly) all 8 symmetries; a no-op augmentation gives {0}


@needs_dali
def test_dali_noise_matches_reference_and_spares_mask_and_empty_pixels(tiny_dataset):
    keys = ("maps_stars", "labels")
    data = _dataset(tiny_dataset, "train", keys)
    src = BatchSource(data, keys, 8, 0, 1, seed=2, sky_keys=("maps_stars",), augment=True, noise=0.2)
    a = next(iter(DaliLoader(src, num_workers=0).epoch(0)))["maps_stars"].numpy()
    b = next(iter(TorchLoader(src).epoch(0)))["maps_stars"].numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # only the rms reduction order may differ
    flags = draw_symmetries(2, 0, 0, 8)
    clean = symmetry_numpy(src.raw(0, 0)["maps_stars"].astype(np.float32), flags)
    assert np.array_equal(a[:, -1], clean[:, -1])  # mask channel untouched
    empty = clean[:, -1:] == 0
    assert np.array_equal(np.where(np.broadcast_to(empty, a.shape), a, 0), np.zeros_like(a))
    rel = np.std(a[:, :-1] - clean[:, :-1]) / np.sqrt(np.mean(clean[:, :-1] ** 2))
    assert 0.02 < rel < 0.3  # noise is present, at roughly the requested relative level (masked)
    plain = apply_numpy({"maps_stars": clean}, ("maps_stars",), np.zeros((8, 3), np.uint8), 0.0, None)
    assert np.array_equal(plain["maps_stars"], clean)


@needs_dali
def test_dali_pipeline_refuses_out_of_order_epochs(tiny_dataset):
    data = _dataset(tiny_dataset, "train", ("labels",))
    loader = DaliLoader(BatchSource(data, ("labels",), 16, 0, 1, seed=0), start_epoch=2, start_step=3,
                        num_workers=0)
    with pytest.raises(ValueError, match="positioned at epoch 2 step 3"):
        next(iter(loader.epoch(0)))
    assert len(list(loader.epoch(2, 3))) == loader.steps_per_epoch - 3
    assert len(list(loader.epoch(3))) == loader.steps_per_epoch


WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from galmass.datasets import ShardedDataset
    from hpc.dali_loader import BatchSource, DaliLoader, TorchLoader
    from hpc.launchers import detect_launcher

    if __name__ == "__main__":  # DALI's parallel workers may re-import this file
        path, out, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
        env = detect_launcher()
        data = ShardedDataset(path, None, ("maps_stars",), verify=False, meta=True)
        keys = ("maps_stars", "galaxy_id", "projection")
        src = BatchSource(data, keys, batch, env.rank, env.world_size, seed=11)
        dali = DaliLoader(src, num_workers=2)  # parallel external_source, 2 worker processes per rank
        res = {"rank": env.rank, "world": env.world_size, "dali": [], "torch": []}
        for epoch in range(2):
            for name, loader in (("dali", dali), ("torch", TorchLoader(src))):
                res[name].append([[[int(g), int(p)] for g, p in zip(b["galaxy_id"], b["projection"])]
                                  for b in loader.epoch(epoch)])
        json.dump(res, open(f"{out}/rank{env.rank}.json", "w"))
""")


@pytest.mark.slow
@needs_dali
def test_two_rank_torchrun_dali_over_unequal_shards(tiny_dataset, tmp_path):
    # All splits together: train shards hold 16 projections, val/test shards 8 -> shards of unequal size.
    data = _dataset(tiny_dataset, None, ("labels",), meta=True)
    sizes = {s["n"] for s in data.shards}
    assert len(sizes) > 1, sizes
    ids = list(zip(data.read_all("meta/galaxy_id").tolist(), data.read_all("meta/projection").tolist()))
    n, batch = len(ids), 20
    assert len(set(ids)) == n and n % batch != 0  # padding is exercised
    steps = -(-n // batch)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    run_cmd([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
             str(tiny_dataset), str(tmp_path), str(batch)], env_extra=ONE_THREAD, timeout=300)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]

    # The 1-rank order of global batches, for the same seed (independent of DALI).
    one = BatchSource(_dataset(tiny_dataset, None, ("labels",), meta=True), ("galaxy_id", "projection"), batch, 0,
                      1, seed=11)
    for epoch in range(2):
        per_rank = [r["dali"][epoch] for r in ranks]
        assert [len(p) for p in per_rank] == [steps, steps]  # equal step counts: no collective can hang
        for r in ranks:
            assert r["dali"][epoch] == r["torch"][epoch]  # same samples, same order in both paths
        seen = [tuple(s) for p in per_rank for b in p for s in b]
        assert all(len(b) == batch // 2 for p in per_rank for b in p)
        counts = Counter(seen)
        assert set(counts) == set(ids)  # union = data set
        assert sum(c - 1 for c in counts.values()) == steps * batch - n  # duplicates = stated padding only
        assert max(counts.values()) <= 2
        for step in range(steps):  # rank slices concatenate to the 1-rank global batch
            want = one.batch(epoch, step)
            assert per_rank[0][step] + per_rank[1][step] == [[int(g), int(p)] for g, p in
                                                             zip(want["galaxy_id"], want["projection"])]
    assert ranks[0]["dali"][0] != ranks[0]["dali"][1]  # the order changes between epochs


def test_dali_loader_without_dali_fails_with_hint(tiny_dataset, tmp_path):
    # A regular package named `nvidia` earlier on the path hides the nvidia.* namespace package (and DALI).
    shadow = tmp_path / "shadow" / "nvidia"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    run = tmp_path / "run"
    proc = run_cmd([sys.executable, "-m", "galmass.train", *tiny_data_args(tiny_dataset), f"--train.run_dir={run}",
                    *TINY_MODEL, *TINY_TRAIN, "--train.loader=dali"], check=False,
                   env_extra={"PYTHONPATH": f"{tmp_path / 'shadow'}:{REPO}"})
    assert proc.returncode == 2, proc.stderr
    assert "DALI is not installed" in proc.stderr and "HINT" in proc.stderr and "nvidia-dali" in proc.stderr
    assert not run.exists()


# -- chunk-level shuffle and run-wise reads (no DALI needed) -------------------------------------------------------
def test_block_shuffle_is_a_permutation_of_whole_blocks():
    from hpc.sampler import GlobalBatchSampler, epoch_seed

    s = GlobalBatchSampler(103, 20, 0, 1, seed=4, block=8)
    s.set_epoch(3)
    perm = s.permutation().numpy()
    assert sorted(perm.tolist()) == list(range(103))
    starts = perm[np.flatnonzero(np.r_[True, np.diff(perm) != 1])]
    assert set(starts.tolist()) <= set(range(0, 103, 8))  # every run starts at a block boundary
    assert not np.array_equal(perm, np.arange(103))
    # block=1 is the plain sample shuffle (the order of runs made before this option existed).
    g = torch.Generator().manual_seed(epoch_seed(4, 3))
    s1 = GlobalBatchSampler(103, 20, 0, 1, seed=4)
    s1.set_epoch(3)
    assert torch.equal(s1.permutation(), torch.randperm(103, generator=g))
    with pytest.raises(ValueError, match="block"):
        GlobalBatchSampler(10, 2, 0, 1, seed=0, block=0)


class _Recorder:
    """In-memory data set that records the index arrays it is asked for."""

    def __init__(self, n: int) -> None:
        self.values = np.random.default_rng(0).normal(size=(n, 3))
        self.calls: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.values)

    def get_batch(self, indices):
        self.calls.append(np.asarray(indices))
        return {"x": self.values[np.asarray(indices)]}


def test_batch_source_reads_each_batch_once_in_sampler_order():
    data = _Recorder(50)
    src = BatchSource(data, ("x",), 16, 1, 2, seed=3, block=4)  # rank 1 of 2; 4 steps, the last one padded
    for step in range(src.steps_per_epoch):
        data.calls.clear()
        idx = src.indices(0, step)
        got = src.raw(0, step)["x"]
        np.testing.assert_array_equal(got, data.values[idx])  # sampler order, duplicates included
        # one call with the whole rank batch: the reader (ShardedDataset) turns it into slice reads
        assert len(data.calls) == 1 and np.array_equal(data.calls[0], idx)
