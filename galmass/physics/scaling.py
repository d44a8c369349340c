"""Galaxy–halo scaling relations used to draw the mock population (z = 0).

Each relation states its reference and the range over which it was calibrated; the dwarf range galmass uses
(M200 ~ 1e9.5–1e11 Msun) is partly an extrapolation, which is acceptable for mocks (they only need to be a plausible,
documented population) but should not be read as a prediction.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from galmass.physics.constants import H_LITTLE, RHO_CRIT

__all__ = [
    "r200_from_m200",
    "m200_from_r200",
    "c200_dutton_maccio",
    "smhm_moster",
    "size_kravtsov",
    "MOSTER13_Z0",
]

MOSTER13_Z0 = {"n": 0.0351, "log_m1": 11.59, "beta": 1.376, "gamma": 0.608}
"""Moster, Naab & White (2013, MNRAS 428, 3121) z = 0 best fit: N, log10 M1 [Msun], beta, gamma."""


def _masses(m: ArrayLike, name: str) -> NDArray[np.float64]:
    m = np.asarray(m, dtype=np.float64)
    if np.any(~np.isfinite(m)) or np.any(m <= 0):
        raise ValueError(f"{name} must be finite and > 0 [Msun], got {m}. HINT: pass masses, not log10 masses")
    return m


def r200_from_m200(m200: ArrayLike) -> NDArray[np.float64]:
    """R200 [kpc] enclosing a mean density of 200 rho_crit: M200 = (4/3) pi 200 rho_crit R200^3.

    rho_crit = 3 H0^2 / (8 pi G) with h = 0.7 (``galmass.physics.constants.RHO_CRIT``). Valid for any M200 > 0 [Msun].
    """
    m200 = _masses(m200, "m200")
    return np.cbrt(3.0 * m200 / (4.0 * np.pi * 200.0 * RHO_CRIT))


def m200_from_r200(r200: ArrayLike) -> NDArray[np.float64]:
    """Inverse of :func:`r200_from_m200`: M200 [Msun] from R200 [kpc]."""
    r200 = _masses(r200, "r200")
    return 4.0 / 3.0 * np.pi * 200.0 * RHO_CRIT * r200**3


def c200_dutton_maccio(m200: ArrayLike) -> NDArray[np.float64]:
    """Median concentration c200 at z = 0 (Dutton & Macciò 2014, MNRAS 441, 3359, NFW fit to 200 rho_crit haloes).

    log10 c200 = 0.905 - 0.101 log10(M200 / (1e12 h^-1 Msun)); intrinsic scatter 0.11 dex (applied by the caller).
    Calibrated for M200 ~ 1e10–1e15 h^-1 Msun (Planck cosmology); below 1e10 it is an extrapolation of the power law.

    Parameters
    ----------
    m200 : float or ndarray
        Halo mass [Msun] (not h^-1 Msun; converted here with h = 0.7).
    """
    m200 = _masses(m200, "m200")
    return 10.0 ** (0.905 - 0.101 * np.log10(m200 * H_LITTLE / 1e12))


def smhm_moster(
    m200: ArrayLike,
    n: float = MOSTER13_Z0["n"],
    log_m1: float = MOSTER13_Z0["log_m1"],
    beta: float = MOSTER13_Z0["beta"],
    gamma: float = MOSTER13_Z0["gamma"],
) -> NDArray[np.float64]:
    """Median stellar mass M* [Msun] of a halo (Moster, Naab & White 2013, eq. 2; z = 0 defaults).

    M*/M = 2 N [(M/M1)^-beta + (M/M1)^gamma]^-1. Calibrated by abundance matching for M ~ 1e10–1e15 Msun; the
    low-mass slope beta is extrapolated into the dwarf regime (suites may override it, e.g. a steeper faint end).
    Typical scatter 0.15–0.2 dex (dwarfs plausibly more), applied by the caller.

    Parameters
    ----------
    m200 : float or ndarray
        Halo mass [Msun].
    n, log_m1, beta, gamma : float
        Normalisation (> 0), characteristic mass log10 M1 [Msun], low- and high-mass slopes (> 0).
    """
    m200 = _masses(m200, "m200")
    if n <= 0 or beta <= 0 or gamma <= 0:
        raise ValueError(f"SMHM needs n, beta, gamma > 0, got n={n}, beta={beta}, gamma={gamma}. HINT: Moster+13 "
                         f"z=0: {MOSTER13_Z0}")
    x = m200 / 10.0**log_m1
    return 2.0 * n * m200 / (x**-beta + x**gamma)


def size_kravtsov(r200: ArrayLike, k: float = 0.015) -> NDArray[np.float64]:
    """Galaxy size R_h = k R200 [kpc] (Kravtsov 2013, ApJ 764, L31: r_1/2 ~ 0.015 R200, 0.2 dex scatter).

    Kravtsov's relation holds from dwarfs to giant ellipticals (R200 ~ 30 kpc–1 Mpc). galmass uses R_h as the
    Plummer scale, i.e. the projected half-number radius of the whole stellar population.

    Parameters
    ----------
    r200 : float or ndarray
        Halo radius [kpc].
    k : float
        Size ratio, > 0 (Kravtsov: 0.015; suites vary it).
    """
    r200 = _masses(r200, "r200")
    if not 0 < k < 1:
        raise ValueError(f"size ratio k must be in (0, 1), got {k}. HINT: Kravtsov 2013 finds k ~ 0.015")
    return k * r200
