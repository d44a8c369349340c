"""Spherical mass profiles: NFW, coreNFW, DC14, Zhao, Plummer, a razor-thin exponential gas disc, and the
exponential (tidal) taper of any of them.

All functions take radii as floats or arrays [kpc] and return arrays [Msun], [Msun/kpc^3] or [Msun/kpc^2].
r = 0 is handled explicitly (the enclosed mass is 0 there).
"""

from __future__ import annotations

import functools
from typing import Callable

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
    "dc14_shape",
    "dc14_mass",
    "DC14_X_RANGE",
    "zhao_mass",
    "two_power_fraction",
    "exp_tapered_mass",
    "exp_taper_table",
    "TAPER_GRID_KPC",
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


# -------------------------------------------------------------------------------------------- DC14 (alpha, beta, gamma)
DC14_X_RANGE = (-4.1, -1.3)
"""log10(M*/M_halo) range over which Di Cintio et al. (2014a) calibrated the profile shape; X is clipped to it."""


def dc14_shape(x_smhm: float) -> tuple[float, float, float]:
    """(alpha, beta, gamma) of the Di Cintio et al. (2014a, MNRAS 441, 2986, eq. 3) profile at X = log10(M*/M_halo).

    alpha = 2.94 - log10[(10^(X+2.33))^-1.08 + (10^(X+2.33))^2.29], beta = 4.23 + 1.34 X + 0.26 X^2,
    gamma = -0.06 + log10[(10^(X+2.56))^-0.68 + 10^(X+2.56)]; X is clipped to ``DC14_X_RANGE`` (where it was fit).
    The inner slope gamma is smallest (a core) near X ~ -2.7 and returns to a cusp at both ends.
    """
    x = float(np.clip(x_smhm, *DC14_X_RANGE))
    alpha = 2.94 - np.log10((10.0 ** (x + 2.33)) ** -1.08 + (10.0 ** (x + 2.33)) ** 2.29)
    beta = 4.23 + 1.34 * x + 0.26 * x**2
    gamma = -0.06 + np.log10((10.0 ** (x + 2.56)) ** -0.68 + 10.0 ** (x + 2.56))
    return float(alpha), float(beta), float(gamma)


def _two_power_cumulative(alpha: float, beta: float, gamma: float
                          ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """ln s and ln I(s), I(s) = int_0^s t^(2-gamma) (1 + t^alpha)^(-(beta-gamma)/alpha) dt on 1e-6 .. 1e5.

    Trapezoid in ln s on 6000 points (relative error < 1e-6 for beta > 3, tested against quadrature); below 1e-6
    the integrand is the pure power law and I = s^(3-gamma)/(3-gamma) exactly.
    """
    ln_s = np.linspace(np.log(1e-6), np.log(1e5), 6000)
    s = np.exp(ln_s)
    integrand = s ** (3.0 - gamma) * (1.0 + s**alpha) ** (-(beta - gamma) / alpha)  # times s: d ln s
    head = s[0] ** (3.0 - gamma) / (3.0 - gamma)  # below s_0 the bracket is 1: analytic
    cum = head + np.concatenate([[0.0], np.cumsum(0.5 * (integrand[1:] + integrand[:-1]) * np.diff(ln_s))])
    return ln_s, np.log(cum)


_two_power_cumulative_cached = functools.lru_cache(maxsize=256)(_two_power_cumulative)


def two_power_fraction(s: ArrayLike, alpha: float, beta: float, gamma: float) -> NDArray[np.float64]:
    """Unnormalised enclosed mass I(s) of rho ∝ s^-gamma (1 + s^alpha)^(-(beta-gamma)/alpha), s = r / r_s.

    Interpolated in log-log on the table of :func:`_two_power_cumulative` (cached per shape); below the table the
    exact power law s^(3-gamma)/(3-gamma); beyond it (s > 1e5) the table's last value (finite for beta > 3).
    """
    _check_two_power(alpha, beta, gamma)
    ln_s, ln_cum = _two_power_cumulative_cached(round(alpha, 12), round(beta, 12), round(gamma, 12))
    s = np.asarray(s, dtype=np.float64)
    with np.errstate(divide="ignore"):
        ls = np.log(np.maximum(s, 1e-300))
    inner = s < np.exp(ln_s[0])
    return np.where(inner, s ** (3.0 - gamma) / (3.0 - gamma), np.exp(np.interp(ls, ln_s, ln_cum)))


def _check_two_power(alpha: float, beta: float, gamma: float) -> None:
    # beta <= 3 (NFW, some DC14 shapes) has a diverging total mass: fine for a halo normalised at R200.
    if not (alpha > 0 and 0 <= gamma < 3 and beta > gamma):
        raise ValueError(f"two-power (Zhao) shape needs alpha > 0, 0 <= gamma < 3, beta > gamma; got "
                         f"alpha={alpha}, beta={beta}, gamma={gamma}. HINT: NFW is (1, 3, 1)")


def zhao_mass(r: ArrayLike, m200: float, c200: float, r200: float, alpha: float, beta: float, gamma: float
              ) -> NDArray[np.float64]:
    """Enclosed mass [Msun] of a Zhao (1996) (alpha, beta, gamma) halo normalised to M(<R200) = M200.

    rho ∝ (r/r_s)^-gamma [1 + (r/r_s)^alpha]^(-(beta-gamma)/alpha): inner slope gamma (0 core ... 1.5 steep cusp),
    outer slope beta, transition sharpness alpha. The concentration is c200 = R200 / r_-2 with r_-2 the radius of
    logarithmic slope -2, r_-2 = r_s ((2 - gamma)/(beta - 2))^(1/alpha) (for NFW r_-2 = r_s, so c200 keeps its
    usual meaning whatever the shape; needs gamma < 2 < beta).

    Parameters
    ----------
    r : float or ndarray
        Radius [kpc], >= 0.
    m200, c200, r200 : float
        Halo mass [Msun], concentration R200/r_-2 and radius [kpc].
    alpha, beta, gamma : float
        Shape (alpha > 0, beta > 3, 0 <= gamma < 2).
    """
    m200 = _positive("m200", m200, "halo mass in Msun")
    c200 = _positive("c200", c200, "dwarf haloes have c200 ~ 10-20")
    r200 = _positive("r200", r200, "use galmass.physics.scaling.r200_from_m200")
    if not gamma < 2 < beta:
        raise ValueError(f"zhao_mass defines c200 through r_-2 and needs gamma < 2 < beta, got {gamma}, {beta}")
    r = _radii(r)
    r_s = r200 / c200 * ((beta - 2.0) / (2.0 - gamma)) ** (1.0 / alpha)
    return m200 * two_power_fraction(r / r_s, alpha, beta, gamma) / two_power_fraction(r200 / r_s, alpha, beta,
                                                                                          gamma)


def dc14_mass(r: ArrayLike, m200: float, c200: float, r200: float, x_smhm: float) -> NDArray[np.float64]:
    """DC14 enclosed mass [Msun] (Di Cintio et al. 2014a, b) normalised to M(<R200) = M200.

    A Zhao profile (:func:`zhao_mass`) with the shape of :func:`dc14_shape`. The concentration follows Di Cintio et
    al. (2014b, MNRAS 437, 415, eq. 6): c_DC14 = c_NFW (1 + 1e-5 e^(3.4 (X + 4.5))), with c = R200 / r_-2.

    Parameters
    ----------
    r : float or ndarray
        Radius [kpc], >= 0.
    m200, c200, r200 : float
        Halo mass [Msun], NFW concentration (converted as above) and radius [kpc].
    x_smhm : float
        X = log10(M* / M200).
    """
    alpha, beta, gamma = dc14_shape(x_smhm)
    x = float(np.clip(x_smhm, *DC14_X_RANGE))
    c_dc14 = _positive("c200", c200, "dwarf haloes have c200 ~ 10-20") * (1.0 + 1e-5 * np.exp(3.4 * (x + 4.5)))
    return zhao_mass(r, m200, c_dc14, r200, alpha, beta, gamma)


TAPER_GRID_KPC: NDArray[np.float64] = np.geomspace(1e-6, 1e6, 8193)
"""Radii [kpc] on which :func:`exp_taper_table` integrates (0.0034 in ln r: quadrature and log-log interpolation
errors < 1e-5 relative, checked against scipy quad in tests/test_tidal.py)."""
TAPER_GRID_KPC.flags.writeable = False


def exp_taper_table(mass: Callable[[NDArray[np.float64]], NDArray[np.float64]], r_t: float) -> NDArray[np.float64]:
    """ln M_t [ln Msun] on ``TAPER_GRID_KPC`` of a density rho(r) exp(-r / r_t) whose untapered mass is ``mass``.

    A tidally truncated halo (the exponential taper of Kazantzidis et al. 2004, ApJ 608, 663): tides strip a
    satellite's halo from the outside in, leaving its deeply embedded stars (Peñarrubia, Navarro & McConnachie
    2008, ApJ 673, 226). Integrating by parts, M_t(r) = M(r) e^{-r/r_t} + (1/r_t) ∫_0^r M(s) e^{-s/r_t} ds, so any
    profile given only as M(r) can be tapered; the integral is a trapezoid in ln s.
    """
    r_t = _positive("r_t", r_t, "the taper radius r_t is in kpc, > 0")
    s = TAPER_GRID_KPC
    taper = np.exp(-s / r_t)
    ms = np.asarray(mass(s), dtype=np.float64)
    f = ms * taper * s  # integrand in d ln s
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(np.log(s)))])
    return np.log(np.maximum(ms * taper + cumulative / r_t, 1e-300))


def exp_tapered_mass(r: ArrayLike, mass: Callable[[NDArray[np.float64]], NDArray[np.float64]], r_t: float,
                     table: NDArray[np.float64] | None = None) -> NDArray[np.float64]:
    """Mass [Msun] inside r [kpc] of the exp(-r / r_t)-tapered profile ``mass`` (:func:`exp_taper_table`, or its
    precomputed ``table``). Below the grid (r < 1e-6 kpc) the taper is 1 to < 1e-6 / r_t; beyond it the mass has
    converged."""
    r = _radii(r)
    table = exp_taper_table(mass, r_t) if table is None else table
    s = TAPER_GRID_KPC
    out = np.asarray(mass(r), dtype=np.float64).copy()
    inside = r >= s[0]
    out[inside] = np.exp(np.interp(np.log(np.clip(r[inside], s[0], s[-1])), np.log(s), table))
    return out
