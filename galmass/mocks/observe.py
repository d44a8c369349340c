"""Observe a mock galaxy along many lines of sight: the per-projection model inputs and labels."""

from __future__ import annotations

from typing import Callable

import numpy as np
from numpy.typing import NDArray

from galmass.config import DataConfig
from galmass.maps import observation_to_sample
from galmass.mocks.galaxy import Galaxy, sample_gas, sample_stars
from galmass.mocks.projection import fibonacci_los, project
from galmass.physics.constants import RADII_FACTORS

MassProfile = Callable[[NDArray[np.float64]], NDArray[np.float64]]

__all__ = ["observe_galaxy", "observe_particles", "OBSERVATION_KEYS"]

OBSERVATION_KEYS = ("maps_stars", "maps_gas", "phase_stars", "phase_gas", "scalars", "labels", "los", "projection",
                    "n_stars")


def observe_galaxy(galaxy: Galaxy, cfg: DataConfig, rng: np.random.Generator) -> dict[str, NDArray]:
    """All P = cfg.projections observations of one mock galaxy (deterministic given ``rng``).

    Samples a pool of cfg.star_pool stars and cfg.gas_cells gas cells (in that order, from ``rng``), then calls
    :func:`observe_particles` with the same ``rng`` and the galaxy's analytic M_total(<r) for the labels.
    Contaminants (``cfg.contamination_fraction``) are spread over +-extent_rh times the galaxy's R_h (Plummer a).
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy Generator, got {type(rng).__name__}. HINT: np.random.default_rng(seed)")
    pos_s, vel_s = sample_stars(galaxy, cfg.star_pool, rng)
    pos_g, vel_g, m_g = sample_gas(galaxy, cfg.gas_cells, rng)
    return observe_particles(pos_s, vel_s, (pos_g, vel_g, m_g), galaxy.mass, cfg, rng, field_rh_kpc=galaxy.a)


def observe_particles(
    pos_stars: NDArray[np.float64],
    vel_stars: NDArray[np.float64],
    gas: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]] | None,
    mass: MassProfile,
    cfg: DataConfig,
    rng: np.random.Generator,
    *,
    field_rh_kpc: float,
) -> dict[str, NDArray]:
    """All P = cfg.projections observations of a particle galaxy (mock or ingested snapshot), given ``rng``.

    For each line of sight of a Fibonacci sphere: a random roll about it, N* ~ Poisson(cfg.stars_mean) (at least
    3, at most the pool) stars drawn from the pool without replacement, Gaussian velocity errors of cfg.v_err_kms,
    the gas projected the same way, then :func:`galmass.maps.observation_to_sample`. With
    cfg.contamination_fraction = f > 0, Binomial(N*, f) of the observed stars are foreground stars instead: uniform
    over the map field (+-extent_rh x ``field_rh_kpc``) with v_los ~ N(0, cfg.contamination_sigma_kms) about the
    systemic velocity. The labels are log10 M_total(< f R_h) [Msun] for f in RADII_FACTORS, with R_h the median
    projected radius of that projection's observed stars (contaminants included: the observer cannot tell).

    Parameters
    ----------
    pos_stars, vel_stars : ndarray [n, 3]
        Star pool, positions [kpc] relative to the centre and velocities [km/s] (any bulk velocity cancels).
    gas : (pos [m, 3] kpc, vel [m, 3] km/s, mass [m] Msun) or None
        Gas cells; None for a galaxy without gas (the gas maps are then zero).
    mass : callable
        True total M(<r) [Msun] of r [kpc] for the labels.
    cfg : DataConfig
        Map and observation settings (cfg.star_pool is ignored: the pool is ``pos_stars``).
    rng : numpy.random.Generator
        The only randomness.
    field_rh_kpc : float
        R_h [kpc] used only to size the field over which contaminants are spread.

    Returns
    -------
    dict
        "maps_stars" [P,4,H,W], "maps_gas" [P,4,H,W], "phase_stars" [P,1,H,W], "phase_gas" [P,1,H,W],
        "scalars" [P,4], "labels" [P,10], "los" [P,3] (float32), "projection" [P], "n_stars" [P] (int32).
    """
    pos_stars = np.asarray(pos_stars, dtype=np.float64)
    vel_stars = np.asarray(vel_stars, dtype=np.float64)
    pool = len(pos_stars)
    if pool < 3 or pos_stars.shape != (pool, 3) or vel_stars.shape != (pool, 3):
        raise ValueError(f"need >= 3 stars with [n, 3] positions and velocities, got {pos_stars.shape} and "
                         f"{vel_stars.shape}. HINT: a galaxy with fewer stars cannot be observed")
    if not (np.isfinite(field_rh_kpc) and field_rh_kpc > 0):
        raise ValueError(f"field_rh_kpc must be > 0 [kpc], got {field_rh_kpc}")
    P, H = cfg.projections, cfg.npix
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
    f_c = cfg.contamination_fraction
    half = cfg.extent_rh * field_rh_kpc
    for p in range(P):
        roll = 2.0 * np.pi * rng.random()
        n_obs = int(min(max(rng.poisson(cfg.stars_mean), 3), pool))
        # No extra random numbers without contamination: the default datasets stay bit-identical.
        n_fg = int(min(rng.binomial(n_obs, f_c), n_obs - 3)) if f_c > 0 else 0
        idx = rng.choice(pool, size=n_obs - n_fg, replace=False)
        x, y, v = project(pos_stars[idx], vel_stars[idx], los[p], roll)
        if n_fg:
            fx, fy = rng.uniform(-half, half, (2, n_fg))
            fv = cfg.contamination_sigma_kms * rng.standard_normal(n_fg) + float(np.mean(v))
            x, y, v = np.concatenate([x, fx]), np.concatenate([y, fy]), np.concatenate([v, fv])
        v = v + cfg.v_err_kms * rng.standard_normal(n_obs)
        gas_sky = None
        if gas is not None:
            gx, gy, gv = project(gas[0], gas[1], los[p], roll)
            gas_sky = (gx, gy, gv, gas[2])
        sample = observation_to_sample(x, y, v, cfg.v_err_kms, gas_sky, npix=H, extent_rh=cfg.extent_rh,
                                       vmax_sigma=cfg.vmax_sigma, gas_beam_fwhm_rh=cfg.gas_beam_fwhm_rh)
        for key in ("maps_stars", "maps_gas", "phase_stars", "phase_gas", "scalars"):
            out[key][p] = sample[key]
        out["labels"][p] = np.log10(mass(RADII_FACTORS * sample["rh_kpc"]))
        out["n_stars"][p] = n_obs
    return out
