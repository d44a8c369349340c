"""The binned σ_los check shared by the physics tests: sampled stars against the Jeans projection integral."""

from __future__ import annotations

import numpy as np

from galmass.mocks.galaxy import Galaxy, jeans_solution
from galmass.physics.jeans import projected_dispersion
from galmass.physics.profiles import plummer_density

EDGES_RH = np.array([0.25, 0.4, 0.6, 0.8, 1.0, 1.3, 1.7, 2.2, 3.0])
"""Bins of R / a (a = the Plummer scale = R_h) where the comparison is made."""


def binned_sigma_ratio(g: Galaxy, pos: np.ndarray, vel: np.ndarray, reference: Galaxy | None = None,
                       min_count: int = 20_000) -> np.ndarray:
    """σ_los(sampled) / σ_los(Jeans projection of ``reference`` or g) in bins of R/R_h from 0.25 to 3.

    Three orthogonal projections of a spherical system are stacked (each is an unbiased projection); the
    expectation is the quadrature projection on a fine grid, interpolated to each star's R (Plummer light).
    """
    ref = reference or g
    R = np.concatenate([np.hypot(pos[:, 1], pos[:, 2]), np.hypot(pos[:, 0], pos[:, 2]), np.hypot(pos[:, 0], pos[:, 1])])
    v2 = np.concatenate([vel[:, 0], vel[:, 1], vel[:, 2]]) ** 2
    grid = np.geomspace(0.2, 3.3, 36) * g.a
    s2_grid, _ = projected_dispersion(grid, jeans_solution(ref), lambda r: plummer_density(r, g.a))
    expect = np.exp(np.interp(np.log(R), np.log(grid), np.log(s2_grid)))
    edges = g.a * EDGES_RH
    idx = np.digitize(R, edges) - 1
    ok = (idx >= 0) & (idx < len(edges) - 1)
    assert np.bincount(idx[ok], minlength=len(edges) - 1).min() > min_count
    return np.sqrt(np.bincount(idx[ok], v2[ok]) / np.bincount(idx[ok], expect[ok]))
