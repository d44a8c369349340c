"""Read and validate a sharded galmass dataset.

The reader never loads the whole dataset: it keeps an index (shard, row) per sample and reads each batch as a few
sorted slices per shard (contiguous reads were 3–8× faster than per-item reads on this machine kind). HDF5 files
are opened lazily in the process that reads them (a handle opened before a fork corrupts reads) and handles are
never pickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import h5py
import numpy as np

from galmass.datasets.integrity import repair_hint, sha256_file
from galmass.datasets.schema import MANIFEST, SAMPLE_KEYS, SCHEMA_VERSION

__all__ = ["DatasetError", "load_manifest", "verify_shards", "ShardedDataset", "TruthProfiles"]

_MANIFEST_KEYS = ("schema_version", "config", "shards", "normalisation", "radii_factors", "counts", "npix")
_SHARD_KEYS = ("file", "n", "split", "suite", "feedback", "galaxy_ids", "sha256")


class DatasetError(RuntimeError):
    """A dataset that is missing, inconsistent or corrupt; the message names the file (and dataset)."""


def load_manifest(directory: str | Path) -> dict[str, Any]:
    """Read ``manifest.json`` of a dataset directory and check its schema."""
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise DatasetError(f"{path}: no manifest. HINT: generate the dataset first with `galmass mock`.")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from None
    missing = [k for k in _MANIFEST_KEYS if k not in manifest]
    if missing:
        raise DatasetError(f"{path}: missing keys {missing}")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise DatasetError(
            f"{path}: schema version {manifest['schema_version']}, this galmass reads {SCHEMA_VERSION}. "
            "HINT: regenerate the dataset."
        )
    for i, shard in enumerate(manifest["shards"]):
        lacking = [k for k in _SHARD_KEYS if k not in shard]
        if lacking:
            raise DatasetError(f"{path}: shard entry {i} lacks {lacking}")
    return manifest


def verify_shards(directory: str | Path, entries: Iterable[dict[str, Any]], manifest: dict[str, Any] | None = None
                  ) -> None:
    """Check that each shard exists and matches its manifest sha256; raise DatasetError naming the file and, given
    the manifest, saying how to repair it."""
    hint = repair_hint(directory, manifest) if manifest is not None else "HINT: regenerate the dataset"
    for entry in entries:
        path = Path(directory) / entry["file"]
        if not path.exists():
            raise DatasetError(f"{path}: shard listed in the manifest is missing. {hint}")
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise DatasetError(
                f"{path}: checksum mismatch (sha256 {digest[:12]}…, manifest says {entry['sha256'][:12]}…): "
                f"the shard is corrupt or was modified. {hint}"
            )


class ShardedDataset:
    """Samples of one split of a dataset, read batch-wise from the HDF5 shards.

    Args:
        directory: dataset directory (shards + manifest.json).
        split: 'train', 'val' or 'test'; None means all splits.
        keys: sample datasets to read (subset of ``SAMPLE_KEYS``), e.g. ``("maps_stars", "phase_stars",
            "scalars", "labels")``.
        verify: check the sha256 of the split's shards once, here (not in every worker).
        valid_only: leave out samples with a flagged label (``meta/label_valid`` = 0, e.g. radii inside an ingested
            simulation's convergence radius); training and evaluation do so by default.

    ``get_batch(indices)`` returns a dict of arrays with a leading batch axis in the order of ``indices``.
    """

    def __init__(
        self,
        directory: str | Path,
        split: str | None,
        keys: Sequence[str] = SAMPLE_KEYS,
        verify: bool = True,
        meta: bool = False,
        valid_only: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.manifest = load_manifest(self.directory)
        unknown = [k for k in keys if k not in SAMPLE_KEYS]
        if unknown:
            raise ValueError(f"unknown sample keys {unknown}; HINT: choose from {SAMPLE_KEYS}")
        self.keys = tuple(keys)
        self.meta = meta
        self.split = split
        self.shards = [s for s in self.manifest["shards"] if split is None or s["split"] == split]
        if not self.shards:
            raise DatasetError(f"{self.directory}: no shards for split {split!r}")
        if verify:
            verify_shards(self.directory, self.shards, self.manifest)
        self._check_keys()
        counts = np.array([s["n"] for s in self.shards], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(counts)])
        self._handles: dict[int, h5py.File] = {}
        self._datasets: dict[tuple[int, str], h5py.Dataset] = {}
        self._pid = -1
        self._subset: np.ndarray | None = None
        if valid_only:
            valid = np.concatenate([self._read(i, "meta/label_valid", np.arange(sh["n"])).all(axis=1)
                                    for i, sh in enumerate(self.shards)])
            if not valid.any():
                raise DatasetError(f"{self.directory}: every sample of split {split!r} has a flagged label "
                                   "(meta/label_valid). HINT: use a better-resolved simulation, or opt in to "
                                   "unconverged labels")
            self._subset = None if valid.all() else np.flatnonzero(valid)
        self.n_flagged = 0 if self._subset is None else int(self._offsets[-1] - len(self._subset))
        """Samples left out because of flagged labels."""

    def _check_keys(self) -> None:
        """Every requested dataset exists in the first shard (a shard written by an older galmass may lack one)."""
        path = self.directory / self.shards[0]["file"]
        try:
            with h5py.File(path, "r") as fh:
                missing = [k for k in self.keys if k not in fh]
        except OSError as err:
            raise DatasetError(f"{path}: cannot open ({err})") from None
        if missing:
            raise DatasetError(f"{path}: no dataset {missing} (a damaged shard, or one written by an older galmass "
                               "before the dataset existed). HINT: regenerate the dataset (`galmass mock` into a new "
                               "data.path)")

    def __len__(self) -> int:
        return int(self._offsets[-1]) if self._subset is None else len(self._subset)

    @property
    def normalisation(self) -> dict[str, Any]:
        return self.manifest["normalisation"]

    # -- file handling -------------------------------------------------------------------------------------------
    def _file(self, i: int) -> h5py.File:
        if self._pid != os.getpid():  # first use in this process (e.g. a DataLoader worker): start afresh
            self._handles, self._datasets, self._pid = {}, {}, os.getpid()
        if i not in self._handles:
            path = self.directory / self.shards[i]["file"]
            try:
                # No HDF5 chunk cache: every sample is its own chunk and is read once per epoch, so the cache
                # (1 MiB per open dataset by default) never hits; kept per shard it made resident memory grow
                # with the number of shards (benchmarks/memory_per_rank.py).
                self._handles[i] = h5py.File(path, "r", rdcc_nbytes=0)
            except OSError as err:
                raise DatasetError(f"{path}: cannot open as HDF5 ({err})") from None
        return self._handles[i]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"], state["_datasets"], state["_pid"] = {}, {}, -1  # never pickle open handles
        return state

    def close(self) -> None:
        for fh in self._handles.values():
            fh.close()
        self._handles, self._datasets = {}, {}

    # -- reading -------------------------------------------------------------------------------------------------
    def _dataset(self, shard: int, name: str) -> h5py.Dataset:
        # Cached per process: h5py's name lookup costs more than reading a small slice.
        key = (shard, name)
        ds = self._datasets.get(key) if self._pid == os.getpid() else None
        if ds is None:
            ds = self._file(shard)[name]
            self._datasets[key] = ds
        return ds

    def _read(self, shard: int, name: str, rows: np.ndarray) -> np.ndarray:
        try:
            ds = self._dataset(shard, name)
            lo, hi = int(rows[0]), int(rows[-1]) + 1
            if hi - lo == len(rows):  # contiguous: one slice read
                return ds[lo:hi]
            # One slice over the span, then select: cheaper than HDF5 point selection for dense index sets.
            if hi - lo <= 4 * len(rows):
                return ds[lo:hi][rows - lo]
            # Sparse rows: one slice per contiguous run. h5py's fancy indexing (ds[rows]) builds a point
            # selection that was ~7x slower than this on this machine kind (benchmarks/results/hdf5_read.md).
            breaks = np.flatnonzero(np.diff(rows) != 1) + 1
            starts = np.concatenate([[0], breaks])
            ends = np.concatenate([breaks, [len(rows)]])
            return np.concatenate([ds[int(rows[a]) : int(rows[b - 1]) + 1] for a, b in zip(starts, ends)])
        except DatasetError:
            raise
        except Exception as err:  # h5py raises OSError/KeyError/ValueError for damaged files
            raise DatasetError(f"{self.directory / self.shards[shard]['file']}: dataset '{name}': {err}") from None

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Read samples ``indices`` (global within this split) as a dict of arrays in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices out of range [0, {len(self)})")
        if self._subset is not None:
            idx = self._subset[idx]
        shard_of = np.searchsorted(self._offsets, idx, side="right") - 1
        names = list(self.keys) + (["meta/galaxy_id", "meta/projection"] if self.meta else [])
        out: dict[str, np.ndarray] = {}
        for shard in np.unique(shard_of):
            pos = np.flatnonzero(shard_of == shard)  # where this shard's samples go in the batch
            rows, inverse = np.unique(idx[pos] - self._offsets[shard], return_inverse=True)  # sorted; padding repeats
            for name in names:
                arr = self._read(int(shard), name, rows)
                key = name.split("/")[-1]
                if key not in out:  # one output buffer per key, filled in place: no concatenate, no re-sort
                    out[key] = np.empty((len(idx),) + arr.shape[1:], dtype=arr.dtype)
                out[key][pos] = arr[inverse]
        return out

    def __getitem__(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        return self.get_batch(indices)

    def read_all(self, name: str) -> np.ndarray:
        """A small per-sample dataset (e.g. 'scalars', 'labels', 'meta/galaxy_id') over the whole split."""
        out = np.concatenate([self._read(i, name, np.arange(s["n"])) for i, s in enumerate(self.shards)])
        return out if self._subset is None else out[self._subset]


class TruthProfiles:
    """True enclosed-mass profiles of the galaxies of a dataset, for any radius (e.g. an estimator's)."""

    def __init__(self, dataset: ShardedDataset) -> None:
        ids, profiles = [], []
        log_r = None
        for i, _ in enumerate(dataset.shards):
            fh = dataset._file(i)
            ids.append(fh["galaxies/id"][:])
            profiles.append(fh["galaxies/log_mass"][:])
            log_r = fh["galaxies/log_r"][:]
        self.log_r = log_r
        self._row = {int(g): j for j, g in enumerate(np.concatenate(ids))}
        self.log_mass = np.concatenate(profiles)

    def log_mass_at(self, galaxy_id: np.ndarray, r_kpc: np.ndarray) -> np.ndarray:
        """log10 M_total(<r) [Msun] for each (galaxy_id[i], r_kpc[i, ...]) by linear interpolation in log–log."""
        rows = np.array([self._row[int(g)] for g in np.asarray(galaxy_id)])
        r = np.asarray(r_kpc, dtype=np.float64)
        flat = r.reshape(len(rows), -1)
        out = np.empty_like(flat)
        for i, row in enumerate(rows):
            out[i] = np.interp(np.log10(flat[i]), self.log_r, self.log_mass[row])
        return out.reshape(r.shape)
