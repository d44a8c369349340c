"""The unlabelled target domain of ``train.adapt``: a galmass dataset, or real star catalogues.

Domain adaptation (``train.adapt: mmd``) aligns the network's embeddings of labelled training maps with those of
unlabelled maps of the domain it will be applied to. That domain may be another simulation suite (a dataset
directory: its train split) or the galaxies a user actually observes: a star catalogue in the format of
``galmass predict`` (one CSV with a ``galaxy`` column, or a directory of CSVs; :mod:`galmass.catalogue`), turned
into model inputs exactly as ``predict`` does (:func:`galmass.maps.observation_to_sample` with the training data's
map geometry and observer steps), held in memory.

A handful of galaxies cannot fill a batch, so each catalogue contributes ``realisations`` inputs: membership draws
by ``p_member`` when it has any uncertain members (as ``predict`` marginalises over them), otherwise copies — the
MMD then weighs every observed galaxy equally.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from galmass.catalogue import Catalogue, CatalogueError, read_catalogues
from galmass.config import ConfigError, DataConfig
from galmass.datasets import DatasetError, ShardedDataset
from galmass.datasets.schema import MANIFEST
from galmass.maps import observation_to_sample

__all__ = ["CatalogueMaps", "catalogue_maps", "target_data"]

MIN_MEMBERS = 20
"""Fewest stars a membership draw may keep (below it the likely members, p_member >= 0.5, are used instead)."""


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


def _observe(cat: Catalogue, data: DataConfig, keep: NDArray[np.bool_]) -> dict[str, Any]:
    return observation_to_sample(cat.x_kpc[keep], cat.y_kpc[keep], cat.v_kms[keep], cat.v_err_kms[keep],
                                 npix=data.npix, extent_rh=data.extent_rh, vmax_sigma=data.vmax_sigma,
                                 membership_clip=data.membership_clip, recentre=data.recentre)


def catalogue_maps(path: str | Path, data: DataConfig, keys: Sequence[str], min_samples: int,
                   seed: int = 0) -> CatalogueMaps:
    """Model inputs (``keys``) of every galaxy in the star catalogue(s) at ``path``, at least ``min_samples`` in all.

    Raises CatalogueError naming the file, galaxy and column for a catalogue galmass cannot use (as ``predict``).
    """
    rng = np.random.default_rng(seed)
    cats = read_catalogues(path, "stars", rng=rng)
    k = max(1, math.ceil(min_samples / len(cats)))
    samples = []
    for name, cat in cats.items():
        likely = cat.p_member >= 0.5
        uncertain = bool(np.any((cat.p_member > 0) & (cat.p_member < 1)))
        for _ in range(k):
            keep = rng.random(cat.v_kms.size) < cat.p_member if uncertain else likely
            if np.count_nonzero(keep) < MIN_MEMBERS:
                keep = likely
            try:
                samples.append(_observe(cat, data, keep))
            except ValueError as err:
                raise CatalogueError(f"{path}: galaxy {name!r} cannot be observed: {err}") from None
    return CatalogueMaps(samples, keys, list(cats))


def target_data(path: str | Path, data: DataConfig, keys: Sequence[str], min_samples: int, seed: int = 0
                ) -> ShardedDataset | CatalogueMaps:
    """The target domain at ``path``: a dataset directory (its train split) or star catalogue(s) (module doc)."""
    p = Path(path)
    if (p / MANIFEST).exists():
        return ShardedDataset(p, "train", keys, valid_only=False)
    if not p.exists() or (p.is_dir() and not any(p.glob("*.csv"))):
        raise ConfigError(f"train.adapt_target={path}: neither a dataset directory (no {MANIFEST}) nor a star "
                          "catalogue (a .csv, or a directory of them). HINT: give `galmass mock` output or the "
                          "catalogues you will predict on")
    if any(key.endswith("_gas") for key in keys):
        raise ConfigError(f"train.adapt_target={path}: catalogues give stellar inputs only, but this model reads "
                          f"{list(keys)}. HINT: use a dataset directory as the target of a gas model")
    try:
        return catalogue_maps(p, data, keys, min_samples, seed)
    except CatalogueError as err:
        raise DatasetError(str(err)) from None
