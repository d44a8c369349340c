"""Spherical Jeans equation: radial velocity dispersion of a tracer, and its line-of-sight projection.

The spherical Jeans equation (Binney & Tremaine 2008, eq. 4.215)

    d(nu sigma_r^2)/dr + 2 beta(r) nu sigma_r^2 / r = -nu G M(<r) / r^2

has the solution nu sigma_r^2(r) = (1/f(r)) int_r^inf f(r') nu(r') G M(r') / r'^2 dr' with the integrating factor
f = exp(int 2 beta / r dr):

* constant beta:                 f = r^(2 beta)
* Osipkov–Merritt beta = r^2/(r^2 + r_a^2):  f = r^2 + r_a^2
* Baes & van Hese (2007, A&A 471, 419) beta = (beta_0 + beta_inf x^delta) / (1 + x^delta), x = r / r_a:
  ln f = 2 beta_0 ln r + (2 (beta_inf - beta_0) / delta) ln(1 + x^delta)
  (it contains the other two: beta_0 = beta_inf is constant beta, (0, 1, delta = 2) is Osipkov–Merritt)

(Mamon & Łokas 2005, eqs. A3–A5). The projection to the line of sight is (Binney & Mamon 1982)

    Sigma(R) sigma_los^2(R) = 2 int_R^inf (1 - beta(r) R^2/r^2) nu sigma_r^2 r dr / sqrt(r^2 - R^2).

:func:`solve_jeans` evaluates the first integral vectorised on a log grid (cumulative trapezoid in ln r);
:func:`projected_dispersion` evaluates the second by adaptive quadrature (scipy.integrate.quad), independently of
any particle sampling, so that sampled velocities can be checked against it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.integrate import IntegrationWarning, quad
from scipy.interpolate import CubicSpline
from scipy.special import expit

from galmass.physics.constants import G

__all__ = ["JeansSolution", "solve_jeans", "cumulative_from_outside", "projected_dispersion", "anisotropy",
           "bvh_log_integrating_factor"]

Profile = Callable[[NDArray[np.float64]], NDArray[np.float64]]


def anisotropy(
    r: ArrayLike, beta: float = 0.0, r_a: float | None = None, beta_inf: float | None = None, delta: float = 2.0
) -> NDArray[np.float64]:
    """Velocity anisotropy beta(r) = 1 - sigma_t^2 / sigma_r^2 (sigma_t per tangential component).

    Constant ``beta`` when ``r_a`` is None, else Osipkov–Merritt beta = r^2 / (r^2 + r_a^2) with r_a [kpc]. With
    ``beta_inf`` given: Baes & van Hese (2007) beta = (beta + beta_inf x^delta) / (1 + x^delta), x = r / r_a
    (``beta`` is then the central value beta_0; r_a [kpc] and delta > 0 set where and how fast it turns over).
    """
    r = np.asarray(r, dtype=np.float64)
    if beta_inf is not None:
        # x^delta / (1 + x^delta) = expit(delta ln x): no inf/inf at large r, and r = 0 gives exactly beta_0.
        with np.errstate(divide="ignore"):
            w = expit(float(delta) * (np.log(r) - np.log(float(r_a))))
        return float(beta) + (float(beta_inf) - float(beta)) * w
    if r_a is None:
        return np.full_like(r, float(beta))
    return r**2 / (r**2 + float(r_a) ** 2)


def bvh_log_integrating_factor(r: ArrayLike, beta0: float, beta_inf: float, r_a: float,
                               delta: float) -> NDArray[np.float64]:
    """ln f(r) = int 2 beta(r)/r dr for the Baes & van Hese anisotropy (up to an additive constant).

    ln f = 2 beta0 ln r + (2 (beta_inf - beta0) / delta) ln(1 + (r/r_a)^delta), with r, r_a [kpc]; differentiating
    gives 2/r [beta0 + (beta_inf - beta0) x^delta / (1 + x^delta)] = 2 beta(r) / r.
    """
    lnr = np.log(np.asarray(r, dtype=np.float64))
    # ln(1 + x^delta) as logaddexp(0, delta ln x): finite for any delta and r (x^delta itself can overflow), and
    # accurate where x^delta << 1 (log1p-like), so the constant shift at small r is not lost to rounding.
    soft = np.logaddexp(0.0, float(delta) * (lnr - np.log(float(r_a))))
    return 2.0 * float(beta0) * lnr + 2.0 * (float(beta_inf) - float(beta0)) / float(delta) * soft


def cumulative_from_outside(h: NDArray[np.float64], du: float) -> NDArray[np.float64]:
    """int_{u_i}^{u_last} h du on an even grid of step ``du``, along the last axis, for every grid point i.

    Each segment treats h as a power law (exponential in u = ln r) between grid points: exact for power-law wings,
    where the plain trapezoid would be off by ~k^2 du^2 / 12 (2e-4 for h ~ r^-6 at du = 0.008); the trapezoid is
    used only where h is not positive or is flat to 1e-6.
    """
    h0, h1 = h[..., :-1], h[..., 1:]
    positive = (h1 > 0) & (h0 > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lnratio = np.log(np.where(positive, h1, 1.0) / np.where(positive, h0, 1.0))
    near_flat = ~positive | (np.abs(lnratio) < 1e-6)
    seg = np.where(near_flat, 0.5 * (h1 + h0) * du, du * (h1 - h0) / np.where(near_flat, 1.0, lnratio))
    inner = np.flip(np.cumsum(np.flip(seg, -1), axis=-1), -1)
    return np.concatenate([inner, np.zeros_like(h[..., :1])], axis=-1)


@dataclass(frozen=True, eq=False)
class JeansSolution:
    """sigma_r^2(r) [km^2/s^2] of a tracer on a log-spaced radius grid, with a smooth interpolator.

    Build it with :func:`solve_jeans`. Outside the grid the end values are held (the grid spans many decades
    around the tracer scale, so this never matters for sampled tracers).
    """

    r: NDArray[np.float64]
    """Grid radii [kpc], log-spaced, increasing."""
    sigma_r2_grid: NDArray[np.float64]
    """sigma_r^2 on the grid [km^2/s^2]."""
    beta0: float
    """Constant anisotropy (used when r_a is None)."""
    r_a: float | None
    """Osipkov–Merritt (or Baes & van Hese) anisotropy radius [kpc], or None for constant beta."""
    _spline: CubicSpline
    beta_inf: float | None = None
    """Baes & van Hese outer anisotropy (then ``beta0`` is the central value), or None for the other two models."""
    delta: float = 2.0
    """Baes & van Hese transition sharpness (used when ``beta_inf`` is set)."""

    def sigma_r2(self, r: ArrayLike) -> NDArray[np.float64]:
        """Radial velocity dispersion squared [km^2/s^2] at radii r [kpc] (r = 0 gives the innermost grid value)."""
        r = np.asarray(r, dtype=np.float64)
        lo, hi = np.log(self.r[0]), np.log(self.r[-1])
        with np.errstate(divide="ignore"):
            x = np.clip(np.log(r), lo, hi)
        return np.exp(self._spline(x))

    def sigma_r(self, r: ArrayLike) -> NDArray[np.float64]:
        """Radial velocity dispersion [km/s] at radii r [kpc]."""
        return np.sqrt(self.sigma_r2(r))

    def beta(self, r: ArrayLike) -> NDArray[np.float64]:
        """Anisotropy beta(r) at radii r [kpc]."""
        return anisotropy(r, self.beta0, self.r_a, self.beta_inf, self.delta)


def solve_jeans(
    mass: Profile,
    density: Profile,
    *,
    scale: float,
    beta: float = 0.0,
    r_a: float | None = None,
    beta_inf: float | None = None,
    delta: float = 2.0,
    r_min: float | None = None,
    r_max: float | None = None,
    n_grid: int = 3000,
) -> JeansSolution:
    """Solve the spherical Jeans equation for sigma_r^2(r) of a tracer in a given total mass profile.

    Parameters
    ----------
    mass : callable
        Total enclosed mass M(<r) [Msun] of the potential, vectorised over r [kpc].
    density : callable
        Tracer density nu(r) (any normalisation; it cancels), vectorised over r [kpc].
    scale : float
        Tracer scale radius [kpc] (e.g. the Plummer a); sets the default grid 1e-5 .. 1e5 scale.
    beta : float
        Constant anisotropy, < 1 (used when ``r_a`` is None). Note: beta > 0 with a cored tracer violates the
        central anisotropy theorem (An & Evans 2006) and makes sigma_r diverge as r^-beta at the centre.
    r_a : float or None
        Osipkov–Merritt anisotropy radius [kpc] (> 0); None for constant beta.
    beta_inf, delta : float or None, float
        Baes & van Hese (2007) anisotropy when ``beta_inf`` is given: beta(r) goes from ``beta`` (< 1) at the
        centre to ``beta_inf`` (<= 1) outside ``r_a`` (required), with sharpness ``delta`` > 0.
    r_min, r_max : float or None
        Grid limits [kpc]; default 1e-5 and 1e5 times ``scale``.
    n_grid : int
        Grid points (log-spaced). 3000 over 10 decades gives d ln r ~ 0.008; with the piecewise power-law
        quadrature the relative error of sigma_r^2 is ~1e-6.

    Returns
    -------
    JeansSolution
        sigma_r^2 on the grid plus an interpolator.

    Notes
    -----
    Beyond r_max the integrand is continued as the power law fitted to its last two grid points, which requires
    it to fall faster than r^-1 (true for any tracer with a finite number of stars and M bounded by ~ln r).
    """
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be > 0 [kpc], got {scale}. HINT: pass the tracer's scale radius")
    if beta_inf is not None:
        _check_bvh(beta, beta_inf, r_a, delta)
    elif r_a is None:
        if not beta < 1.0:
            raise ValueError(f"constant beta must be < 1, got {beta}. HINT: beta = 1 means purely radial orbits")
    else:
        if not (np.isfinite(r_a) and r_a > 0):
            raise ValueError(f"Osipkov–Merritt r_a must be finite and > 0 [kpc], got {r_a}. "
                             "HINT: pass r_a=None for constant beta")
        if beta != 0.0:
            raise ValueError(f"give either constant beta ({beta}) or r_a ({r_a}), not both. HINT: set beta=0 with r_a")
    if n_grid < 100:
        raise ValueError(f"n_grid must be >= 100, got {n_grid}. HINT: the default 3000 is cheap")
    r_min = 1e-5 * scale if r_min is None else float(r_min)
    r_max = 1e5 * scale if r_max is None else float(r_max)
    if not 0 < r_min < r_max:
        raise ValueError(f"need 0 < r_min < r_max, got {r_min}, {r_max}")

    lnr = np.linspace(np.log(r_min), np.log(r_max), n_grid)
    r = np.exp(lnr)
    nu = np.asarray(density(r), dtype=np.float64)
    m = np.asarray(mass(r), dtype=np.float64)
    if np.any(~np.isfinite(nu)) or np.any(nu <= 0) or np.any(~np.isfinite(m)) or np.any(m < 0):
        raise ValueError("density must be finite and > 0 and mass finite and >= 0 on the Jeans grid. HINT: check the "
                         "profile parameters")
    # Work with ln f so r^(2 beta) stays finite for any beta on 10 decades.
    if beta_inf is not None:
        ln_f = bvh_log_integrating_factor(r, beta, beta_inf, r_a, delta)
    else:
        ln_f = 2.0 * beta * lnr if r_a is None else np.log(r**2 + r_a**2)
    # Integrand in ln r: f nu G M / r^2 * r. Scale out f at r_max to keep numbers O(1)-ish.
    ln_f_ref = ln_f[-1]
    f = np.exp(ln_f - ln_f_ref)
    g = f * nu * G * m / r**2
    h = g * r
    du = lnr[1] - lnr[0]
    inner = cumulative_from_outside(h, du)
    # Power-law tail beyond r_max: g ~ r^s, int_rmax^inf g dr = g(r_max) r_max / (-s - 1).
    s = np.log(g[-1] / g[-2]) / du if g[-1] > 0 and g[-2] > 0 else -np.inf
    if not s < -1.0:
        raise ValueError(f"Jeans integrand falls as r^{s:.2f} at r_max={r_max:g} kpc, too slowly to converge. "
                         "HINT: the tracer density must fall faster than r^-3 (times the anisotropy factor)")
    tail = h[-1] / (-s - 1.0) if np.isfinite(s) else 0.0
    nu_sigma_r2_f = inner + tail
    sigma_r2 = nu_sigma_r2_f / (f * nu)
    if np.any(~np.isfinite(sigma_r2)) or np.any(sigma_r2 <= 0):
        raise ValueError("Jeans solution is not finite and positive on the grid. HINT: check mass(r) and density(r)")
    spline = CubicSpline(lnr, np.log(sigma_r2))
    if beta_inf is not None:
        return JeansSolution(r=r, sigma_r2_grid=sigma_r2, beta0=float(beta), r_a=float(r_a), _spline=spline,
                             beta_inf=float(beta_inf), delta=float(delta))
    return JeansSolution(r=r, sigma_r2_grid=sigma_r2, beta0=float(beta) if r_a is None else 0.0,
                         r_a=None if r_a is None else float(r_a), _spline=spline)


def _check_bvh(beta0: float, beta_inf: float, r_a: float | None, delta: float) -> None:
    """Raise ValueError unless (beta0, beta_inf, r_a [kpc], delta) is a usable Baes & van Hese anisotropy."""
    if not (np.isfinite(beta0) and beta0 < 1.0 and np.isfinite(beta_inf) and beta_inf <= 1.0):
        raise ValueError(f"Baes & van Hese needs beta0 < 1 and beta_inf <= 1, got {beta0}, {beta_inf}. "
                         "HINT: sigma_t^2 = (1 - beta) sigma_r^2 must stay >= 0")
    if r_a is None or not (np.isfinite(r_a) and r_a > 0):
        raise ValueError(f"Baes & van Hese r_a must be finite and > 0 [kpc], got {r_a}. HINT: pass r_a with beta_inf")
    if not (np.isfinite(delta) and delta > 0):
        raise ValueError(f"Baes & van Hese delta must be finite and > 0, got {delta}. "
                         "HINT: delta = 2 as Osipkov–Merritt")


def projected_dispersion(
    R: ArrayLike, solution: JeansSolution, density: Profile, *, epsrel: float = 1e-7
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Line-of-sight velocity dispersion sigma_los^2(R) [km^2/s^2] and surface density Sigma(R), by quadrature.

    With r = R cosh t (so dz = R cosh t dt along the line of sight) the projection integrals become smooth and
    finite on t in [0, acosh(r_max/R)]:

        Sigma sigma_los^2 = 2 int (1 - beta(r)/cosh^2 t) nu(r) sigma_r^2(r) R cosh t dt,
        Sigma             = 2 int nu(r) R cosh t dt.

    Parameters
    ----------
    R : float or ndarray
        Projected radii [kpc], > 0 and below the solution grid's r_max.
    solution : JeansSolution
        sigma_r^2(r) and beta(r) of the tracer.
    density : callable
        The tracer density nu(r) used for the solution (same normalisation gives Sigma in its units per kpc^2).
    epsrel : float
        Relative tolerance passed to scipy.integrate.quad.

    Returns
    -------
    sigma_los2, surface : ndarray, ndarray
        Same shape as R.
    """
    R = np.atleast_1d(np.asarray(R, dtype=np.float64))
    r_max = solution.r[-1]
    if np.any(R <= 0) or np.any(R >= r_max):
        raise ValueError(f"R must lie in (0, {r_max:g}) kpc, got {R.min()}..{R.max()}. HINT: R = 0 is singular in "
                         "this parametrisation; use a small positive R")
    s2 = np.empty_like(R)
    sig = np.empty_like(R)

    def _nu(r: float) -> float:
        return float(density(np.asarray(r)))

    for i, Ri in enumerate(R):
        t_max = np.arccosh(r_max / Ri)
        # Break points at ln(2 R) etc. are unnecessary: the integrands are smooth in t.
        def num(t: float, Ri: float = Ri) -> float:
            r = Ri * np.cosh(t)
            return (1.0 - float(solution.beta(r)) / np.cosh(t) ** 2) * _nu(r) * float(solution.sigma_r2(r)) * r

        def den(t: float, Ri: float = Ri) -> float:
            r = Ri * np.cosh(t)
            return _nu(r) * r

        with warnings.catch_warnings():
            warnings.simplefilter("error", IntegrationWarning)
            a, _ = quad(num, 0.0, t_max, epsrel=epsrel, epsabs=0.0, limit=400)
            b, _ = quad(den, 0.0, t_max, epsrel=epsrel, epsabs=0.0, limit=400)
        s2[i] = a / b
        sig[i] = 2.0 * b
    return s2, sig
