"""Fourth-order Jeans equation of an isotropic spherical system and the line-of-sight kurtosis it predicts.

Gaussian velocities (the galmass default, :func:`galmass.mocks.galaxy.sample_stars`) have a line-of-sight (LOS)
kurtosis of exactly 3; an equilibrium distribution function (DF) does not. For an isotropic DF f(E) the higher
moments obey (Merrifield & Kent 1990, AJ 99, 1548, eq. 2; Łokas 2002, MNRAS 333, 697, eq. 7 with beta = 0)

    d(nu <v_r^4>)/dr = -3 nu <v_r^2> dPhi/dr = -3 nu sigma_r^2 G M(<r) / r^2,

so, with nu <v_r^4> -> 0 at infinity,

    nu <v_r^4>(r) = 3 int_r^inf nu sigma_r^2 G M(r') / r'^2 dr'.

(Derivation: nu <v_r^(2k)> = 4 pi c_k int_0^sqrt(2 Psi) f(Psi - v^2/2) v^(2k+2) dv with c_1 = 1/3, c_2 = 1/5;
differentiating under the integral and integrating by parts gives d(nu <v_r^4>)/dPsi = 3 nu <v_r^2>.)
A Gaussian would have <v_r^4> = 3 sigma_r^4; the equilibrium value differs, and it is what an isotropic DF has.

Projection. For an isotropic DF the velocity distribution at each point is isotropic, so the distribution of the
velocity component along ANY fixed direction - in particular the line of sight - is that of v_r at that point:
<v_los^2>(r) = sigma_r^2 and <v_los^4>(r) = <v_r^4>. The LOSVD at projected radius R is the nu-weighted mixture of
these along the line of sight, hence (Łokas 2002, eqs. 10-12 with beta = 0)

    Sigma(R)                 = 2 int_R^inf nu r dr / sqrt(r^2 - R^2),
    Sigma sigma_los^2(R)     = 2 int_R^inf nu sigma_r^2 r dr / sqrt(r^2 - R^2),
    Sigma <v_los^4>(R)       = 2 int_R^inf nu <v_r^4> r dr / sqrt(r^2 - R^2),
    kappa_los(R)             = <v_los^4> / sigma_los^4      (3 for a Gaussian LOSVD).

Gaussian mocks for comparison: isotropic Gaussian velocities with the Jeans sigma_r(r) have <v_los^4>(r) =
3 sigma_r^4, so their LOSVD at R is a mixture of Gaussians of different widths along the line of sight, with
kappa_los >= 3 (equal only where sigma_r is constant): ``gaussian=True`` projects 3 nu sigma_r^4 instead.

Check: the self-consistent isotropic Plummer sphere (an n = 5 polytrope, f ∝ E^(7/2)) has nu sigma_r^2 ∝ Psi^6 / 6,
nu <v_r^4> ∝ Psi^7 / 14 and kappa_los = (18/7) x 4096 / (405 pi^2) = 2.6350 at every R (tests/test_losvd.py).

Units: r, R in kpc; velocities in km/s; M in Msun; G from :mod:`galmass.physics.constants`. The tracer density's
normalisation cancels in every ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.integrate import simpson

from galmass.physics.constants import G
from galmass.physics.jeans import JeansSolution, solve_jeans

__all__ = ["FourthMoments", "solve_fourth_moment", "projected_moments", "los_kurtosis"]

Profile = Callable[[NDArray[np.float64]], NDArray[np.float64]]


def _outer_cumulative(h: NDArray[np.float64], lnr: NDArray[np.float64]) -> NDArray[np.float64]:
    """int_r^inf h d ln r on the grid, h treated as a power law in r between grid points, power-law tail beyond.

    Same scheme as :func:`galmass.physics.jeans.solve_jeans` (exact for power-law wings, where a plain trapezoid
    would be off by ~k^2 du^2 / 12). Requires h > 0 and h falling outwards faster than r^0 at the last points.
    """
    du = lnr[1] - lnr[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        lnratio = np.log(h[1:] / h[:-1])
    flat = ~np.isfinite(lnratio) | (np.abs(lnratio) < 1e-6)
    seg = np.where(flat, 0.5 * (h[1:] + h[:-1]) * du, du * (h[1:] - h[:-1]) / np.where(flat, 1.0, lnratio))
    slope = np.log(h[-1] / h[-2]) / du  # h ~ r^slope beyond the grid
    if not slope < 0:
        raise ValueError(f"integrand falls as r^{slope:.2f} at r_max, too slowly to converge. HINT: the tracer "
                         "density must fall faster than r^-3")
    tail = h[-1] / -slope
    return np.concatenate([np.cumsum(seg[::-1])[::-1], [0.0]]) + tail


@dataclass(frozen=True, eq=False)
class FourthMoments:
    """nu sigma_r^2 and nu <v_r^4> of an isotropic tracer on a log-spaced radius grid (build: solve_fourth_moment).

    ``nu`` has the normalisation of the density callable given to :func:`solve_fourth_moment`.
    """

    r: NDArray[np.float64]
    """Grid radii [kpc], log-spaced, increasing."""
    nu: NDArray[np.float64]
    """Tracer density on the grid [density units]."""
    nu_v2: NDArray[np.float64]
    """nu sigma_r^2 [density units x km^2/s^2]."""
    nu_v4: NDArray[np.float64]
    """nu <v_r^4> [density units x km^4/s^4]."""
    jeans: JeansSolution
    """The second-order solution the fourth moment was integrated from."""

    def kurtosis_3d(self, r: ArrayLike) -> NDArray[np.float64]:
        """Local <v_r^4> / sigma_r^4 at radii r [kpc] (= <v_los^4>/<v_los^2>^2 at that point; 3 for a Gaussian)."""
        k = self.nu_v4 * self.nu / self.nu_v2**2
        return np.interp(np.log(np.asarray(r, dtype=np.float64)), np.log(self.r), k)


def solve_fourth_moment(
    mass: Profile, density: Profile, *, scale: float, n_grid: int = 3000
) -> FourthMoments:
    """Solve the isotropic 2nd- and 4th-order spherical Jeans equations for a tracer in a total mass profile.

    Parameters
    ----------
    mass : callable
        Total enclosed mass M(<r) [Msun] of r [kpc], vectorised.
    density : callable
        Tracer density nu(r) (any normalisation), vectorised over r [kpc].
    scale : float
        Tracer scale radius [kpc]; the grid spans 1e-5 .. 1e5 scale (as :func:`galmass.physics.jeans.solve_jeans`).
    n_grid : int
        Grid points.

    Returns
    -------
    FourthMoments

    Notes
    -----
    sigma_r^2 comes from :func:`galmass.physics.jeans.solve_jeans` (beta = 0) on the same grid, so sigma_los here
    equals :func:`galmass.physics.jeans.projected_dispersion`; the fourth moment integrates 3 nu sigma_r^2 G M / r^2
    outwards-in with the same piecewise power-law quadrature.
    """
    sol = solve_jeans(mass, density, scale=scale, beta=0.0, r_a=None, n_grid=n_grid)
    r = sol.r
    lnr = np.log(r)
    nu = np.asarray(density(r), dtype=np.float64)
    nu_v2 = nu * sol.sigma_r2_grid
    g = G * np.asarray(mass(r), dtype=np.float64) / r**2  # -dPhi/dr [km^2/s^2/kpc]
    nu_v4 = 3.0 * _outer_cumulative(nu_v2 * g * r, lnr)  # integrand in d ln r
    if np.any(~np.isfinite(nu_v4)) or np.any(nu_v4 <= 0):
        raise ValueError("fourth moment is not finite and positive on the grid. HINT: check mass(r) and density(r)")
    return FourthMoments(r=r, nu=nu, nu_v2=nu_v2, nu_v4=nu_v4, jeans=sol)


def projected_moments(
    R: ArrayLike, moments: FourthMoments, *, gaussian: bool = False, n_t: int = 4001
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Surface density Sigma(R), sigma_los^2(R) [km^2/s^2] and <v_los^4>(R) [km^4/s^4] of an isotropic tracer.

    With r = R cosh t (dz = r dt) the Abel projections become smooth integrals over t in [0, acosh(r_max / R)],
    evaluated vectorised over R by Simpson's rule on ``n_t`` points; the moments are interpolated log-linearly in
    ln r from the solution grid (which is fine, d ln r ~ 0.008).

    Parameters
    ----------
    R : float or ndarray
        Projected radii [kpc], > 0 and well inside the grid's r_max.
    moments : FourthMoments
        From :func:`solve_fourth_moment`.
    gaussian : bool
        Project 3 nu sigma_r^4 (Gaussian velocities with the Jeans sigma_r, the galmass default mocks) instead of
        the equilibrium nu <v_r^4>.
    n_t : int
        Quadrature points per line of sight (odd).

    Returns
    -------
    surface, sigma_los2, v4_los : ndarray
        Same shape as ``np.atleast_1d(R)``; ``surface`` in the density's units x kpc.
    """
    R = np.atleast_1d(np.asarray(R, dtype=np.float64))
    r_max = moments.r[-1]
    if np.any(R <= 0) or np.any(R >= 1e-2 * r_max):
        raise ValueError(f"R must lie in (0, {1e-2 * r_max:g}) kpc, got {R.min()}..{R.max()}")
    lnr = np.log(moments.r)
    t = np.linspace(0.0, 1.0, n_t)[None, :] * np.arccosh(r_max / R)[:, None]  # [n_R, n_t]
    r = R[:, None] * np.cosh(t)
    lr = np.log(r)

    def los(q: NDArray[np.float64]) -> NDArray[np.float64]:
        integrand = np.exp(np.interp(lr, lnr, np.log(q))) * r
        return 2.0 * simpson(integrand, x=t, axis=1)

    nu_v4 = 3.0 * moments.nu_v2**2 / moments.nu if gaussian else moments.nu_v4
    surface, s2, s4 = los(moments.nu), los(moments.nu_v2), los(nu_v4)
    return surface, s2 / surface, s4 / surface


def los_kurtosis(R: ArrayLike, moments: FourthMoments, *, gaussian: bool = False) -> NDArray[np.float64]:
    """LOS kurtosis kappa_los(R) = <v_los^4> / sigma_los^4 of an isotropic tracer at projected radii R [kpc]
    (dimensionless; 3 for a Gaussian LOSVD). ``gaussian``: that of Gaussian Jeans mocks (see the module notes)."""
    _, s2, s4 = projected_moments(R, moments, gaussian=gaussian)
    return s4 / s2**2
