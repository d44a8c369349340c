"""Stellar tracer profiles beyond Plummer: the (alpha, beta, gamma) family of Zhao (1996) with finite mass.

nu(r) ∝ (r/r_s)^-gamma [1 + (r/r_s)^alpha]^(-(beta-gamma)/alpha), normalised to unit total number. Plummer is
(2, 5, 0) with r_s = a; outer slopes beta = 4-8 and inner slopes gamma = 0-1 span the light profiles of dwarf
spheroidals (cored King/exponential-like to cuspier Sérsic-like; e.g. Muñoz et al. 2018, ApJ 860, 66).

The scale r_s is set from the wanted projected half-number radius R_h through ``rh_over_rs``, computed once per
shape by solving N_proj(<R) = 1/2 with

    N_proj(<R) = N(<R) + int_R^inf 4 pi r^2 nu(r) (1 - sqrt(1 - R^2/r^2)) dr

(the stars of the sphere of radius R plus those outside it whose line of sight passes within R).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.integrate import quad
from scipy.optimize import brentq
from scipy.special import gamma as gamma_fn

from galmass.physics.profiles import _two_power_cumulative_cached, two_power_fraction

__all__ = ["TwoPowerTracer", "rh_over_rs"]


def _norm(alpha: float, beta: float, gamma: float) -> float:
    """Total I(inf) = int_0^inf s^(2-gamma)(1+s^alpha)^(-(beta-gamma)/alpha) ds = B((3-g)/a, (b-3)/a) / a."""
    a, b = (3.0 - gamma) / alpha, (beta - 3.0) / alpha
    return float(gamma_fn(a) * gamma_fn(b) / gamma_fn(a + b) / alpha)


@functools.lru_cache(maxsize=256)
def rh_over_rs(alpha: float, beta: float, gamma: float) -> float:
    """Projected half-number radius in units of r_s of a finite-mass (beta > 3) two-power tracer."""
    if not beta > 3:
        raise ValueError(f"a tracer needs a finite number of stars: beta > 3, got {beta}")
    total = _norm(alpha, beta, gamma)

    def nu(s: float) -> float:
        return s**-gamma * (1.0 + s**alpha) ** (-(beta - gamma) / alpha) / total  # per 4 pi s^2 ds

    def projected(R: float) -> float:
        inside = float(two_power_fraction(np.array(R), alpha, beta, gamma)) / total
        # outside part, in t = ln(s): smooth on [ln R, inf)
        f = lambda t: nu(np.exp(t)) * np.exp(3 * t) * (1.0 - np.sqrt(max(0.0, 1.0 - R**2 * np.exp(-2 * t))))  # noqa: E731
        out = quad(f, np.log(R), np.log(R) + 40.0, limit=200, epsrel=1e-10)[0]
        return inside + out

    return float(brentq(lambda R: projected(R) - 0.5, 1e-4, 1e4, xtol=1e-12))


@dataclass(frozen=True)
class TwoPowerTracer:
    """A finite-mass two-power tracer with projected half-number radius ``rh`` [kpc].

    Attributes: alpha (transition), beta (outer slope, > 3), gamma (inner slope, 0 <= gamma < 3), rh [kpc].
    """

    alpha: float
    beta: float
    gamma: float
    rh: float

    def __post_init__(self) -> None:
        if not (self.alpha > 0 and 0 <= self.gamma < 3 and self.beta > 3 and self.rh > 0):
            raise ValueError(f"tracer needs alpha > 0, 0 <= gamma < 3, beta > 3, rh > 0 [kpc]; got {self}")

    @property
    def r_s(self) -> float:
        """Scale radius [kpc]."""
        return self.rh / rh_over_rs(self.alpha, self.beta, self.gamma)

    def density(self, r: ArrayLike) -> NDArray[np.float64]:
        """Number density [1/kpc^3] for unit total number."""
        s = np.maximum(np.asarray(r, dtype=np.float64), 1e-300) / self.r_s
        shape = s**-self.gamma * (1.0 + s**self.alpha) ** (-(self.beta - self.gamma) / self.alpha)
        return shape / (4.0 * np.pi * self.r_s**3 * _norm(self.alpha, self.beta, self.gamma))

    def fraction(self, r: ArrayLike) -> NDArray[np.float64]:
        """Fraction of the stars inside radius r [kpc] (3-D)."""
        s = np.asarray(r, dtype=np.float64) / self.r_s
        return two_power_fraction(s, self.alpha, self.beta, self.gamma) / _norm(self.alpha, self.beta, self.gamma)

    def sample_radii(self, u: ArrayLike) -> NDArray[np.float64]:
        """Radii [kpc] with 3-D cumulative fraction ``u`` in [0, 1) (inverse-CDF sampling, log-log interpolation)."""
        u = np.asarray(u, dtype=np.float64)
        if np.any(u < 0) or np.any(u >= 1):
            raise ValueError("u must lie in [0, 1). HINT: draw it with rng.random()")
        ln_s, ln_cum = _two_power_cumulative_cached(round(self.alpha, 12), round(self.beta, 12),
                                                    round(self.gamma, 12))
        ln_frac = ln_cum - np.log(_norm(self.alpha, self.beta, self.gamma))
        with np.errstate(divide="ignore"):
            lu = np.log(np.maximum(u, 1e-300))
        # Below the table the fraction is the power law s^(3-gamma) / ((3-gamma) I_inf): invert it exactly.
        inner = lu < ln_frac[0]
        s_inner = np.exp((lu + np.log((3.0 - self.gamma) * _norm(self.alpha, self.beta, self.gamma)))
                         / (3.0 - self.gamma))
        return self.r_s * np.where(inner, s_inner, np.exp(np.interp(lu, ln_frac, ln_s)))
