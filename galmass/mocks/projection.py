"""Lines of sight and projection of 3-D positions/velocities onto the sky.

Convention: ``los`` is the unit vector from the observer towards the galaxy, so v_los = v . los is positive for
receding tracers. The sky basis (e_x, e_y, los) is right-handed; ``roll`` rotates (e_x, e_y) about the line of sight.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["fibonacci_los", "projection_basis", "project"]

_GOLDEN_ANGLE = np.pi * (3.0 - np.sqrt(5.0))


def _cross(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    # np.cross is ~20x slower for single 3-vectors, and it is called for every projection.
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def fibonacci_los(n: int) -> NDArray[np.float64]:
    """n nearly uniformly spread unit vectors on the sphere (Fibonacci lattice), shape [n, 3].

    z_i = 1 - (2 i + 1)/n (equal-area bands), phi_i = i x golden angle (Gonzalez 2010, Math. Geosci. 42, 49).
    """
    if n < 1:
        raise ValueError(f"need n >= 1 lines of sight, got {n}")
    i = np.arange(n, dtype=np.float64)
    z = 1.0 - (2.0 * i + 1.0) / n
    rho = np.sqrt(1.0 - z * z)
    phi = i * _GOLDEN_ANGLE
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=-1)


def projection_basis(los: ArrayLike, roll: float = 0.0) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Sky unit vectors (e_x, e_y) perpendicular to ``los``, rotated by ``roll`` [rad] about it.

    e_x x e_y = los (right-handed). The un-rolled e_x is perpendicular to both the line of sight and the z axis
    (the x axis when the line of sight is within ~25 deg of z).
    """
    los = np.asarray(los, dtype=np.float64)
    norm = np.linalg.norm(los)
    if los.shape != (3,) or not np.isfinite(norm) or norm == 0:
        raise ValueError(f"los must be a finite non-zero 3-vector, got {los}. HINT: use fibonacci_los(n)[i]")
    los = los / norm
    ref = np.array([0.0, 0.0, 1.0]) if abs(los[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = _cross(ref, los)
    e1 /= np.linalg.norm(e1)
    e2 = _cross(los, e1)
    c, s = np.cos(roll), np.sin(roll)
    return c * e1 + s * e2, -s * e1 + c * e2


def project(
    pos: ArrayLike, vel: ArrayLike, los: ArrayLike, roll: float = 0.0
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Project positions [kpc] and velocities [km/s] (each [n, 3]) onto the sky: (x [kpc], y [kpc], v_los [km/s])."""
    pos = np.asarray(pos, dtype=np.float64)
    vel = np.asarray(vel, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3 or vel.shape != pos.shape:
        raise ValueError(f"pos and vel must both be [n, 3], got {pos.shape} and {vel.shape}")
    e_x, e_y = projection_basis(los, roll)
    los_hat = _cross(e_x, e_y)
    return pos @ e_x, pos @ e_y, vel @ los_hat
