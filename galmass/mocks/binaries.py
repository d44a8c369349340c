"""Unresolved binary stars seen at a single epoch: the primary's orbital line-of-sight velocity.

Population (the standard choice of dSph binary studies, e.g. Minor et al. 2010, ApJ 721, 1142; McConnachie &
Côté 2010, ApJ 722, L209): periods log-normal in days with mean log10 P = 4.8 and σ = 2.3 (Duquennoy & Mayor
1991, A&A 248, 485), mass ratios q = m2/m1 uniform in [0.1, 1], thermal eccentricities f(e) = 2e, isotropic
orientations and a uniform orbital phase (mean anomaly). The primary is an old red giant of ``m1`` = 0.8 Msun;
orbits whose periastron a(1 − e) would fall inside ``r_min_au`` (the giant's radius, ~0.1 AU) are redrawn.

Line-of-sight velocity of the primary (e.g. Hilditch 2001, eq. 2.45):
v = K [cos(ω + ν) + e cos ω], K = (2π G / P)^(1/3) m2 sin i / ((m1 + m2)^(2/3) sqrt(1 − e²)),
with ν the true anomaly from Kepler's equation M = E − e sin E.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["binary_velocities", "semi_amplitude_kms", "true_anomaly"]

AU_KM = 1.495978707e8
"""Astronomical unit [km]."""
YEAR_S = 365.25 * 86400.0
"""Julian year [s]."""
GM_SUN_AU3_YR2 = 4.0 * np.pi**2
"""G Msun in AU^3 / yr^2 (Kepler's third law P² = a³ / M with P in years, a in AU, M in Msun)."""


def semi_amplitude_kms(period_yr: NDArray[np.float64], m1: NDArray[np.float64] | float,
                       m2: NDArray[np.float64], e: NDArray[np.float64], sin_i: NDArray[np.float64]
                       ) -> NDArray[np.float64]:
    """Radial-velocity semi-amplitude K of the primary [km/s]; periods [yr], masses [Msun]."""
    two_pi_g_over_p = 2.0 * np.pi * GM_SUN_AU3_YR2 / period_yr  # AU^3 / yr^3 per Msun
    k_au_yr = np.cbrt(two_pi_g_over_p) * m2 * sin_i / ((m1 + m2) ** (2.0 / 3.0) * np.sqrt(1.0 - e**2))
    return k_au_yr * AU_KM / YEAR_S


def true_anomaly(mean_anomaly: NDArray[np.float64], e: NDArray[np.float64], iterations: int = 30
                 ) -> NDArray[np.float64]:
    """True anomaly ν [rad] from the mean anomaly by Newton iteration of Kepler's equation (vectorised)."""
    E = np.where(e > 0.8, np.pi * np.ones_like(mean_anomaly), mean_anomaly)
    for _ in range(iterations):
        E = E - (E - e * np.sin(E) - mean_anomaly) / (1.0 - e * np.cos(E))
    return 2.0 * np.arctan2(np.sqrt(1.0 + e) * np.sin(E / 2.0), np.sqrt(1.0 - e) * np.cos(E / 2.0))


def binary_velocities(n: int, rng: np.random.Generator, m1: float = 0.8, r_min_au: float = 0.1
                      ) -> NDArray[np.float64]:
    """Single-epoch line-of-sight orbital velocities [km/s] of ``n`` binary primaries (see the module docstring)."""
    if n < 0 or not (m1 > 0 and r_min_au >= 0):
        raise ValueError(f"need n >= 0, m1 > 0 [Msun], r_min_au >= 0; got {n}, {m1}, {r_min_au}")
    log_p = np.empty(n)
    q = np.empty(n)
    e = np.empty(n)
    todo = np.arange(n)
    while todo.size:  # redraw orbits that would bring the companion inside the giant
        log_p[todo] = rng.normal(4.8, 2.3, todo.size)
        q[todo] = rng.uniform(0.1, 1.0, todo.size)
        e[todo] = np.sqrt(rng.random(todo.size))  # f(e) = 2e
        period_yr = 10.0 ** log_p[todo] / 365.25
        a_au = np.cbrt(period_yr**2 * m1 * (1.0 + q[todo]))
        todo = todo[a_au * (1.0 - e[todo]) < r_min_au]
    sin_i = np.sqrt(1.0 - rng.uniform(-1.0, 1.0, n) ** 2)  # isotropic: cos i uniform
    omega = rng.uniform(0.0, 2.0 * np.pi, n)
    nu = true_anomaly(rng.uniform(0.0, 2.0 * np.pi, n), e)
    k = semi_amplitude_kms(10.0**log_p / 365.25, m1, q * m1, e, sin_i)
    return k * (np.cos(omega + nu) + e * np.cos(omega))
