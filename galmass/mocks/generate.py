"""Generate the mock suites as a sharded HDF5 dataset (``galmass mock``).

Determinism: every galaxy is drawn from ``SeedSequence([seed, crc32(suite), crc32(feedback), index])`` alone and
the shard writer switches HDF5 timestamps off, so the same config gives bit-identical shards whatever the number
of worker processes, array tasks, or the order in which shards finish.

Nothing mixed, nothing lost:

* A dataset directory belongs to one data config. ``generation.json`` (written before the first shard) and every
  shard record its :func:`galmass.config.data_hash`; a rerun with another config into the same directory is
  refused, naming the keys that differ, whether or not the first run finished.
* Each finished shard gets a receipt ``.receipts/shard-NNNNN.json`` (its manifest entry with its sha256). A rerun
  keeps a shard only when its file matches its receipt; a shard without a receipt, or damaged, is regenerated
  (never trusted), so deleting the manifest cannot make a corrupt shard look good.
* Rerunning on a finished dataset checks every shard against the manifest and regenerates missing or damaged ones;
  by determinism they come back bit-identical (checked against the manifest's checksum).
* One process at a time per directory (:class:`hpc.lock.DirectoryLock`; array tasks lock per task), stale
  temporaries of killed writers are removed, and worker processes die with their parent.

Job arrays: ``generate_dataset(cfg, task_id=I, num_tasks=N)`` writes only the shards with index % N == I and no
manifest; ``generate_dataset(cfg, merge=True)`` checks that every planned shard has a valid receipt and writes the
manifest (it generates nothing).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import json
import multiprocessing as mp
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from galmass import __version__
from galmass.config import ConfigError, DataConfig, data_hash, data_identity
from galmass.datasets.integrity import manifest_hash, sha256_file
from galmass.datasets.reader import DatasetError
from galmass.datasets.schema import MANIFEST, shard_name
from galmass.datasets.writer import shard_entry, write_manifest, write_shard_file
from hpc.atomic import atomic_write_json, remove_stale_temporaries
from hpc.lock import DirectoryLock
from hpc.procs import die_with_parent

__all__ = ["ShardTask", "plan_shards", "write_shard", "generate_dataset", "galaxy_seed", "GENERATION_FILE"]

GENERATION_FILE = "generation.json"
RECEIPTS = ".receipts"


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
        raise ConfigError(
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


def _observe_task(task: ShardTask, cfg: DataConfig) -> tuple[dict[str, np.ndarray], list, list[str]]:
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
    return data, galaxies, list(PARAM_NAMES)


def write_shard(task: ShardTask, cfg: DataConfig, directory: str | Path) -> dict[str, Any]:
    """Generate the galaxies of ``task``, write them as one shard (atomically) and its receipt; returns its entry."""
    directory = Path(directory)
    path = directory / shard_name(task.index)
    data, galaxies, param_names = _observe_task(task, cfg)
    h = data_hash(cfg)
    write_shard_file(path, data, galaxies, param_names, suite=task.suite, feedback=task.feedback,
                     split=task.split, config_hash=h, dtype=cfg.dtype)
    entry = shard_entry(path, len(data["labels"]), split=task.split, suite=task.suite, feedback=task.feedback,
                        galaxy_ids=list(task.galaxy_ids), config_hash=h)
    (directory / RECEIPTS).mkdir(exist_ok=True)
    atomic_write_json(directory / RECEIPTS / f"{path.stem}.json", entry)
    return entry


# ------------------------------------------------------------------------------------------- named steps


def _check_array_args(task_id: int | None, num_tasks: int | None, merge: bool) -> None:
    if (task_id is None) != (num_tasks is None):
        raise ConfigError(f"give task_id and num_tasks together, got task_id={task_id}, num_tasks={num_tasks}. "
                          "HINT: --task-id $SLURM_ARRAY_TASK_ID --num-tasks $SLURM_ARRAY_TASK_COUNT")
    if num_tasks is not None:
        if merge:
            raise ConfigError("merge writes the manifest of finished array tasks; it takes no task_id/num_tasks")
        if not (num_tasks >= 1 and 0 <= task_id < num_tasks):
            raise ConfigError(f"need num_tasks >= 1 and 0 <= task_id < num_tasks, got task_id={task_id}, "
                              f"num_tasks={num_tasks}. HINT: SLURM array indices start at 0 with --array=0-(N-1)")


def _differing(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "; ".join(f"data.{k}: {old.get(k)!r} → {new.get(k)!r}" for k in keys)


def _claim_directory(directory: Path, cfg: DataConfig) -> dict[str, Any] | None:
    """Refuse a directory made with another config; record ours. Returns the manifest of a finished dataset."""
    wanted, h = data_identity(cfg), data_hash(cfg)
    manifest_path, gen_path = directory / MANIFEST, directory / GENERATION_FILE
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
            old_hash, old_cfg = manifest_hash(manifest), manifest["config"]
        except (json.JSONDecodeError, KeyError) as err:
            raise DatasetError(f"{manifest_path}: unreadable manifest ({err}). HINT: delete the directory to "
                               "regenerate it") from None
        if old_hash == h:
            return manifest
        raise DatasetError(f"{manifest_path} holds a dataset made with a different data config "
                           f"({_differing(old_cfg, wanted)}). HINT: choose another data.path, or delete that "
                           "directory to regenerate")
    if gen_path.exists():
        old = json.loads(gen_path.read_text())
        if old.get("config_hash") != h:
            raise DatasetError(
                f"{directory} holds shards of an unfinished generation with a different data config "
                f"({_differing(old.get('config', {}), wanted)}). Mixing them would give a dataset whose shards "
                "disagree with its manifest. HINT: rerun with the original config to finish it, or choose another "
                "data.path (or delete the directory)")
        return None
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(gen_path, {"config": wanted, "config_hash": h, "galmass_version": __version__})
    return None


def _receipt_entry(task: ShardTask, directory: Path, h: str) -> dict[str, Any] | None:
    """The entry of a shard a previous run finished, if its file matches its receipt; None → (re)generate."""
    path, receipt = directory / shard_name(task.index), directory / RECEIPTS / f"{shard_name(task.index)[:-3]}.json"
    if not path.exists() or not receipt.exists():
        return None  # a shard without a receipt is never trusted
    try:
        entry = json.loads(receipt.read_text())
    except json.JSONDecodeError:
        return None
    if entry.get("config_hash") != h or list(entry.get("galaxy_ids", [])) != list(task.galaxy_ids):
        raise DatasetError(f"{path}: made with another config or plan (receipt {receipt}). HINT: choose another "
                           "data.path, or delete the directory to regenerate")
    if sha256_file(path) != entry.get("sha256"):
        print(f"[galmass] {path.name} does not match its receipt (damaged): regenerating it", flush=True)
        return None
    return entry


def _generate(todo: list[ShardTask], cfg: DataConfig, directory: Path, workers: int,
              progress: bool, done: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """Write the shards of ``todo``, yielding (index, entry) as each finishes."""
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=done + len(todo), initial=done, desc="mock shards", unit="shard", disable=None)
    try:
        if workers == 1:
            for task in todo:
                yield task.index, write_shard(task, cfg, directory)
                bar and bar.update()
            return
        # spawn: workers must not inherit open HDF5 handles or torch thread pools; they die with this process.
        with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=die_with_parent) as pool:
            futures = {pool.submit(write_shard, t, cfg, directory): t for t in todo}
            for fut in cf.as_completed(futures):
                yield futures[fut].index, fut.result()
                bar and bar.update()
    finally:
        bar and bar.close()


def _repair(directory: Path, manifest: dict[str, Any], cfg: DataConfig, workers: int, progress: bool) -> None:
    """Regenerate missing or damaged shards of a finished dataset; they must come back bit-identical."""
    tasks, expected = plan_shards(cfg), manifest["shards"]  # the manifest lists the shards in plan order
    bad = [t for t, e in zip(tasks, expected)
           if not (directory / e["file"]).exists() or sha256_file(directory / e["file"]) != e["sha256"]]
    if not bad:
        return
    print(f"[galmass] {directory}: {len(bad)} shard(s) missing or damaged; regenerating them", flush=True)
    for index, entry in _generate(bad, cfg, directory, workers, progress, len(tasks) - len(bad)):
        if entry["sha256"] != expected[index]["sha256"]:
            raise DatasetError(
                f"{directory / shard_name(index)}: regenerated, but its checksum differs from the manifest's: this "
                "galmass/numpy build does not reproduce the dataset. HINT: regenerate the whole dataset into a new "
                "data.path")


@contextlib.contextmanager
def _locked(directory: Path, task_id: int | None, num_tasks: int | None) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    name = ".lock" if num_tasks is None else f".lock-task-{task_id}-of-{num_tasks}"
    with DirectoryLock(directory, "galmass mock", name=name):
        remove_stale_temporaries(directory)
        if (directory / RECEIPTS).is_dir():
            remove_stale_temporaries(directory / RECEIPTS)
        yield


def _recipes(cfg: DataConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    # Validate the recipes before any work (strict YAML: a typo fails here, naming the file).
    from galmass.mocks.suites import load_feedback, load_suite

    return ({s: dataclasses.asdict(load_suite(s)) for s in cfg.suites},
            {f: dataclasses.asdict(load_feedback(f)) for f in cfg.feedbacks})


def generate_dataset(cfg: DataConfig, workers: int | None = None, progress: bool = True, *,
                     task_id: int | None = None, num_tasks: int | None = None, merge: bool = False) -> Path:
    """Generate (finish, or repair) the dataset of ``cfg`` in ``cfg.path``; returns the manifest path (the directory
    for an array task). See the module docstring for what is checked and kept.

    Raises
    ------
    ConfigError
        Bad array arguments or recipes.
    DatasetError
        The directory belongs to another config; merge with shards missing; a repair that does not reproduce.
    hpc.lock.LockedError
        Another ``galmass mock`` is writing the same directory.
    """
    _check_array_args(task_id, num_tasks, merge)
    suite_specs, feedback_specs = _recipes(cfg)
    directory = Path(cfg.path)
    n_workers = workers if workers is not None else (cfg.workers or os.cpu_count() or 1)
    with _locked(directory, task_id, num_tasks):
        finished = _claim_directory(directory, cfg)
        if finished is not None:
            if num_tasks is None:
                _repair(directory, finished, cfg, max(1, n_workers), progress)
            return directory / MANIFEST if num_tasks is None else directory
        tasks = plan_shards(cfg)
        mine = tasks if num_tasks is None else [t for t in tasks if t.index % num_tasks == task_id]
        h = data_hash(cfg)
        entries = {t.index: e for t in mine if (e := _receipt_entry(t, directory, h)) is not None}
        todo = [t for t in mine if t.index not in entries]
        if merge and todo:
            names = ", ".join(shard_name(t.index) for t in todo[:10]) + (" ..." if len(todo) > 10 else "")
            raise DatasetError(
                f"{directory}: {len(todo)} of {len(tasks)} shards are missing or damaged ({names}). HINT: rerun the "
                "array tasks (galmass mock --task-id I --num-tasks N) with the same config, then merge")
        entries.update(_generate(todo, cfg, directory, max(1, min(n_workers, len(todo) or 1)), progress,
                                 len(entries)))
        if num_tasks is not None:
            return directory
        return write_manifest(
            directory, [entries[t.index] for t in tasks], created_by="galmass mock", config=data_identity(cfg),
            config_hash=h, npix=cfg.npix, extent_rh=cfg.extent_rh, vmax_sigma=cfg.vmax_sigma, seed=cfg.seed,
            suites=list(cfg.suites), feedbacks=list(cfg.feedbacks), suite_specs=suite_specs,
            feedback_specs=feedback_specs)
