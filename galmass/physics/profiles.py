"""Spherical mass profiles: NFW, coreNFW, Plummer, and a razor-thin exponential gas disc.

All functions take radii as floats or arrays [kpc] and return arrays [Msun], [Msun/kpc^3] or [Msun/kpc^2].
r = 0 is handled explicitly (the enclosed mass is 0 there).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "nfw_mu",
    "nfw_mass",
    "corenfw_mass",
    "plummer_density",
    "plummer_mass",
    "plummer_surface_density",
    "plummer_projected_fraction",
    "plummer_radius_from_fraction",
    "exponential_disc_mass",
]


def _positive(name: str, value: float, hint: str) -> float:
    value = float(value)
    if not np.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be finite and > 0, got {value}. HINT: {hint}")
    return value


def _radii(r: ArrayLike, name: str = "r") -> NDArray[np.float64]:
    r = np.asarray(r, dtype=np.float64)
    if np.any(r < 0) or np.any(np.isnan(r)):
        raise ValueError(f"{name} must be >= 0 [kpc], got min {np.nanmin(r) if r.size else r}. HINT: pass radii, not "
                         "signed coordinates")
    return r


def nfw_mu(x: ArrayLike) -> NDArray[np.float64]:
    """NFW mass function mu(x) = ln(1+x) - x/(1+x) (dimensionless, x = r/r_s >= 0).

    For x < 1e-4 the series x^2/2 - 2x^3/3 + 3x^4/4 avoids the cancellation between the two terms.
    """
    x = np.asarray(x, dtype=np.float64)
    small = x < 1e-4
    xs = np.where(small, x, 0.0)
    xl = np.where(small, 1.0, x)
    series = xs**2 * (0.5 - 2.0 * xs / 3.0 + 0.75 * xs**2)
    return np.where(small, series, np.log1p(xl) - xl / (1.0 + xl))


def nfw_mass(r: ArrayLike, m200: float, c200: float, r200: float) -> NDArray[np.float64]:
    """NFW enclosed mass M(<r) = M200 mu(c r / R200) / mu(c)  [Msun]  (Navarro, Frenk & White 1997).

    Parameters
    ----------
    r : float or ndarray
        Radius [kpc], >= 0.
    m200 : float
        Mass inside R200 [Msun], > 0.
    c200 : float
        Concentration R200 / r_s, > 0.
    r200 : float
        Radius enclosing 200 times the critical density [kpc], > 0.
    """
    m200 = _positive("m200", m200, "halo mass in Msun, e.g. 1e10")
    c200 = _positive("c200", c200, "dwarf haloes have c200 ~ 10-20")
    r200 = _positive("r200", r200, "use galmass.physics.scaling.r200_from_m200")
    r = _radii(r)
    return m200 * nfw_mu(c200 * r / r200) / nfw_mu(c200)


def corenfw_mass(
    r: ArrayLike, m200: float, c200: float, r200: float, r_c: float, n: float
) -> NDArray[np.float64]:
    """coreNFW enclosed mass M(<r) = M_NFW(<r) tanh(r / r_c)^n  [Msun]  (Read, Agertz & Collins 2016, eq. 16).

    Parameters
    ----------
    r, m200, c200, r200
        As for :func:`nfw_mass` ([kpc], [Msun], -, [kpc]).
    r_c : float
        Core radius [kpc], > 0; Read+2016 use r_c = eta R_h with eta = 1.75.
    n : float
        Core strength in [0, 1]: n = 0 is the NFW cusp, n = 1 a flat core (Read+2016: n = tanh(kappa t_SF/t_dyn)).
    """
    r_c = _positive("r_c", r_c, "core radius r_c = eta R_h [kpc]")
    n = float(n)
    if not 0.0 <= n <= 1.0:
        raise ValueError(f"coreNFW n must be in [0, 1], got {n}. HINT: n = 0 is NFW, n = 1 a complete core")
    r = _radii(r)
    # tanh(0)**0 == 1 in numpy, so n = 0 reproduces NFW exactly, r = 0 included.
    return nfw_mass(r, m200, c200, r200) * np.tanh(r / r_c) ** n


def plummer_density(r: ArrayLike, a: float, total: float = 1.0) -> NDArray[np.float64]:
    """Plummer (1911) 3-D density rho(r) = 3 M / (4 pi a^3) (1 + r^2/a^2)^(-5/2).

    Parameters
    ----------
    r : float or ndarray
        Radius [kpc], >= 0.
    a : float
        Plummer scale [kpc] = projected half-number (half-light) radius R_h of the whole population.
    total : float
        Total mass [Msun] or number (the density is then per kpc^3).
    """
    a = _positive("a", a, "Plummer scale radius in kpc")
    r = _radii(r)
    return 3.0 * total / (4.0 * np.pi * a**3) * (1.0 + (r / a) ** 2) ** -2.5


def plummer_mass(r: ArrayLike, a: float, total: float = 1.0) -> NDArray[np.float64]:
    """Plummer enclosed mass M(<r) = M r^3 / (r^2 + a^2)^(3/2)  [same unit as ``total``]; r [kpc], a [kpc]."""
    a = _positive("a", a, "Plummer scale radius in kpc")
    r = _radii(r)
    s = r / a
    return total * s**3 / (1.0 + s**2) ** 1.5


def plummer_surface_density(R: ArrayLike, a: float, total: float = 1.0) -> NDArray[np.float64]:
    """Plummer surface density Sigma(R) = M a^2 / (pi (a^2 + R^2)^2)  [total / kpc^2]; R projected radius [kpc]."""
    a = _positive("a", a, "Plummer scale radius in kpc")
    R = _radii(R, "R")
    return total * a**2 / (np.pi * (a**2 + R**2) ** 2)


def plummer_projected_fraction(R: ArrayLike, a: float) -> NDArray[np.float64]:
    """Fraction of a Plummer population inside projected radius R: R^2 / (R^2 + a^2) (equals 1/2 at R = a)."""
    a = _positive("a", a, "Plummer scale radius in kpc")
    R = _radii(R, "R")
    return R**2 / (R**2 + a**2)


def plummer_radius_from_fraction(u: ArrayLike, a: float) -> NDArray[np.float64]:
    """Inverse of the 3-D cumulative fraction: the radius r [kpc] with M(<r)/M = u, for u in [0, 1).

    Inverting u = s^3 / (1 + s^2)^(3/2) (s = r/a) gives s = u^(1/3) / sqrt(1 - u^(2/3)). Feeding uniform u gives
    radii distributed as the Plummer sphere (inverse-CDF sampling).
    """
    a = _positive("a", a, "Plummer scale radius in kpc")
    u = np.asarray(u, dtype=np.float64)
    if np.any(u < 0) or np.any(u >= 1) or np.any(np.isnan(u)):
        raise ValueError("u must lie in [0, 1). HINT: draw it with rng.random()")
    t = np.cbrt(u)
    return a * t / np.sqrt(1.0 - t * t)


def exponential_disc_mass(r: ArrayLike, m_disc: float, r_d: float) -> NDArray[np.float64]:
    """Mass of a razor-thin exponential disc inside a sphere of radius r: M_d [1 - (1 + r/R_d) e^(-r/R_d)] [Msun].

    For a razor-thin disc the sphere of radius r contains exactly the disc inside cylindrical radius R = r, so this is
    exact (Freeman 1970 surface density Sigma(R) = M_d / (2 pi R_d^2) e^(-R/R_d)).

    Parameters
    ----------
    r : float or ndarray
        Radius [kpc], >= 0.
    m_disc : float
        Total disc mass [Msun], >= 0 (0 gives a zero profile).
    r_d : float
        Exponential scale length [kpc], > 0.
    """
    r_d = _positive("r_d", r_d, "gas disc scale length in kpc")
    if not np.isfinite(m_disc) or m_disc < 0:
        raise ValueError(f"m_disc must be finite and >= 0, got {m_disc}. HINT: gas mass in Msun")
    x = _radii(r) / r_d
    # -expm1(-x) - x e^-x keeps precision at small x, where the bracket ~ x^2/2.
    return m_disc * (-np.expm1(-x) - x * np.exp(-x))
