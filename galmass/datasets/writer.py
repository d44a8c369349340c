"""Write the mock suites as a sharded HDF5 dataset with a manifest (``galmass mock``).

Determinism: every galaxy is drawn from ``SeedSequence([seed, crc32(suite), crc32(feedback), index])`` alone and
HDF5 object timestamps are switched off, so the same config gives bit-identical shards whatever the number of
worker processes or the order in which shards finish.

Resumability: each shard is written to a temporary file and renamed, so a shard file that exists is complete. An
interrupted generation rerun with the same config keeps finished shards (after checking they open) and writes only
the missing ones; the manifest is written last.

Job arrays: ``generate_dataset(cfg, task_id=I, num_tasks=N)`` (``galmass mock --task-id I --num-tasks N``) writes
only the shards with index % N == I and no manifest; ``generate_dataset(cfg, merge=True)`` (``galmass mock
--merge``) checks that all planned shards exist and match the plan, then writes the manifest. Because each shard
depends on its index and the config alone, the result is bit-identical to a single-process run (tested).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from galmass import __version__
from galmass.config import DataConfig, config_to_dict
from galmass.datasets.schema import MANIFEST, SCALAR_NAMES, SCHEMA_VERSION, shard_name
from galmass.physics.constants import G, LOG_R_GRID, RADII_FACTORS
from hpc.atomic import atomic_path, atomic_write_json

__all__ = ["ShardTask", "plan_shards", "write_shard", "write_shard_file", "generate_dataset", "sha256_file",
           "galaxy_seed", "normalisation_stats"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ShardTask:
    """One shard to write: whole galaxies of one suite, feedback model and split."""

    index: int
    suite: str
    feedback: str
    split: str
    galaxy_indices: tuple[int, ...]
    """Indices of the galaxies within their suite × feedback cell."""
    galaxy_ids: tuple[int, ...]
    """Dataset-wide galaxy identifiers."""


def _code(name: str) -> int:
    # A stable hash (not Python's salted hash) so seeds do not depend on list order or the interpreter.
    return zlib.crc32(name.encode())


def galaxy_seed(seed: int, suite: str, feedback: str, index: int) -> np.random.SeedSequence:
    """The seed sequence that alone determines galaxy ``index`` of a suite × feedback cell."""
    return np.random.SeedSequence([seed, _code(suite), _code(feedback), index])


def _split_of_galaxies(cfg: DataConfig, suite: str, feedback: str) -> dict[str, list[int]]:
    n = cfg.galaxies_per_cell
    order = np.random.default_rng([cfg.seed, _code(suite), _code(feedback), 99]).permutation(n)
    n_test = int(round(n * cfg.test_fraction))
    n_val = int(round(n * cfg.val_fraction))
    if n - n_test - n_val < 1 or (cfg.test_fraction > 0 and n_test < 1) or (cfg.val_fraction > 0 and n_val < 1):
        raise ValueError(
            f"data.galaxies_per_cell={n} is too small for val_fraction={cfg.val_fraction}, "
            f"test_fraction={cfg.test_fraction}: every split needs at least one galaxy. HINT: raise galaxies_per_cell."
        )
    return {
        "test": sorted(order[:n_test].tolist()),
        "val": sorted(order[n_test : n_test + n_val].tolist()),
        "train": sorted(order[n_test + n_val :].tolist()),
    }


def plan_shards(cfg: DataConfig) -> list[ShardTask]:
    """All shards of the dataset, in a fixed order (suite, feedback, split, galaxy)."""
    per_shard = max(1, cfg.shard_size // cfg.projections)
    tasks: list[ShardTask] = []
    for si, suite in enumerate(cfg.suites):
        for fi, feedback in enumerate(cfg.feedbacks):
            cell = si * len(cfg.feedbacks) + fi
            for split, gals in _split_of_galaxies(cfg, suite, feedback).items():
                for start in range(0, len(gals), per_shard):
                    chunk = tuple(gals[start : start + per_shard])
                    ids = tuple(cell * cfg.galaxies_per_cell + g for g in chunk)
                    tasks.append(ShardTask(len(tasks), suite, feedback, split, chunk, ids))
    return tasks


def sha256_file(path: str | Path, block: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def _observe_task(task: ShardTask, cfg: DataConfig) -> tuple[dict[str, np.ndarray], list]:
    # Imported here so the writer module stays light for the reader and the CLI.
    from galmass.mocks.galaxy import PARAM_NAMES, draw_galaxy
    from galmass.mocks.observe import observe_galaxy
    from galmass.mocks.suites import load_feedback, load_suite

    suite, feedback = load_suite(task.suite), load_feedback(task.feedback)
    parts: list[dict[str, np.ndarray]] = []
    galaxies = []
    for g_index, g_id in zip(task.galaxy_indices, task.galaxy_ids):
        draw_seq, observe_seq = galaxy_seed(cfg.seed, task.suite, task.feedback, g_index).spawn(2)
        galaxy = draw_galaxy(suite, feedback, draw_seq)
        obs = observe_galaxy(galaxy, cfg, np.random.default_rng(observe_seq))
        obs["galaxy_id"] = np.full(len(obs["labels"]), g_id, dtype=np.int64)
        parts.append(obs)
        galaxies.append((g_id, galaxy.log_mass_profile(), galaxy.params_vector()))
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return data, [galaxies, list(PARAM_NAMES)]


def write_shard(task: ShardTask, cfg: DataConfig, directory: str | Path) -> dict[str, Any]:
    """Generate the galaxies of ``task`` and write them as one shard (atomically). Returns its manifest entry."""
    directory = Path(directory)
    path = directory / shard_name(task.index)
    data, (galaxies, param_names) = _observe_task(task, cfg)
    for key, value in data.items():
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise ValueError(f"shard {path.name}: non-finite values in '{key}' (galaxies {task.galaxy_ids})")
    write_shard_file(path, data, galaxies, param_names, suite=task.suite, feedback=task.feedback,
                     split=task.split, dtype=cfg.dtype)
    return _entry(task, path, int(len(data["labels"])))


def write_shard_file(
    path: str | Path,
    data: dict[str, np.ndarray],
    galaxies: list[tuple[int, np.ndarray, np.ndarray]],
    param_names: list[str],
    *,
    suite: str,
    feedback: str,
    split: str,
    dtype: str = "float32",
) -> None:
    """Write one shard (schema in :mod:`galmass.datasets.schema`) atomically and bit-reproducibly.

    ``data`` holds the per-sample arrays of :data:`galmass.mocks.observe.OBSERVATION_KEYS` plus "galaxy_id";
    ``galaxies`` is a list of (id, log10 M(<r) on LOG_R_GRID [Msun], parameter vector) in ``param_names`` order.
    Used by ``galmass mock`` and ``galmass ingest`` alike, so both produce the same schema.
    """
    path = Path(path)
    map_dtype = np.dtype(dtype)
    with atomic_path(path) as tmp:
        # track_times=False: HDF5 otherwise stamps each object with its creation time, breaking bit-identity.
        with h5py.File(tmp, "w", libver=("earliest", "v110"), track_order=False) as fh:
            fh.attrs["schema_version"] = SCHEMA_VERSION
            fh.attrs["suite"] = suite
            fh.attrs["feedback"] = feedback
            fh.attrs["split"] = split
            for key in ("maps_stars", "maps_gas", "phase_stars", "phase_gas"):
                arr = data[key].astype(map_dtype)
                fh.create_dataset(key, data=arr, chunks=(1,) + arr.shape[1:], track_times=False)
            fh.create_dataset("scalars", data=data["scalars"].astype(np.float32), track_times=False)
            fh["scalars"].attrs["names"] = list(SCALAR_NAMES)
            fh.create_dataset("labels", data=data["labels"].astype(np.float32), track_times=False)
            fh["labels"].attrs["radii_factors"] = RADII_FACTORS
            meta = fh.create_group("meta", track_order=False)
            meta.create_dataset("galaxy_id", data=data["galaxy_id"], track_times=False)
            meta.create_dataset("projection", data=data["projection"].astype(np.int32), track_times=False)
            meta.create_dataset("los", data=data["los"].astype(np.float32), track_times=False)
            meta.create_dataset("n_stars", data=data["n_stars"].astype(np.int32), track_times=False)
            gal = fh.create_group("galaxies", track_order=False)
            gal.create_dataset("id", data=np.array([g[0] for g in galaxies], dtype=np.int64), track_times=False)
            # LOG_R_GRID holds radii [kpc] on a log-spaced grid; the file stores their log10.
            gal.create_dataset("log_r", data=np.log10(np.asarray(LOG_R_GRID, dtype=np.float64)), track_times=False)
            gal.create_dataset(
                "log_mass", data=np.stack([g[1] for g in galaxies]).astype(np.float64), track_times=False
            )
            gal.create_dataset("params", data=np.stack([g[2] for g in galaxies]).astype(np.float64), track_times=False)
            gal["params"].attrs["names"] = param_names


def _entry(task: ShardTask, path: Path, n: int) -> dict[str, Any]:
    return {
        "file": path.name,
        "n": n,
        "split": task.split,
        "suite": task.suite,
        "feedback": task.feedback,
        "galaxy_ids": list(task.galaxy_ids),
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
    }


def _existing_entry(task: ShardTask, directory: Path) -> dict[str, Any] | None:
    """Manifest entry of a shard a previous (interrupted) run finished, or None if it must be (re)written."""
    path = directory / shard_name(task.index)
    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as fh:
            ids = fh["galaxies/id"][:].tolist()
            n = int(fh["labels"].shape[0])
            if ids != list(task.galaxy_ids) or fh.attrs["split"] != task.split:
                return None
    except Exception:  # a file we cannot read is rewritten, never trusted
        return None
    return _entry(task, path, n)


def _normalisation(directory: Path, entries: list[dict[str, Any]], split: str = "train") -> dict[str, Any]:
    """Mean/std of the scalar inputs and of the scale-free labels over one split (TRAIN for mocks)."""
    scalars, labels = [], []
    for e in entries:
        if e["split"] == split:
            with h5py.File(directory / e["file"], "r") as fh:
                scalars.append(fh["scalars"][:].astype(np.float64))
                labels.append(fh["labels"][:].astype(np.float64))
    s, y = np.concatenate(scalars), np.concatenate(labels)
    log_g = np.log10(G)

    def stats(a: np.ndarray) -> dict[str, list[float]]:
        return {"mean": a.mean(0).tolist(), "std": np.maximum(a.std(0), 1e-6).tolist(),
                "min": a.min(0).tolist(), "max": a.max(0).tolist()}

    # y = log10 M − log10(v² R_h / G): mass in units of the virial-like scale (DESIGN §1).
    return {
        "scalars": stats(s),
        "y_stars": stats(y - (2 * s[:, 1:2] + s[:, 0:1] - log_g)),
        "y_gas": stats(y - (2 * s[:, 2:3] + s[:, 0:1] - log_g)),
    }


normalisation_stats = _normalisation
"""Public alias: normalisation statistics of the shards of one split (used by ``galmass ingest``)."""


def generate_dataset(
    cfg: DataConfig,
    workers: int | None = None,
    progress: bool = True,
    *,
    task_id: int | None = None,
    num_tasks: int | None = None,
    merge: bool = False,
) -> Path:
    """Generate (or finish generating) the dataset described by ``cfg`` in ``cfg.path``; returns the manifest path.

    A complete dataset with the same config is left untouched; one with a different config is an error (never
    overwritten).

    Array mode (e.g. a SLURM job array): with ``num_tasks`` = N and ``task_id`` = I (0 <= I < N) only the shards
    with index % N == I are written (each shard is fully determined by its index, so the union of the N tasks is
    bit-identical to a single-process run) and no manifest is written; the return value is then the dataset
    directory. ``merge=True`` afterwards checks that every planned shard exists and matches the plan, and writes
    the manifest (it generates nothing; missing shards are an error naming them).
    """
    if (task_id is None) != (num_tasks is None):
        raise ValueError(f"give task_id and num_tasks together, got task_id={task_id}, num_tasks={num_tasks}. "
                         "HINT: --task-id $SLURM_ARRAY_TASK_ID --num-tasks $SLURM_ARRAY_TASK_COUNT")
    if num_tasks is not None:
        if merge:
            raise ValueError("merge=True writes the manifest of finished array tasks; it takes no task_id/num_tasks")
        if not (num_tasks >= 1 and 0 <= task_id < num_tasks):
            raise ValueError(f"need num_tasks >= 1 and 0 <= task_id < num_tasks, got task_id={task_id}, "
                             f"num_tasks={num_tasks}. HINT: SLURM array indices start at 0 with --array=0-(N-1)")
    directory = Path(cfg.path)
    manifest_path = directory / MANIFEST
    wanted = config_to_dict(cfg)
    wanted.pop("workers")
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if old.get("config") == wanted:
            return manifest_path if num_tasks is None else directory
        diff = sorted(k for k in wanted if old.get("config", {}).get(k) != wanted[k])
        raise FileExistsError(
            f"{manifest_path} holds a dataset made with a different config (differs in: {', '.join(diff)}). "
            "HINT: choose another data.path, or delete that directory to regenerate."
        )
    # Validate the recipes before any work (strict YAML: a typo fails here, naming the file).
    from galmass.mocks.suites import load_feedback, load_suite

    suite_specs = {s: dataclasses.asdict(load_suite(s)) for s in cfg.suites}
    feedback_specs = {f: dataclasses.asdict(load_feedback(f)) for f in cfg.feedbacks}
    directory.mkdir(parents=True, exist_ok=True)
    tasks = plan_shards(cfg)
    mine = tasks if num_tasks is None else [t for t in tasks if t.index % num_tasks == task_id]
    entries: dict[int, dict[str, Any]] = {}
    todo = []
    for task in mine:
        entry = _existing_entry(task, directory)
        if entry is None:
            todo.append(task)
        else:
            entries[task.index] = entry
    if merge and todo:
        names = ", ".join(shard_name(t.index) for t in todo[:10]) + (" ..." if len(todo) > 10 else "")
        raise FileNotFoundError(
            f"{directory}: {len(todo)} of {len(tasks)} shards are missing or do not match the plan ({names}). "
            "HINT: rerun the array tasks (galmass mock --task-id I --num-tasks N) with the same config, then merge"
        )
    n_workers = workers if workers is not None else (cfg.workers or os.cpu_count() or 1)
    n_workers = max(1, min(n_workers, len(todo) or 1))
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(mine), initial=len(entries), desc="mock shards", unit="shard")
    if n_workers == 1:
        for task in todo:
            entries[task.index] = write_shard(task, cfg, directory)
            bar and bar.update()
    else:
        # spawn: workers must not inherit open HDF5 handles or torch thread pools (DESIGN §8, pitfall 3/5).
        with cf.ProcessPoolExecutor(n_workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(write_shard, t, cfg, directory): t for t in todo}
            for fut in cf.as_completed(futures):
                entries[futures[fut].index] = fut.result()
                bar and bar.update()
    bar and bar.close()
    if num_tasks is not None:
        return directory
    shard_entries = [entries[t.index] for t in tasks]
    counts = {s: sum(e["n"] for e in shard_entries if e["split"] == s) for s in SPLITS}
    counts.update({f"galaxies_{s}": sum(len(e["galaxy_ids"]) for e in shard_entries if e["split"] == s) for s in SPLITS})
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "galmass_version": __version__,
        "created_by": "galmass mock",
        "seed": cfg.seed,
        "config": wanted,
        "suites": list(cfg.suites),
        "feedbacks": list(cfg.feedbacks),
        "suite_specs": suite_specs,
        "feedback_specs": feedback_specs,
        "radii_factors": [float(f) for f in RADII_FACTORS],
        "scalar_names": list(SCALAR_NAMES),
        "npix": cfg.npix,
        "extent_rh": cfg.extent_rh,
        "vmax_sigma": cfg.vmax_sigma,
        "counts": counts,
        "shards": shard_entries,
        "normalisation": _normalisation(directory, shard_entries),
    }
    atomic_write_json(manifest_path, manifest)
    return manifest_path
