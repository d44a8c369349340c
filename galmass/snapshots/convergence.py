"""The convergence radius of a simulated halo (Power et al. 2003, MNRAS 338, 14, eq. 20).

Two-body relaxation makes the enclosed mass unreliable where the relaxation time is shorter than the age of the
universe. Power et al. write the ratio of the relaxation time at r to the circular orbit time at R200 as

    kappa(r) = sqrt(200) / 8 * N(<r) / ln N(<r) * (rho_bar(<r) / rho_crit)^(-1/2),

with N(<r) the particle number and rho_bar(<r) = M(<r) / (4/3 pi r^3) the mean enclosed density, and find the
circular velocity converged (to ~10 %) where kappa >= 1. The convergence radius r_conv solves kappa(r_conv) = 1.
galmass evaluates it with the high-resolution dark-matter particles (PartType1; tipsy: the lightest dark matter),
whose number sets the relaxation, and rho_crit(a) of the snapshot's cosmology.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["power_kappa", "power_radius"]


def power_kappa(n: ArrayLike, m_enc: ArrayLike, r: ArrayLike, rho_crit: float) -> np.ndarray:
    """kappa = sqrt(200)/8 N/ln N (rho_bar/rho_crit)^(-1/2) for N(<r) particles of total mass m_enc [Msun] within
    r [kpc]; rho_crit [Msun/kpc^3]. N <= 1 gives 0 (nothing is converged with one particle)."""
    n, m_enc, r = (np.asarray(x, dtype=np.float64) for x in (n, m_enc, r))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho_bar = m_enc / (4.0 / 3.0 * np.pi * r**3)
        kappa = np.sqrt(200.0) / 8.0 * n / np.log(n) / np.sqrt(rho_bar / rho_crit)
    return np.where(n > 1, kappa, 0.0)


def power_radius(radii: ArrayLike, mass: ArrayLike, rho_crit: float, kappa: float = 1.0) -> float:
    """r_conv [kpc]: the smallest radius beyond which kappa(r) >= ``kappa`` everywhere (Power et al. 2003).

    Parameters
    ----------
    radii : array [n]
        Distances [kpc] of the (dark-matter) particles from the halo centre.
    mass : array [n]
        Their masses [Msun].
    rho_crit : float
        Critical density [Msun / kpc^3] at the snapshot's redshift.
    kappa : float
        Threshold of t_relax(r) / t_circ(R200) (Power et al.: 1; Ludlow et al. 2019 use 0.6).

    Between two particle radii r_k <= r < r_k+1, N = k and M = M_k are fixed and kappa grows as r^(3/2), so the
    crossing there is exact: r* = (3 M_k / (4 pi rho_crit))^(1/3) (8 kappa ln k / (sqrt(200) k))^(2/3). The answer
    is that root in the outermost interval whose start is unconverged (or the start of the next interval, where
    kappa jumps above the threshold as a particle enters). With fewer than 2 particles: inf.
    """
    radii = np.asarray(radii, dtype=np.float64)
    order = np.argsort(radii, kind="stable")
    r = radii[order]
    m = np.cumsum(np.asarray(mass, dtype=np.float64)[order])
    if len(r) < 2:
        return float("inf")
    k = np.arange(1, len(r) + 1, dtype=np.float64)
    low = power_kappa(k, m, np.maximum(r, 1e-300), rho_crit) < kappa  # kappa just inside each interval's start
    j = int(np.nonzero(low)[0][-1])  # k = 1 is always unconverged
    if j == 0:  # kappa(r) for N = 1 is not defined: the interval of the first particle ends at r_2
        return float(r[1])
    n_j = k[j]
    root = (3.0 * m[j] / (4.0 * np.pi * rho_crit)) ** (1 / 3) * (8.0 * kappa * np.log(n_j)
                                                                   / (np.sqrt(200.0) * n_j)) ** (2 / 3)
    root = max(root, float(r[j]))
    return float(min(root, r[j + 1])) if j + 1 < len(r) else float(root)
