"""Literature mass estimators M(<f·R_h) = C · σ_los² · R_h / G (Walker et al. 2009; Wolf et al. 2010; Amorisco & Evans 2011; Campbell et al. 2017; Errani et al. 2018): the baselines for the CNN.

Each estimator turns the line-of-sight velocity dispersion σ_los [km/s] of the observed stars and their projected
half-number radius R_h [kpc] into the 3-D total mass [Msun] enclosed within one radius f·R_h:

=====================  =======  =====  =====================================================================
estimator              f        C      reference
=====================  =======  =====  =====================================================================
Walker2009             1.0      2.5    Walker et al. 2009, ApJ 704, 1274
Wolf2010               4/3      4      Wolf et al. 2010, MNRAS 406, 1220 (3 σ² r½ / G with r½ ≈ 4/3 R_h)
AmoriscoEvans2011      1.7      5.8    Amorisco & Evans 2011, MNRAS 411, 2118
Campbell2017           1.8      6      Campbell et al. 2017, MNRAS 469, 2335 (least certain: f ≈ 1.77–1.8)
Errani2018             1.8      6.3    Errani, Peñarrubia & Walker 2018, MNRAS 481, 5073 (3.5 × 1.8)
=====================  =======  =====  =====================================================================

Units: σ_los in km/s, R_h in kpc, masses in Msun, G = 4.30092e-6 kpc (km/s)² Msun⁻¹.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from galmass.physics.constants import G, RADII_FACTORS

__all__ = [
    "G_KPC_KMS2_PER_MSUN",
    "LABEL_RADII_FACTORS",
    "Estimator",
    "ESTIMATORS",
    "estimator_by_name",
    "estimator_log_mass",
]

# Aliases of the shared constants under the names this package exported first (kept for its callers).
G_KPC_KMS2_PER_MSUN: float = G
"""Gravitational constant [kpc (km/s)² Msun⁻¹] (= galmass.physics.constants.G)."""
LABEL_RADII_FACTORS: tuple[float, ...] = tuple(float(f) for f in RADII_FACTORS)
"""The label grid r_i / R_h = 0.6, 0.8, …, 2.4 (Sarrato-Alós et al. 2025; = galmass.physics.constants.RADII_FACTORS)."""


@dataclass(frozen=True)
class Estimator:
    """One literature estimator M(<radius_factor · R_h) = coefficient · σ_los² · R_h / G.

    Parameters
    ----------
    name : str
        Short identifier (``"Wolf2010"``), used as a key in metrics files.
    radius_factor : float
        f: the estimator's radius in units of the projected half-number radius R_h.
    coefficient : float
        C: the dimensionless prefactor.
    reference : str
        Bibliographic reference.
    note : str
        Caveat shown next to the estimator in reports ("" when none).
    """

    name: str
    radius_factor: float
    coefficient: float
    reference: str
    note: str = ""


ESTIMATORS: tuple[Estimator, ...] = (
    Estimator("Walker2009", 1.0, 2.5, "Walker et al. 2009, ApJ 704, 1274"),
    Estimator(
        "Wolf2010", 4.0 / 3.0, 4.0, "Wolf et al. 2010, MNRAS 406, 1220", "C = 3 at r_1/2 ~ 4/3 R_h: 3 x 4/3 = 4"
    ),
    Estimator("AmoriscoEvans2011", 1.7, 5.8, "Amorisco & Evans 2011, MNRAS 411, 2118"),
    Estimator(
        "Campbell2017",
        1.8,
        6.0,
        "Campbell et al. 2017, MNRAS 469, 2335",
        "least certain (radius ~1.77-1.8 R_h, C ~ 6)",
    ),
    Estimator(
        "Errani2018", 1.8, 6.3, "Errani, Penarrubia & Walker 2018, MNRAS 481, 5073", "C = 3.5 x 1.8 = 6.3"
    ),
)
"""The five literature estimators, in order of increasing radius."""


def estimator_by_name(name: str) -> Estimator:
    """Return the estimator called ``name`` (one of :data:`ESTIMATORS`)."""
    for est in ESTIMATORS:
        if est.name == name:
            return est
    valid = [e.name for e in ESTIMATORS]
    raise ValueError(f"unknown estimator {name!r}. HINT: choose one of {valid}")


def estimator_log_mass(est: Estimator, sigma_kms: ArrayLike, rh_kpc: ArrayLike) -> NDArray[np.float64]:
    """log10 of the estimated enclosed mass, log10[C σ_los² R_h / G], within ``est.radius_factor`` · R_h.

    Parameters
    ----------
    est : Estimator
        Which estimator (coefficient C).
    sigma_kms : float | ndarray
        Line-of-sight velocity dispersion of the observed stars [km/s] (the standard deviation of v_los), > 0.
    rh_kpc : float | ndarray
        Projected half-number radius of the observed stars [kpc], > 0. Broadcast against ``sigma_kms``.

    Returns
    -------
    ndarray
        log10 M(< f R_h) [Msun], the broadcast shape of the inputs.
    """
    sigma = np.asarray(sigma_kms, dtype=np.float64)
    rh = np.asarray(rh_kpc, dtype=np.float64)
    for label, arr, unit in (("sigma_kms", sigma, "km/s"), ("rh_kpc", rh, "kpc")):
        bad = ~(np.isfinite(arr) & (arr > 0))
        if np.any(bad):
            first = arr[bad].ravel()[0]
            raise ValueError(
                f"{label} must be finite and > 0 [{unit}], got {first} ({int(bad.sum())} bad values). "
                "HINT: drop projections with fewer than 2 observed stars before evaluating estimators"
            )
    # Sum of logs rather than log of a product: no overflow for any physical input.
    return np.log10(est.coefficient) + 2.0 * np.log10(sigma) + np.log10(rh) - np.log10(G_KPC_KMS2_PER_MSUN)
