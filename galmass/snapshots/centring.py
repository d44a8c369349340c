"""Find a halo in particle data: shrinking-sphere centre, bulk velocity, R200 and the enclosed-mass profile."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from galmass.physics.constants import G

__all__ = ["shrinking_sphere_centre", "bulk_velocity", "rho_crit", "r200_from_particles", "EnclosedMass"]


def shrinking_sphere_centre(
    pos: ArrayLike, mass: ArrayLike, *, shrink: float = 0.975, n_min: int = 100, r_start: float | None = None,
    start: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Centre of a particle system by shrinking spheres (Power et al. 2003, MNRAS 338, 14, section 2.5).

    Start from the centre of mass of all particles (or ``start``) and the radius holding them all (or ``r_start``),
    then repeatedly take the centre of mass of the particles inside the sphere and shrink its radius by ``shrink``
    until fewer than ``n_min`` particles remain.

    Parameters
    ----------
    pos : array [n, 3]
        Positions [kpc].
    mass : array [n]
        Masses [Msun].
    shrink : float
        Radius factor per iteration, in (0, 1) (Power et al.: 0.975).
    n_min : int
        Stop when fewer particles than this are inside the sphere.
    r_start : float, optional
        Initial radius [kpc].
    start : array [3], optional
        Initial centre [kpc].

    Returns
    -------
    ndarray [3]
        Centre [kpc].
    """
    pos = np.asarray(pos, dtype=np.float64)
    mass = np.asarray(mass, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3 or mass.shape != (len(pos),) or len(pos) < 1:
        raise ValueError(f"need positions [n, 3] and masses [n] with n >= 1, got {pos.shape} and {mass.shape}")
    if not 0 < shrink < 1:
        raise ValueError(f"shrink must be in (0, 1), got {shrink}. HINT: Power et al. 2003 use 0.975")
    centre = np.average(pos, axis=0, weights=mass) if start is None else np.asarray(start, dtype=np.float64)
    radius = float(np.sqrt(np.max(np.sum((pos - centre) ** 2, axis=1)))) if r_start is None else float(r_start)
    # Work on the shrinking subset only: a particle outside one sphere is (to within the centre's small step)
    # outside all later, smaller ones.
    sub_pos, sub_mass = pos, mass
    while True:
        inside = np.sum((sub_pos - centre) ** 2, axis=1) <= radius * radius
        if np.count_nonzero(inside) < n_min:
            return centre
        sub_pos, sub_mass = sub_pos[inside], sub_mass[inside]
        centre = np.average(sub_pos, axis=0, weights=sub_mass)
        radius *= shrink


def bulk_velocity(pos: ArrayLike, vel: ArrayLike, mass: ArrayLike, radius: float) -> NDArray[np.float64]:
    """Mass-weighted mean velocity [km/s] of the particles within ``radius`` [kpc] of the origin (all if none are)."""
    pos, vel, mass = (np.asarray(x, dtype=np.float64) for x in (pos, vel, mass))
    inside = np.sum(pos * pos, axis=1) <= radius * radius
    if not np.any(inside):
        inside = np.ones(len(pos), dtype=bool)
    return np.average(vel[inside], axis=0, weights=mass[inside])


def rho_crit(a: float, h: float, omega_m: float, omega_l: float) -> float:
    """Critical density 3 H(a)^2 / (8 pi G) [Msun / kpc^3] with H = 0.1 h sqrt(Om a^-3 + Ok a^-2 + OL) km/s/kpc."""
    omega_k = 1.0 - omega_m - omega_l
    hubble = 0.1 * h * np.sqrt(omega_m / a**3 + omega_k / a**2 + omega_l)
    return float(3.0 * hubble**2 / (8.0 * np.pi * G))


class EnclosedMass:
    """M(<r) [Msun] of particles about the origin, exact at particle radii, vectorised over r [kpc].

    Below the radius r_k of the ``k_inner``-th particle (too few particles to resolve) the mass is continued as a
    constant density, M = M(<r_k) (r / r_k)^3, so log10 M stays finite at any r > 0.
    """

    def __init__(self, radii: ArrayLike, mass: ArrayLike, k_inner: int = 32) -> None:
        radii = np.asarray(radii, dtype=np.float64)
        order = np.argsort(radii, kind="stable")
        self.r = radii[order]
        self.cum = np.cumsum(np.asarray(mass, dtype=np.float64)[order])
        k = min(k_inner, len(self.r)) - 1
        self.r_k, self.m_k = float(self.r[k]), float(self.cum[k])

    def __call__(self, r: ArrayLike) -> NDArray[np.float64]:
        r = np.asarray(r, dtype=np.float64)
        i = np.searchsorted(self.r, r, side="right")
        m = np.where(i > 0, self.cum[np.maximum(i - 1, 0)], 0.0)
        return np.where(r < self.r_k, self.m_k * (r / self.r_k) ** 3, m)


def r200_from_particles(radii: ArrayLike, mass: ArrayLike, rho_c: float) -> tuple[float, float]:
    """(R200 [kpc], M200 [Msun]): the outermost radius where the mean enclosed density is 200 rho_c.

    Raises ValueError when the density never reaches 200 rho_c (e.g. a wrong centre or wrong units).
    """
    radii = np.asarray(radii, dtype=np.float64)
    order = np.argsort(radii, kind="stable")
    r = radii[order]
    m = np.cumsum(np.asarray(mass, dtype=np.float64)[order])
    with np.errstate(divide="ignore"):
        mean_rho = m / (4.0 / 3.0 * np.pi * r**3)
    above = np.nonzero(mean_rho >= 200.0 * rho_c)[0]
    if above.size == 0:
        raise ValueError(f"the mean enclosed density never reaches 200 rho_crit = {200 * rho_c:.3g} Msun/kpc^3. "
                         "HINT: check the centre and the snapshot's units (h, a, UnitLength_in_cm)")
    j = int(above[-1])
    return float(r[j]), float(m[j])
