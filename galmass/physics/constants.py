"""Physical constants, the cosmology and the fixed radial grids shared by every galmass module.

Units everywhere in galmass: kpc, km/s, Msun.
"""

from __future__ import annotations

import numpy as np

__all__ = ["G", "H_LITTLE", "H0_KMS_KPC", "RHO_CRIT", "RADII_FACTORS", "LOG_R_GRID"]

G: float = 4.30092e-6
"""Newton's constant [kpc (km/s)^2 / Msun]."""

H_LITTLE: float = 0.7
"""Dimensionless Hubble constant h = H0 / (100 km/s/Mpc)."""

H0_KMS_KPC: float = 0.1 * H_LITTLE
"""Hubble constant [km/s/kpc] (100 h km/s/Mpc = 0.1 h km/s/kpc)."""

RHO_CRIT: float = 3.0 * H0_KMS_KPC**2 / (8.0 * np.pi * G)
"""Critical density of the Universe at z = 0, 3 H0^2 / (8 pi G) [Msun/kpc^3] (~136 for h = 0.7)."""

RADII_FACTORS: np.ndarray = np.round(np.arange(0.6, 2.41, 0.2), 1)
"""The ten label radii in units of R_h: f = 0.6, 0.8, ..., 2.4. Labels are log10 M_total(< f R_h) [Msun]."""
RADII_FACTORS.flags.writeable = False

LOG_R_GRID: np.ndarray = np.logspace(-3.0, np.log10(300.0), 200)
"""Radii [kpc] (NOT their logarithm) on a log-spaced grid, 1e-3 .. 300 kpc, 200 points, on which each galaxy's
true log10 M_total(<r) is stored so that any radius (e.g. an estimator's) can be evaluated later."""
LOG_R_GRID.flags.writeable = False
