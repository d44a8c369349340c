"""The unlabelled target domain of ``train.adapt``: a galmass dataset, or real star catalogues.

Domain adaptation (``train.adapt: mmd``) aligns the network's embeddings of labelled training maps with those of
unlabelled maps of the domain it will be applied to. That domain may be another simulation suite (a dataset
directory: its train split) or the galaxies a user actually observes: a star catalogue in the format of
``galmass predict`` (one CSV with a ``galaxy`` column, or a directory of CSVs; :mod:`galmass.catalogue`), turned
into model inputs by ``predict``'s own steps (:func:`galmass.predict.observe_catalogue` with the training data's
map geometry and observer steps), held in memory.

A handful of galaxies cannot fill a batch, so each catalogue contributes the same number of inputs: predict's
realisations (:func:`galmass.predict.realisations`: membership draws by ``p_member``, distance draws) when it has
uncertain members or distance, otherwise copies — the MMD then weighs every observed galaxy equally.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from galmass.catalogue import CatalogueError, read_catalogues
from galmass.config import ConfigError, DataConfig, config_to_dict
from galmass.datasets import DatasetError, ShardedDataset
from galmass.datasets.schema import MANIFEST
from galmass.observer import with_observer
from galmass.predict import Target, observe_catalogue, realisations

__all__ = ["CatalogueMaps", "catalogue_maps", "target_data"]


class CatalogueMaps:
    """Model inputs of observed catalogues, in memory: ``len`` and ``get_batch(indices)`` as a dataset has."""

    def __init__(self, samples: Sequence[dict[str, Any]], keys: Sequence[str], names: Sequence[str]) -> None:
        self.keys = tuple(keys)
        self.names = list(names)
        self.arrays = {k: np.stack([np.asarray(s[k], dtype=np.float32) for s in samples]) for k in self.keys}

    def __len__(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])

    def get_batch(self, indices: Sequence[int] | NDArray[np.int64]) -> dict[str, NDArray[np.float32]]:
        idx = np.asarray(indices, dtype=np.int64)
        return {k: v[idx] for k, v in self.arrays.items()}


def catalogue_maps(path: str | Path, data: DataConfig, keys: Sequence[str], min_samples: int,
                   seed: int = 0) -> CatalogueMaps:
    """Model inputs (``keys``) of every galaxy in the star catalogue(s) at ``path``, at least ``min_samples`` in all.

    Raises CatalogueError naming the file, galaxy and column for a catalogue galmass cannot use (as ``predict``).
    """
    rng = np.random.default_rng(seed)
    cats = read_catalogues(path, "stars", rng=rng)
    dc = config_to_dict(data)
    k = max(1, math.ceil(min_samples / len(cats)))
    samples = []
    for name, cat in cats.items():
        try:
            target = Target(cat, None, observe_catalogue(cat, None, dc, cat.p_member >= 0.5, 1.0))
            draws = realisations(target, dc, k, rng)  # only the nominal input when nothing is uncertain
            if "observer" in keys:  # what was done to the real catalogues is not stated here
                draws = with_observer(draws, (None, None))
        except ValueError as err:
            raise CatalogueError(f"{path}: galaxy {name!r} cannot be observed: {err}") from None
        samples += draws * (k // len(draws))
    return CatalogueMaps(samples, keys, list(cats))


def target_data(path: str | Path, data: DataConfig, keys: Sequence[str], min_samples: int, seed: int = 0,
                split: str = "train", option: str = "train.adapt_target=") -> ShardedDataset | CatalogueMaps:
    """The target domain at ``path``: a dataset directory (its ``split``, labels never read) or star catalogue(s)
    (module doc). ``option`` names where the path came from in error messages (``galmass population``: --target)."""
    p = Path(path)
    if (p / MANIFEST).exists():
        return ShardedDataset(p, split, keys, valid_only=False)
    if not p.exists() or (p.is_dir() and not any(p.glob("*.csv"))):
        raise ConfigError(f"{option}{path}: neither a dataset directory (no {MANIFEST}) nor a star "
                          "catalogue (a .csv, or a directory of them). HINT: give `galmass mock` output or the "
                          "catalogues you will predict on")
    if any(key.endswith("_gas") for key in keys):
        raise ConfigError(f"{option}{path}: catalogues give stellar inputs only, but this model reads "
                          f"{list(keys)}. HINT: use a dataset directory as the target of a gas model")
    try:
        return catalogue_maps(p, data, keys, min_samples, seed)
    except CatalogueError as err:
        raise DatasetError(str(err)) from None
