"""Write shards and manifests of the sharded HDF5 dataset (schema: :mod:`galmass.datasets.schema`).

The dataset layer only writes what it is given: the mock generator (``galmass.mocks.generate``) and the snapshot
ingest (``galmass.snapshots.ingest``) both call these functions, so both produce exactly the same files.

Every shard is written atomically (temporary file, fsync, rename) and bit-reproducibly (HDF5 object timestamps
off), and carries the ``config_hash`` (:func:`galmass.config.data_hash`) of the data section that made it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from galmass import __version__
from galmass.datasets.integrity import sha256_file
from galmass.datasets.schema import (MANIFEST, OBSERVER_NAMES, SCALAR_NAMES, SCHEMA_VERSION, SUMMARY_NAMES,
                                     scalar_index)
from galmass.physics.constants import G, LOG_R_GRID, RADII_FACTORS
from hpc.atomic import atomic_path, atomic_write_json

__all__ = ["write_shard_file", "shard_entry", "normalisation_stats", "write_manifest", "SPLITS"]

SPLITS = ("train", "val", "test")


def write_shard_file(
    path: str | Path,
    data: dict[str, np.ndarray],
    galaxies: list[tuple[int, np.ndarray, np.ndarray]],
    param_names: list[str],
    *,
    suite: str,
    feedback: str,
    split: str,
    config_hash: str,
    dtype: str = "float32",
) -> None:
    """Write one shard atomically and bit-reproducibly.

    ``data`` holds the per-sample arrays of :data:`galmass.mocks.observe.OBSERVATION_KEYS` plus "galaxy_id";
    ``galaxies`` is a list of (id, log10 M(<r) on LOG_R_GRID [Msun], parameter vector) in ``param_names`` order;
    ``config_hash`` identifies the data config that made it. Non-finite values never reach the disk.
    """
    path = Path(path)
    for key, value in data.items():
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise ValueError(f"shard {path.name}: non-finite values in '{key}' (galaxies "
                             f"{sorted({int(g) for g in data['galaxy_id']})})")
    map_dtype = np.dtype(dtype)
    with atomic_path(path) as tmp:
        # track_times=False: HDF5 otherwise stamps each object with its creation time, breaking bit-identity.
        with h5py.File(tmp, "w", libver=("earliest", "v110"), track_order=False) as fh:
            for key, value in (("schema_version", SCHEMA_VERSION), ("suite", suite), ("feedback", feedback),
                               ("split", split), ("config_hash", config_hash)):
                fh.attrs[key] = value
            for key in ("maps_stars", "maps_gas", "phase_stars", "phase_gas"):
                arr = data[key].astype(map_dtype)
                fh.create_dataset(key, data=arr, chunks=(1,) + arr.shape[1:], track_times=False)
            fh.create_dataset("scalars", data=data["scalars"].astype(np.float32), track_times=False)
            fh["scalars"].attrs["names"] = list(SCALAR_NAMES)
            fh.create_dataset("summary_stars", data=data["summary_stars"].astype(np.float32), track_times=False)
            fh["summary_stars"].attrs["names"] = list(SUMMARY_NAMES)
            fh.create_dataset("observer", data=data["observer"].astype(np.float32), track_times=False)
            fh["observer"].attrs["names"] = list(OBSERVER_NAMES)
            fh.create_dataset("labels", data=data["labels"].astype(np.float32), track_times=False)
            fh["labels"].attrs["radii_factors"] = RADII_FACTORS
            _write_meta(fh, data)
            _write_galaxies(fh, galaxies, param_names)


def _write_meta(fh: h5py.File, data: dict[str, np.ndarray]) -> None:
    meta = fh.create_group("meta", track_order=False)
    for key, dtype in (("galaxy_id", np.int64), ("projection", np.int32), ("los", np.float32), ("n_stars", np.int32)):
        meta.create_dataset(key, data=data[key].astype(dtype), track_times=False)
    # Optional [n, 10] flags: 1 where a label is trustworthy (e.g. outside a simulation's convergence radius).
    valid = data.get("label_valid")
    if valid is None:
        valid = np.ones(data["labels"].shape, dtype=np.uint8)
    meta.create_dataset("label_valid", data=np.asarray(valid).astype(np.uint8), track_times=False)


def _write_galaxies(fh: h5py.File, galaxies: list[tuple[int, np.ndarray, np.ndarray]], param_names: list[str]) -> None:
    gal = fh.create_group("galaxies", track_order=False)
    gal.create_dataset("id", data=np.array([g[0] for g in galaxies], dtype=np.int64), track_times=False)
    # LOG_R_GRID holds radii [kpc] on a log-spaced grid; the file stores their log10.
    gal.create_dataset("log_r", data=np.log10(np.asarray(LOG_R_GRID, dtype=np.float64)), track_times=False)
    gal.create_dataset("log_mass", data=np.stack([g[1] for g in galaxies]).astype(np.float64), track_times=False)
    gal.create_dataset("params", data=np.stack([g[2] for g in galaxies]).astype(np.float64), track_times=False)
    gal["params"].attrs["names"] = param_names


def shard_entry(path: Path, n: int, *, split: str, suite: str, feedback: str, galaxy_ids: list[int],
                config_hash: str) -> dict[str, Any]:
    """The manifest entry of a written shard (its sha256 is computed here, from the file on disk)."""
    return {"file": path.name, "n": int(n), "split": split, "suite": suite, "feedback": feedback,
            "galaxy_ids": [int(g) for g in galaxy_ids], "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "config_hash": config_hash}


def normalisation_stats(directory: Path, entries: list[dict[str, Any]], split: str = "train") -> dict[str, Any]:
    """Mean/std/min/max of the scalar inputs and of the scale-free labels over one split (train for mocks).

    The labels are normalised as y = log10 M − log10(v² R_h / G), mass in units of the virial-like scale
    (Sarrato-Alós et al. 2025 feed the network scale-free data the same way), with v = σ★ or v_rms of the gas.
    """
    scalars, labels = [], []
    for e in entries:
        if e["split"] == split:
            with h5py.File(directory / e["file"], "r") as fh:
                scalars.append(fh["scalars"][:].astype(np.float64))
                labels.append(fh["labels"][:].astype(np.float64))
    s, y = np.concatenate(scalars), np.concatenate(labels)
    log_g = np.log10(G)
    rh = s[:, scalar_index("log10_rh_kpc")][:, None]

    def stats(a: np.ndarray, corr: bool = False) -> dict[str, Any]:
        out = {"mean": a.mean(0).tolist(), "std": np.maximum(a.std(0), 1e-6).tolist(),
               "min": a.min(0).tolist(), "max": a.max(0).tolist()}
        if corr:  # the correlation matrix (label whitening; the joint range check of galmass.predict)
            c = np.corrcoef(a.T) if len(a) > 1 else np.eye(a.shape[1])
            c = np.nan_to_num(c, nan=0.0)  # a constant column (no gas in the data) correlates with nothing
            np.fill_diagonal(c, 1.0)
            out["corr"] = c.tolist()
        return out

    summaries = np.concatenate([_read_split(directory, e, "summary_stars") for e in entries if e["split"] == split])
    observer = np.concatenate([_read_split(directory, e, "observer") for e in entries if e["split"] == split])
    return {
        "scalars": stats(s, corr=True),
        "summary_stars": stats(summaries),
        "observer": stats(observer),
        "y_stars": stats(y - (2 * s[:, [scalar_index("log10_sigma_stars_kms")]] + rh - log_g), corr=True),
        "y_gas": stats(y - (2 * s[:, [scalar_index("log10_vrms_gas_kms")]] + rh - log_g), corr=True),
    }


def _read_split(directory: Path, entry: dict[str, Any], key: str) -> np.ndarray:
    with h5py.File(directory / entry["file"], "r") as fh:
        return fh[key][:].astype(np.float64)


def write_manifest(directory: Path, entries: list[dict[str, Any]], *, created_by: str, config: dict[str, Any],
                   config_hash: str, npix: int, extent_rh: float, vmax_sigma: float, seed: int,
                   normalise_split: str = "train", **extra: Any) -> Path:
    """Write ``manifest.json`` (atomically, last: a dataset with a manifest is complete) and return its path.

    ``extra`` adds producer-specific blocks (suites and recipes for mocks, the snapshot source for ingest).
    """
    counts = {s: sum(e["n"] for e in entries if e["split"] == s) for s in SPLITS}
    counts.update({f"galaxies_{s}": sum(len(e["galaxy_ids"]) for e in entries if e["split"] == s) for s in SPLITS})
    manifest = {
        "schema_version": SCHEMA_VERSION, "galmass_version": __version__, "created_by": created_by, "seed": seed,
        "config": config, "config_hash": config_hash, **extra,
        "radii_factors": [float(f) for f in RADII_FACTORS], "scalar_names": list(SCALAR_NAMES),
        "npix": npix, "extent_rh": extent_rh, "vmax_sigma": vmax_sigma, "counts": counts, "shards": entries,
        "normalisation": normalisation_stats(directory, entries, split=normalise_split),
    }
    return atomic_write_json(directory / MANIFEST, manifest)
