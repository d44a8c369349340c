"""Observe a mock galaxy along many lines of sight: the per-projection model inputs and labels."""

from __future__ import annotations

from typing import Callable

import numpy as np
from numpy.typing import NDArray

from galmass.config import DataConfig
from galmass.maps import observation_to_sample
from galmass.mocks.binaries import binary_velocities
from galmass.mocks.galaxy import Galaxy, sample_gas, sample_stars
from galmass.mocks.projection import fibonacci_los, project
from galmass.physics.constants import RADII_FACTORS

MassProfile = Callable[[NDArray[np.float64]], NDArray[np.float64]]

__all__ = ["observe_galaxy", "observe_particles", "draw_catalogue", "OBSERVATION_KEYS"]

OBSERVATION_KEYS = ("maps_stars", "maps_gas", "phase_stars", "phase_gas", "scalars", "summary_stars", "observer",
                    "labels", "los", "projection", "n_stars")


def observe_galaxy(galaxy: Galaxy, cfg: DataConfig, rng: np.random.Generator) -> dict[str, NDArray]:
    """All P = cfg.projections observations of one mock galaxy (deterministic given ``rng``).

    Samples a pool of cfg.star_pool stars and cfg.gas_cells gas cells (in that order, from ``rng``), then calls
    :func:`observe_particles` with the same ``rng`` and the galaxy's analytic M_total(<r) for the labels; the
    footprint is in units of the stellar population's projected half-number radius.
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

    For each line of sight of a Fibonacci sphere (random roll about it) a spectroscopic catalogue is made as a
    survey would (:func:`draw_catalogue`: N★ log-uniform in cfg.n_stars, targets inside a footprint and selected
    with a central bias, foreground contaminants, unresolved binaries, per-star velocity errors), then the
    observer's own steps — membership clipping and centring on the stars — and the maps
    (:func:`galmass.maps.observation_to_sample`). The labels are log10 M_total(< f R_h) [Msun] for f in
    RADII_FACTORS, with R_h the median projected radius of that projection's members about their estimated centre.

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
        The population's projected half-number radius [kpc]: the unit of the footprint and of the selection.

    Returns
    -------
    dict
        "maps_stars" [P,4,H,W], "maps_gas" [P,4,H,W], "phase_stars" [P,1,H,W], "phase_gas" [P,1,H,W],
        "scalars" [P,4], "summary_stars" [P,K], "observer" [P,2] (the catalogue's binary and foreground fractions),
        "labels" [P,10], "los" [P,3] (float32), "projection" [P],
        "n_stars" [P] (int32, members after clipping).
    """
    pos_stars = np.asarray(pos_stars, dtype=np.float64)
    vel_stars = np.asarray(vel_stars, dtype=np.float64)
    pool = len(pos_stars)
    if pool < 3 or pos_stars.shape != (pool, 3) or vel_stars.shape != (pool, 3):
        raise ValueError(f"need >= 3 stars with [n, 3] positions and velocities, got {pos_stars.shape} and "
                         f"{vel_stars.shape}. HINT: a galaxy with fewer stars cannot be observed")
    if not (np.isfinite(field_rh_kpc) and field_rh_kpc > 0):
        raise ValueError(f"field_rh_kpc must be > 0 [kpc], got {field_rh_kpc}")
    P = cfg.projections
    los = fibonacci_los(P)
    parts = []
    for p in range(P):
        roll = 2.0 * np.pi * rng.random()
        x, y, v, err, fractions = draw_catalogue(*project(pos_stars, vel_stars, los[p], roll), cfg, rng,
                                                 field_rh_kpc)
        gas_sky = None
        if gas is not None:
            gx, gy, gv = project(gas[0], gas[1], los[p], roll)
            gas_sky = (gx, gy, gv, gas[2])
        sample = observation_to_sample(x, y, v, err, gas_sky, npix=cfg.npix, extent_rh=cfg.extent_rh,
                                       vmax_sigma=cfg.vmax_sigma, gas_beam_fwhm_rh=cfg.gas_beam_fwhm_rh,
                                       membership_clip=cfg.membership_clip, recentre=cfg.recentre)
        sample["labels"] = np.log10(mass(RADII_FACTORS * sample["rh_kpc"]))
        sample["n_stars"] = sample["n_members"]
        sample["observer"] = np.asarray(fractions)
        parts.append(sample)
    out = {k: np.stack([np.asarray(s[k]) for s in parts]).astype(np.float32)
           for k in ("maps_stars", "maps_gas", "phase_stars", "phase_gas", "scalars", "summary_stars", "observer",
                     "labels")}
    out.update(los=los.astype(np.float32), projection=np.arange(P, dtype=np.int32),
               n_stars=np.array([s["n_stars"] for s in parts], dtype=np.int32))
    return out


def _log_uniform(rng: np.random.Generator, lo_hi: list[float] | tuple[float, float]) -> float:
    lo, hi = float(lo_hi[0]), float(lo_hi[1])
    return lo if lo == hi else float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def draw_catalogue(x: NDArray[np.float64], y: NDArray[np.float64], v: NDArray[np.float64], cfg: DataConfig,
                   rng: np.random.Generator, rh_kpc: float
                   ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64],
                              tuple[float, float]]:
    """One spectroscopic catalogue from projected pool stars (x, y [kpc], v [km/s]) as a survey would take it.

    1. N★ log-uniform in ``cfg.n_stars``; a footprint of radius log-uniform in ``cfg.selection_fov_rh`` × R_h;
    2. members targeted without replacement inside the footprint with weight (1 + R²/R_h²)^(−b),
       b uniform in ``cfg.selection_bias`` (spectroscopic surveys favour the bright, central field);
    3. Binomial(N★, ``cfg.contamination_fraction``) of the targets are foreground stars instead: uniform over the
       footprint, v ~ N(systemic, ``cfg.contamination_sigma_kms``);
    4. a fraction ``cfg.binary_fraction`` of the members are unresolved binaries (:mod:`galmass.mocks.binaries`);
       with ``cfg.vary_fractions`` both fractions are drawn per catalogue, uniform in [0, the configured value];
    5. per-star errors: a catalogue error log-uniform in ``cfg.v_err_kms`` times a log-normal spread of
       ``cfg.v_err_scatter_dex``; v_obs = v + err · N(0, 1).

    Returns x, y [kpc], v_obs [km/s] and the per-star errors [km/s] (the observer's catalogue), and the
    (binary, foreground) fractions it was drawn with (``schema.OBSERVER_NAMES``: what a model with
    ``model.observer_inputs`` is told about the sample).
    """
    n_obs = int(round(_log_uniform(rng, cfg.n_stars)))
    fov = _log_uniform(rng, cfg.selection_fov_rh) * rh_kpc
    bias = float(rng.uniform(*cfg.selection_bias))
    R2 = x * x + y * y
    inside = np.flatnonzero(R2 < fov * fov)
    if inside.size < 3:  # a footprint missing the galaxy (a tiny snapshot pool): take the three central stars
        inside = np.argsort(R2)[:3]
    f_bin, f_fg = cfg.binary_fraction, cfg.contamination_fraction
    if cfg.vary_fractions:  # drawn only when asked: fixed-fraction datasets keep their random stream
        f_bin, f_fg = f_bin * float(rng.random()), f_fg * float(rng.random())
    n_fg = int(min(rng.binomial(n_obs, f_fg), n_obs - 3)) if f_fg else 0
    n_mem = min(n_obs - n_fg, inside.size)
    w = (1.0 + R2[inside] / rh_kpc**2) ** (-bias)
    idx = rng.choice(inside, size=n_mem, replace=False, p=w / w.sum()) if bias > 0 else         rng.choice(inside, size=n_mem, replace=False)
    xs, ys, vs = x[idx], y[idx], v[idx].copy()
    if f_bin > 0:
        is_binary = rng.random(n_mem) < f_bin
        vs[is_binary] += binary_velocities(int(is_binary.sum()), rng)
    if n_fg:
        r_fg, phi = fov * np.sqrt(rng.random(n_fg)), 2.0 * np.pi * rng.random(n_fg)
        xs = np.concatenate([xs, r_fg * np.cos(phi)])
        ys = np.concatenate([ys, r_fg * np.sin(phi)])
        vs = np.concatenate([vs, float(np.mean(v[idx])) + cfg.contamination_sigma_kms * rng.standard_normal(n_fg)])
    n = xs.size
    err = _log_uniform(rng, cfg.v_err_kms) * 10.0 ** (cfg.v_err_scatter_dex * rng.standard_normal(n))
    return xs, ys, vs + err * rng.standard_normal(n), err, (f_bin, f_fg)
