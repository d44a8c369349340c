"""Names and shapes of the sharded HDF5 dataset (one place, read by the writer, the reader and the docs).

Per shard ``shard-NNNNN.h5`` (all projections of whole galaxies of one suite, feedback model and split):

=====================  ================  ===========================================================
dataset                shape             meaning
=====================  ================  ===========================================================
maps_stars             [n, 4, H, W]      stars sky map: weight fraction, mean v_los [km/s], σ_los [km/s], mask
maps_gas               [n, 4, H, W]      the same for gas (mass-weighted)
phase_stars            [n, 1, H, W]      stars R/R_h – v_los/σ★ PDF
phase_gas              [n, 1, H, W]      gas R/R_h – v_los/v_rms PDF
scalars                [n, 4]            log10 R_h [kpc], log10 σ★ [km/s], log10 v_rms,gas [km/s], log10 N★
summary_stars          [n, 10]           scale-free summaries of the members (SUMMARY_NAMES)
observer               [n, 2]            what the observer states about the sample (OBSERVER_NAMES): its fraction of
                                         unresolved binaries and of foreground stars (the values a mock was drawn with)
labels                 [n, 10]           log10 M_total(< f R_h) [Msun], f = 0.6 … 2.4
meta/galaxy_id         [n] int64         galaxy identifier (unique in the dataset)
meta/projection        [n] int32         line-of-sight index
meta/los               [n, 3]            line-of-sight unit vector (galaxy frame)
meta/n_stars           [n] int32         observed stars
meta/label_valid       [n, 10] uint8     1 where the label is trusted (0: e.g. inside a simulation's convergence
                                         radius); such samples are left out of training and those labels of metrics
galaxies/id            [g] int64         galaxies in this shard
galaxies/log_mass      [g, K]            log10 M_total(<r) [Msun] on galaxies/log_r
galaxies/log_r         [K]               log10 r [kpc]
galaxies/params        [g, P]            generating parameters (names in the attribute ``names``)
=====================  ================  ===========================================================
"""

from __future__ import annotations

import typing
from typing import Literal

__all__ = [
    "TracerMode",
    "TRACER_MODES",
    "TRACER_COMPONENTS",
    "scalar_index",
    "SCHEMA_VERSION",
    "MAP_KEYS",
    "SAMPLE_KEYS",
    "SCALAR_NAMES",
    "SUMMARY_NAMES",
    "OBSERVER_NAMES",
    "tracer_keys",
    "shard_name",
    "MANIFEST",
]

SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
MAP_KEYS = ("maps_stars", "maps_gas", "phase_stars", "phase_gas")
SAMPLE_KEYS = MAP_KEYS + ("scalars", "summary_stars", "observer", "labels")
SCALAR_NAMES = ("log10_rh_kpc", "log10_sigma_stars_kms", "log10_vrms_gas_kms", "log10_n_stars")
SUMMARY_NAMES = ("sigma_q1_over_sigma", "sigma_q2_over_sigma", "sigma_q3_over_sigma", "sigma_q4_over_sigma",
                 "r25_over_rh", "r75_over_rh", "r90_over_rh", "kurtosis", "mean_err_over_sigma", "ellipticity")
"""``summary_stars`` columns (:func:`galmass.maps.summary_statistics`): σ in the four radius quartiles ÷ σ★, radii
enclosing 25/75/90 % of the members ÷ R_h, velocity kurtosis, mean velocity error ÷ σ★, positional ellipticity."""

OBSERVER_NAMES = ("binary_fraction", "foreground_fraction")
"""``observer`` columns: the fraction of the observed stars that are unresolved binaries seen at one epoch, and the
fraction that are foreground stars (``data.binary_fraction`` / ``data.contamination_fraction``, drawn per
catalogue with ``data.vary_fractions``). A model with ``model.observer_inputs`` is conditioned on them: a
multi-epoch, membership-cleaned sample states 0 and 0 (``galmass predict --binary-fraction 0
--foreground-fraction 0``)."""

TracerMode = Literal["stars", "gas", "gas+stars"]
"""Which tracers a model reads (the config's ``model.tracer``); the one definition of the modes."""
TRACER_MODES: tuple[str, ...] = typing.get_args(TracerMode)
TRACER_COMPONENTS: dict[str, tuple[str, ...]] = {"stars": ("stars",), "gas": ("gas",), "gas+stars": ("stars", "gas")}
"""The tracer components (map suffixes) of each mode."""


def scalar_index(name: str) -> int:
    """Column of scalar ``name`` (one of ``SCALAR_NAMES``) in the ``scalars`` dataset."""
    if name not in SCALAR_NAMES:
        raise ValueError(f"unknown scalar {name!r}; HINT: one of {SCALAR_NAMES}")
    return SCALAR_NAMES.index(name)


def tracer_keys(tracer: str) -> tuple[str, ...]:
    """Map datasets a model with tracer mode ``tracer`` ('stars', 'gas', 'gas+stars') reads."""
    if tracer not in TRACER_COMPONENTS:
        raise ValueError(f"unknown tracer mode {tracer!r}; HINT: one of {list(TRACER_MODES)}")
    return tuple(k for t in TRACER_COMPONENTS[tracer] for k in (f"maps_{t}", f"phase_{t}"))


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.h5"
