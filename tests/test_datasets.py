"""Sharded HDF5 datasets: determinism, manifest, checksums, split by galaxy, batch reads."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from galmass.config import load_config
from galmass.datasets import DatasetError, ShardedDataset, load_manifest
from galmass.mocks.generate import generate_dataset, plan_shards

from conftest import TINY_DATA


def test_manifest_counts_and_galaxy_split(tiny_dataset):
    m = load_manifest(tiny_dataset)
    by_split = {s: set() for s in ("train", "val", "test")}
    for shard in m["shards"]:
        by_split[shard["split"]].update(shard["galaxy_ids"])
        with h5py.File(tiny_dataset / shard["file"], "r") as fh:
            assert fh["labels"].shape == (shard["n"], 10)
            assert set(np.unique(fh["meta/galaxy_id"][:])) == set(shard["galaxy_ids"])
            for key in ("maps_stars", "maps_gas", "phase_stars", "phase_gas", "scalars", "labels"):
                assert np.all(np.isfinite(fh[key][:])), key
    # projections of one galaxy never straddle splits
    assert not (by_split["train"] & by_split["test"]) and not (by_split["train"] & by_split["val"])
    assert not (by_split["val"] & by_split["test"])
    assert sum(len(v) for v in by_split.values()) == 2 * 2 * 6
    assert m["counts"]["train"] + m["counts"]["val"] + m["counts"]["test"] == 2 * 2 * 6 * 8
    norm = m["normalisation"]
    assert len(norm["scalars"]["mean"]) == 4 and len(norm["y_stars"]["mean"]) == 10


def test_same_seed_bit_identical_other_seed_differs(tiny_dataset, tmp_path):
    again = tmp_path / "again"
    cfg = load_config(None, TINY_DATA + [f"--data.path={again}"])
    generate_dataset(cfg.data, workers=2, progress=False)  # other worker count, same bytes
    a, b = load_manifest(tiny_dataset), load_manifest(again)
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    for s in a["shards"]:
        assert (tiny_dataset / s["file"]).read_bytes() == (again / s["file"]).read_bytes()
    # Only the seed changes: every galaxy (same suite, feedback and index, hence the same id) is drawn anew.
    other = load_config(None, TINY_DATA + [f"--data.path={tmp_path / 'other'}", "--data.seed=4"])
    generate_dataset(other.data, workers=1, progress=False)
    pa, pb = _params_by_galaxy(tiny_dataset), _params_by_galaxy(tmp_path / "other")
    assert pa.keys() == pb.keys()
    assert all(not np.array_equal(pa[g], pb[g]) for g in pa)


def _params_by_galaxy(directory) -> dict[int, np.ndarray]:
    out = {}
    for shard in load_manifest(directory)["shards"]:
        with h5py.File(directory / shard["file"], "r") as fh:
            out.update(zip(fh["galaxies/id"][:].tolist(), fh["galaxies/params"][:]))
    return out


def test_flipped_byte_names_the_file(tiny_dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_dataset, copy)
    shard = load_manifest(copy)["shards"][0]
    path = copy / shard["file"]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    split = shard["split"]
    with pytest.raises(DatasetError, match=shard["file"] + ".*checksum mismatch"):
        ShardedDataset(copy, split)


def test_damaged_dataset_error_names_file_and_dataset(tiny_dataset, tmp_path):
    copy = tmp_path / "copy2"
    shutil.copytree(tiny_dataset, copy)
    shard = load_manifest(copy)["shards"][0]
    with h5py.File(copy / shard["file"], "a") as fh:
        del fh["labels"]
    with pytest.raises(DatasetError, match=rf"{shard['file']}: no dataset \['labels'\].*damaged"):
        ShardedDataset(copy, shard["split"], verify=False)  # found when opened, before any batch
    data = ShardedDataset(copy, shard["split"], ("scalars",), verify=False)
    with h5py.File(copy / shard["file"], "a") as fh:
        del fh["scalars"]  # damaged after opening: the read names file and dataset
    with pytest.raises(DatasetError, match=f"{shard['file']}: dataset 'scalars'"):
        data.get_batch([0])


def test_get_batch_order_and_padding(tiny_dataset):
    data = ShardedDataset(tiny_dataset, "train", ("labels", "scalars"), meta=True)
    everything = data.read_all("labels")
    assert len(everything) == len(data)
    idx = np.array([len(data) - 1, 0, 5, 5, 17])
    batch = data.get_batch(idx)
    np.testing.assert_array_equal(batch["labels"], everything[idx])
    assert batch["galaxy_id"].shape == (5,)


def test_existing_dataset_with_other_config_is_refused(tiny_dataset):
    cfg = load_config(None, TINY_DATA + [f"--data.path={tiny_dataset}", "--data.projections=9"])
    with pytest.raises(DatasetError, match="projections"):
        generate_dataset(cfg.data, workers=1, progress=False)


def test_interrupted_generation_keeps_finished_shards(tiny_dataset, tmp_path):
    part = tmp_path / "part"
    shutil.copytree(tiny_dataset, part)
    (part / "manifest.json").unlink()
    victim = part / load_manifest(tiny_dataset)["shards"][1]["file"]
    victim.unlink()
    keep = part / load_manifest(tiny_dataset)["shards"][0]["file"]
    before = keep.stat().st_mtime_ns
    cfg = load_config(None, TINY_DATA + [f"--data.path={part}"])
    generate_dataset(cfg.data, workers=1, progress=False)
    assert keep.stat().st_mtime_ns == before  # not rewritten
    assert json.loads((part / "manifest.json").read_text())["shards"] == load_manifest(tiny_dataset)["shards"]


def test_plan_is_independent_of_suite_order():
    a = load_config(None, ["--data.suites=[compact,extended]"]).data
    b = load_config(None, ["--data.suites=[extended,compact]"]).data
    ga = {(t.suite, t.feedback, t.split, t.galaxy_indices) for t in plan_shards(a)}
    gb = {(t.suite, t.feedback, t.split, t.galaxy_indices) for t in plan_shards(b)}
    assert ga == gb


def test_scattered_batch_reads_use_slices_not_fancy_indexing(tiny_dataset, monkeypatch):
    """Sparse, dense and repeated indices give the right rows; h5py is only ever asked for slices."""
    import h5py as _h5py

    data = ShardedDataset(tiny_dataset, "train", ("maps_stars", "labels"))
    everything = {k: np.concatenate([data.get_batch(np.arange(s, min(s + 7, len(data))))[k]
                                     for s in range(0, len(data), 7)]) for k in ("maps_stars", "labels")}
    seen = []
    original = _h5py.Dataset.__getitem__

    def spy(self, key, *args, **kwargs):
        seen.append(key)
        return original(self, key, *args, **kwargs)

    monkeypatch.setattr(_h5py.Dataset, "__getitem__", spy)
    rng = np.random.default_rng(1)
    for idx in (rng.choice(len(data), 9, replace=False), np.array([3, 3, 40, 2, 90, 41, 3]), np.arange(20, 36)):
        batch = data.get_batch(idx)
        for k in everything:
            np.testing.assert_array_equal(batch[k], everything[k][idx])
    assert seen and all(isinstance(k, slice) for k in seen)


def test_shards_are_opened_without_a_chunk_cache(tiny_dataset):
    """A per-dataset HDF5 chunk cache kept for every open shard made memory grow with the number of shards."""
    data = ShardedDataset(tiny_dataset, "train", ("labels",))
    data.get_batch([0])
    assert data._file(0).id.get_access_plist().get_cache()[2] == 0  # rdcc_nbytes


def test_flagged_labels_are_left_out_on_request(tiny_dataset, tmp_path):
    copy = tmp_path / "flagged"
    shutil.copytree(tiny_dataset, copy)
    shard = next(s for s in load_manifest(copy)["shards"] if s["split"] == "train")
    with h5py.File(copy / shard["file"], "a") as fh:
        flags = fh["meta/label_valid"][:]
        assert flags.shape == (shard["n"], 10) and flags.all()  # the writer marks every mock label trusted
        flags[::2, 0] = 0  # e.g. the innermost radius inside a convergence radius, every other projection
        fh["meta/label_valid"][:] = flags
    everything = ShardedDataset(copy, "train", ("labels",), verify=False)
    kept = ShardedDataset(copy, "train", ("labels",), verify=False, valid_only=True)
    n_flagged = (shard["n"] + 1) // 2
    assert len(kept) == len(everything) - n_flagged == len(everything) - kept.n_flagged
    all_labels = everything.read_all("labels")
    keep_mask = np.ones(len(everything), bool)
    first = sum(s["n"] for s in load_manifest(copy)["shards"][: load_manifest(copy)["shards"].index(shard)]
                if s["split"] == "train")
    keep_mask[first : first + shard["n"] : 2] = False
    np.testing.assert_array_equal(kept.read_all("labels"), all_labels[keep_mask])
    np.testing.assert_array_equal(kept.get_batch([0, len(kept) - 1])["labels"], all_labels[keep_mask][[0, -1]])
