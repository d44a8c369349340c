"""A mock galaxy as simulation particles (stars, gas, dark matter, low-resolution dark matter, wind particles),
ready for :func:`galmass.snapshots.gadget.write_snapshot` — so that the snapshot reader and ``galmass ingest`` are
exercised end to end on a galaxy whose truth is known analytically."""

from __future__ import annotations

import numpy as np

from galmass.mocks.galaxy import Galaxy, sample_gas, sample_stars
from galmass.physics.constants import G
from galmass.snapshots.gadget import Particles

__all__ = ["galaxy_particles", "sample_dm_positions"]


def sample_dm_positions(galaxy: Galaxy, n: int, rng: np.random.Generator, r_max: float | None = None) -> np.ndarray:
    """n dark-matter positions [kpc] drawn from the galaxy's (core)NFW profile inside ``r_max`` (default R200).

    Inverse-CDF sampling of M_dm(<r) / M_dm(<r_max) tabulated on 4000 log-spaced radii (1e-5 .. 1 r_max); the
    interpolation is linear in (M, ln r), exact to < 1e-4 in M at this resolution.
    """
    r_max = galaxy.r200 if r_max is None else float(r_max)
    r = np.geomspace(1e-5 * r_max, r_max, 4000)
    cdf = galaxy.dm_mass(r) / float(galaxy.dm_mass(np.asarray(r_max)))
    radius = np.exp(np.interp(rng.random(n), cdf, np.log(r)))
    cos_t = 2.0 * rng.random(n) - 1.0
    phi = 2.0 * np.pi * rng.random(n)
    sin_t = np.sqrt(1.0 - cos_t**2)
    return radius[:, None] * np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=-1)


def galaxy_particles(
    galaxy: Galaxy,
    rng: np.random.Generator,
    *,
    n_stars: int = 20_000,
    n_gas: int = 2000,
    n_dm: int = 200_000,
    n_lowres: int = 100,
    n_wind: int = 50,
    r_cut_r200: float = 0.5,
) -> dict[int, Particles]:
    """Particles of a mock galaxy in physical units (kpc, km/s, Msun), by Gadget particle type.

    * PartType4 stars: Plummer positions and Jeans-Gaussian velocities (``sample_stars``), each of mass M*/n_stars,
      formation scale factors uniform in (0.05, 1); ``n_wind`` wind particles (formation time <= 0, tiny masses,
      positions in the gas disc) are interleaved with them, as in Arepo/TNG outputs.
    * PartType0 gas: the rotating disc (``sample_gas``).
    * PartType1 dark matter: equal-mass particles from the (core)NFW profile inside R200 with isotropic Gaussian
      velocities of dispersion v_c / sqrt(3) (positions and masses are what ingest uses; the velocities are not an
      equilibrium model).
    * PartType2 low-resolution dark matter: ``n_lowres`` heavier particles between 2 and 5 R200 (a zoom's
      boundary region), which an R200 cut must remove.

    Stars and gas beyond ``r_cut_r200`` R200 are dropped (a Plummer sphere has a few stars at any radius), so a
    snapshot ingested with an R200 cut keeps all of them.
    """
    pos_s, vel_s = sample_stars(galaxy, n_stars, rng)
    pos_g, vel_g, m_g = sample_gas(galaxy, n_gas, rng)
    keep_s = np.linalg.norm(pos_s, axis=1) < r_cut_r200 * galaxy.r200
    keep_g = np.linalg.norm(pos_g, axis=1) < r_cut_r200 * galaxy.r200
    pos_s, vel_s = pos_s[keep_s], vel_s[keep_s]
    pos_g, vel_g, m_g = pos_g[keep_g], vel_g[keep_g], m_g[keep_g]
    n_s = len(pos_s)
    form = 0.05 + 0.95 * rng.random(n_s)
    m_star = np.full(n_s, galaxy.mstar / n_stars)
    if n_wind:
        slots = np.sort(rng.choice(n_s + n_wind, size=n_wind, replace=False))
        is_wind = np.zeros(n_s + n_wind, dtype=bool)
        is_wind[slots] = True
        wind_pos = pos_g[rng.integers(0, len(pos_g), n_wind)] if len(pos_g) else np.zeros((n_wind, 3))
        full_pos = np.empty((n_s + n_wind, 3))
        full_vel = np.empty((n_s + n_wind, 3))
        full_m = np.empty(n_s + n_wind)
        full_f = np.empty(n_s + n_wind)
        full_pos[~is_wind], full_pos[is_wind] = pos_s, wind_pos
        full_vel[~is_wind], full_vel[is_wind] = vel_s, 30.0 * rng.standard_normal((n_wind, 3))
        full_m[~is_wind], full_m[is_wind] = m_star, 1e-6 * galaxy.m_gas / max(n_gas, 1)
        full_f[~is_wind], full_f[is_wind] = form, -rng.random(n_wind)  # <= 0: wind particles
        pos_s, vel_s, m_star, form = full_pos, full_vel, full_m, full_f
    pos_dm = sample_dm_positions(galaxy, n_dm, rng)
    r_dm = np.linalg.norm(pos_dm, axis=1)
    v_c = np.sqrt(G * galaxy.mass(np.maximum(r_dm, 1e-6)) / np.maximum(r_dm, 1e-6))
    vel_dm = v_c[:, None] / np.sqrt(3.0) * rng.standard_normal((n_dm, 3))
    m_dm = float(galaxy.dm_mass(np.asarray(galaxy.r200))) / n_dm
    types = {
        0: Particles(pos_g, vel_g, m_g),
        1: Particles(pos_dm, vel_dm, np.full(n_dm, m_dm)),
        4: Particles(pos_s, vel_s, m_star, formation_a=form),
    }
    if n_lowres:
        r_lr = galaxy.r200 * (2.0 + 3.0 * rng.random(n_lowres))
        dirs = rng.standard_normal((n_lowres, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        types[2] = Particles(r_lr[:, None] * dirs, 20.0 * rng.standard_normal((n_lowres, 3)),
                             np.full(n_lowres, 8.0 * m_dm))
    return types
