"""Observe a mock galaxy along many lines of sight: the per-projection model inputs and labels."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from galmass.config import DataConfig
from galmass.maps import observation_to_sample
from galmass.mocks.galaxy import Galaxy, sample_gas, sample_stars
from galmass.mocks.projection import fibonacci_los, project
from galmass.physics.constants import RADII_FACTORS

__all__ = ["observe_galaxy", "OBSERVATION_KEYS"]

OBSERVATION_KEYS = ("maps_stars", "maps_gas", "phase_stars", "phase_gas", "scalars", "labels", "los", "projection",
                    "n_stars")


def observe_galaxy(galaxy: Galaxy, cfg: DataConfig, rng: np.random.Generator) -> dict[str, NDArray]:
    """All P = cfg.projections observations of one galaxy (deterministic given ``rng``).

    A pool of cfg.star_pool stars and cfg.gas_cells gas cells is sampled once. For each line of sight of a Fibonacci
    sphere: a random roll about it, N* ~ Poisson(cfg.stars_mean) (at least 3, at most the pool) stars drawn from
    the pool without replacement, Gaussian velocity errors of cfg.v_err_kms, the gas projected the same way, then
    :func:`galmass.maps.observation_to_sample`. The labels are log10 M_total(< f R_h) [Msun] for
    f in RADII_FACTORS, with R_h the median projected radius of that projection's observed stars.

    Returns
    -------
    dict
        "maps_stars" [P,4,H,W], "maps_gas" [P,4,H,W], "phase_stars" [P,1,H,W], "phase_gas" [P,1,H,W],
        "scalars" [P,4], "labels" [P,10], "los" [P,3] (float32), "projection" [P], "n_stars" [P] (int32).
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy Generator, got {type(rng).__name__}. HINT: np.random.default_rng(seed)")
    P, H = cfg.projections, cfg.npix
    pos_s, vel_s = sample_stars(galaxy, cfg.star_pool, rng)
    pos_g, vel_g, m_g = sample_gas(galaxy, cfg.gas_cells, rng)
    los = fibonacci_los(P)
    out: dict[str, NDArray] = {
        "maps_stars": np.empty((P, 4, H, H), np.float32),
        "maps_gas": np.empty((P, 4, H, H), np.float32),
        "phase_stars": np.empty((P, 1, H, H), np.float32),
        "phase_gas": np.empty((P, 1, H, H), np.float32),
        "scalars": np.empty((P, 4), np.float32),
        "labels": np.empty((P, len(RADII_FACTORS)), np.float32),
        "los": los.astype(np.float32),
        "projection": np.arange(P, dtype=np.int32),
        "n_stars": np.empty(P, np.int32),
    }
    for p in range(P):
        roll = 2.0 * np.pi * rng.random()
        n_obs = int(min(max(rng.poisson(cfg.stars_mean), 3), cfg.star_pool))
        idx = rng.choice(cfg.star_pool, size=n_obs, replace=False)
        x, y, v = project(pos_s[idx], vel_s[idx], los[p], roll)
        v = v + cfg.v_err_kms * rng.standard_normal(n_obs)
        gx, gy, gv = project(pos_g, vel_g, los[p], roll)
        sample = observation_to_sample(x, y, v, cfg.v_err_kms, (gx, gy, gv, m_g), npix=H, extent_rh=cfg.extent_rh,
                                       vmax_sigma=cfg.vmax_sigma)
        for key in ("maps_stars", "maps_gas", "phase_stars", "phase_gas", "scalars"):
            out[key][p] = sample[key]
        out["labels"][p] = np.log10(galaxy.mass(RADII_FACTORS * sample["rh_kpc"]))
        out["n_stars"][p] = n_obs
    return out
