"""Axisymmetric Jeans equations for a flattened (oblate) tracer in a spherical potential.

Dwarf spheroidals are not round: their projected ellipticities are 0.1–0.5 (McConnachie 2012, AJ 144, 4), i.e.
intrinsic axis ratios q ≈ 0.5–1 for oblate shapes. A flattened tracer is made from a spherical one by squashing
its symmetry (z) axis: nu(R, z) = nu_sph(m) / q with m^2 = R^2 + z^2 / q^2 (same number of stars, same major
axis). The potential stays the galaxy's spherical one (dark matter dominates dwarfs; the stars' own flattening is
not fed back into the potential).

Velocities follow the cylindrically aligned Jeans equations (JAM_cyl; Cappellari 2008, MNRAS 390, 71, eqs. 8–9)
with a constant beta_z = 1 - sigma_z^2 / sigma_R^2 and no streaming (dispersion-supported):

    nu sigma_z^2(R, z)  = int_z^inf nu(R, z') dPhi/dz' dz'
    nu <v_phi^2>(R, z)  = b [nu sigma_z^2 + R d(nu sigma_z^2)/dR] + R nu dPhi/dR,     b = 1 / (1 - beta_z)
    sigma_R^2 = b sigma_z^2,   sigma_phi^2 = <v_phi^2>

with dPhi/dz = G M(<r) z / r^3 and dPhi/dR = G M(<r) R / r^3 for the spherical mass M(<r). They are solved on a
(ln R, ln z) grid; the z integral uses the power-law segment quadrature of :func:`galmass.physics.jeans.solve_jeans`.
The tests check sigma_R, sigma_z, <v_phi^2> and the projected sigma_los of sampled stars against jampy
(Cappellari's JAM, an independent MGE-based solution of the same equations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.interpolate import RectBivariateSpline

from galmass.physics.constants import G
from galmass.physics.jeans import cumulative_from_outside

__all__ = ["AxisymmetricJeans", "solve_axisymmetric_jeans", "sample_axisymmetric_velocities"]

Profile = Callable[[NDArray[np.float64]], NDArray[np.float64]]


@dataclass(frozen=True, eq=False)
class AxisymmetricJeans:
    """sigma_z^2 and <v_phi^2> [km^2/s^2] of a flattened tracer on a (ln R, ln z) grid, with spline interpolators.

    Build it with :func:`solve_axisymmetric_jeans`. Outside the grid (R or |z| below 1e-4 or above 1e3 times the
    tracer scale) the edge values are held.
    """

    q: float
    """Intrinsic axis ratio of the tracer (1: spherical)."""
    beta_z: float
    """Constant anisotropy 1 - sigma_z^2 / sigma_R^2."""
    ln_r: NDArray[np.float64]
    """Grid of ln R [ln kpc] (also the grid of ln |z|)."""
    _ln_sz2: RectBivariateSpline
    _vphi_ratio: RectBivariateSpline

    def _clip(self, x: ArrayLike) -> NDArray[np.float64]:
        with np.errstate(divide="ignore"):
            return np.clip(np.log(np.abs(np.asarray(x, dtype=np.float64))), self.ln_r[0], self.ln_r[-1])

    def sigma_z2(self, R: ArrayLike, z: ArrayLike) -> NDArray[np.float64]:
        """sigma_z^2 [km^2/s^2] at cylindrical radius R [kpc] and height z [kpc]."""
        return np.exp(self._ln_sz2(self._clip(R), self._clip(z), grid=False))

    def sigma_R2(self, R: ArrayLike, z: ArrayLike) -> NDArray[np.float64]:
        """sigma_R^2 = sigma_z^2 / (1 - beta_z) [km^2/s^2]."""
        return self.sigma_z2(R, z) / (1.0 - self.beta_z)

    def v_phi2(self, R: ArrayLike, z: ArrayLike) -> NDArray[np.float64]:
        """<v_phi^2> [km^2/s^2] (= sigma_phi^2: no streaming); clipped at 0 where the Jeans solution is unphysical."""
        ratio = self._vphi_ratio(self._clip(R), self._clip(z), grid=False)
        return self.sigma_z2(R, z) * np.clip(ratio, 0.0, None)


def solve_axisymmetric_jeans(mass: Profile, density: Profile, *, scale: float, q: float, beta_z: float = 0.0,
                             n_grid: int = 370) -> AxisymmetricJeans:
    """Solve the cylindrically aligned Jeans equations for a tracer nu_sph(m) / q in a spherical mass M(<r).

    Parameters
    ----------
    mass : callable
        Total enclosed mass M(<r) [Msun] of the (spherical) potential, vectorised over r [kpc].
    density : callable
        The tracer's *spherical* density nu_sph(r) (any normalisation), vectorised over r [kpc]; the flattened
        tracer is nu_sph(sqrt(R^2 + z^2 / q^2)).
    scale : float
        Tracer scale [kpc] (e.g. R_h); the grid spans 1e-4 .. 1e3 scale in both R and |z|.
    q : float
        Intrinsic axis ratio, 0 < q <= 1 (oblate; 1 is spherical).
    beta_z : float
        Constant anisotropy 1 - sigma_z^2 / sigma_R^2, < 1.
    n_grid : int
        Grid points per axis over 1e-4 .. 1e4 scale; 370 gives d ln R = 0.05 (sigma^2 within ~2e-3 of jampy).
    """
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be > 0 [kpc], got {scale}")
    if not 0.0 < q <= 1.0:
        raise ValueError(f"axis ratio q must be in (0, 1] (oblate), got {q}")
    if not beta_z < 1.0:
        raise ValueError(f"beta_z must be < 1, got {beta_z}. HINT: beta_z = 1 means sigma_z = 0")
    # The z integral runs one decade past the kept table (1e3 scale), so the kept top rows have their outer
    # integral (the outermost rows of the full grid, integrated from nothing, are dropped).
    ln_r = np.linspace(np.log(1e-4 * scale), np.log(1e4 * scale), n_grid)
    du = ln_r[1] - ln_r[0]
    keep = ln_r <= np.log(1e3 * scale) + 1e-9
    R, z = np.meshgrid(np.exp(ln_r), np.exp(ln_r), indexing="ij")  # axis 0: R, axis 1: z
    r = np.hypot(R, z)
    # M(<r) from a fine 1-D log-log table: the 2-D grid needs ~1e5 values, the profile is smooth in ln r.
    r_tab = np.geomspace(r.min() * 0.99, r.max() * 1.01, 4000)
    ln_m = np.interp(np.log(r), np.log(r_tab), np.log(np.asarray(mass(r_tab), dtype=np.float64)))
    g_over_r3 = G * np.exp(ln_m) / r**3
    nu = np.asarray(density(np.sqrt(R**2 + (z / q) ** 2)), dtype=np.float64) / q
    if np.any(~np.isfinite(nu)) or np.any(nu <= 0) or np.any(~np.isfinite(g_over_r3)):
        raise ValueError("density must be finite and > 0, mass finite, on the axisymmetric Jeans grid. "
                         "HINT: check the profile parameters")
    # int_z^inf nu dPhi/dz dz, in ln z: integrand nu G M z / r^3 * z. The tail beyond 1e3 scale is negligible.
    nu_sz2 = cumulative_from_outside(nu * g_over_r3 * z * z, du)
    nu_sz2 = np.maximum(nu_sz2, np.finfo(float).tiny)
    b = 1.0 / (1.0 - beta_z)
    dln_dlnR = np.gradient(np.log(nu_sz2), du, axis=0)  # R d(nu sigma_z^2)/dR = nu sigma_z^2 dln/dlnR
    sz2 = nu_sz2 / nu
    vphi2 = b * sz2 * (1.0 + dln_dlnR) + g_over_r3 * R * R
    ln_k, sz2, ratio = ln_r[keep], sz2[np.ix_(keep, keep)], (vphi2 / sz2)[np.ix_(keep, keep)]
    return AxisymmetricJeans(q=float(q), beta_z=float(beta_z), ln_r=ln_k,
                             _ln_sz2=RectBivariateSpline(ln_k, ln_k, np.log(sz2)),
                             _vphi_ratio=RectBivariateSpline(ln_k, ln_k, ratio))


def sample_axisymmetric_velocities(sol: AxisymmetricJeans, pos: NDArray[np.float64],
                                   rng: np.random.Generator) -> NDArray[np.float64]:
    """Gaussian velocities [km/s], shape [n, 3], with the Jeans dispersions at positions ``pos`` [kpc] ([n, 3]).

    Independent Gaussians along e_R (sigma_R), e_phi (sqrt <v_phi^2>) and e_z (sigma_z), mean zero: the Jeans
    second moments exactly, with Gaussian line-of-sight distributions (as the spherical Jeans mocks).
    """
    x, y, z = pos[:, 0], pos[:, 1], pos[:, 2]
    R = np.hypot(x, y)
    safe = np.where(R > 0, R, 1.0)
    cos_p, sin_p = np.where(R > 0, x / safe, 1.0), np.where(R > 0, y / safe, 0.0)
    s_R, s_z = np.sqrt(sol.sigma_R2(R, z)), np.sqrt(sol.sigma_z2(R, z))
    s_p = np.sqrt(sol.v_phi2(R, z))
    g = rng.standard_normal((len(R), 3))
    v_R, v_p, v_z = s_R * g[:, 0], s_p * g[:, 1], s_z * g[:, 2]
    return np.stack([v_R * cos_p - v_p * sin_p, v_R * sin_p + v_p * cos_p, v_z], axis=-1)
