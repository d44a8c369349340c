"""Residual statistics in dex and interpolation of log-mass profiles across the radius grid (Sarrato-Alós et al. 2025, Sect. 4: bias, scatter as half the 16–84 % range).

A residual is r = log10(M_pred / M_true) [dex]. Per column (radius or estimator) we report

- bias = median(r),
- scatter = (p84 − p16) / 2 of r — a robust 1σ half-width in dex,
- frac_within_0p1 = fraction of projections with |r| < 0.1 dex.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["summarise", "interp_log_mass"]


def summarise(residual: ArrayLike) -> dict[str, NDArray[np.float64] | int]:
    """Bias, scatter and the |r| < 0.1 dex fraction of residuals, per column.

    Parameters
    ----------
    residual : ndarray [N, K] (or [N], treated as K = 1)
        log10(M_pred / M_true) [dex] for N projections and K radii/estimators. Must be finite.

    Returns
    -------
    dict
        ``"bias"`` [K] median [dex], ``"scatter"`` [K] (p84 − p16)/2 [dex], ``"frac_within_0p1"`` [K] fraction
        with |r| < 0.1 dex, ``"n"`` the number of projections N (int).
    """
    r = np.asarray(residual, dtype=np.float64)
    if r.ndim == 1:
        r = r[:, None]
    if r.ndim != 2 or r.shape[0] == 0:
        raise ValueError(
            f"residual must have shape [N, K] with N >= 1, got {np.shape(residual)}. "
            "HINT: pass one row per projection and one column per radius"
        )
    if not np.all(np.isfinite(r)):
        raise ValueError(
            f"residual contains {int((~np.isfinite(r)).sum())} non-finite values. "
            "HINT: a NaN/Inf residual means a non-positive predicted or true mass upstream; fix it there"
        )
    p16, p50, p84 = np.percentile(r, [16.0, 50.0, 84.0], axis=0)
    return {
        "bias": p50,
        "scatter": 0.5 * (p84 - p16),
        "frac_within_0p1": np.mean(np.abs(r) < 0.1, axis=0),
        "n": int(r.shape[0]),
    }


def interp_log_mass(log_m: ArrayLike, factors_from: ArrayLike, factors_to: ArrayLike) -> NDArray[np.float64]:
    """Interpolate log10 M linearly in log10 r from one radius grid to other radii.

    Enclosed-mass profiles are close to power laws over a factor of a few in radius, so linear interpolation
    in (log M, log r) is far more accurate than in (M, r). Works on any leading shape, e.g. posterior samples
    [S, N, K] → [S, N, E].

    Parameters
    ----------
    log_m : ndarray [..., K]
        log10 M(< f_k R_h) [Msun] on the grid ``factors_from``.
    factors_from : ndarray [K]
        Grid radii in units of R_h, strictly increasing, > 0 (e.g. 0.6, 0.8, …, 2.4).
    factors_to : ndarray [E]
        Target radii in units of R_h, within [factors_from[0], factors_from[-1]] (no extrapolation).

    Returns
    -------
    ndarray [..., E]
        log10 M at the target radii [Msun].
    """
    lm = np.asarray(log_m, dtype=np.float64)
    f_from = np.asarray(factors_from, dtype=np.float64)
    f_to = np.atleast_1d(np.asarray(factors_to, dtype=np.float64))
    if f_from.ndim != 1 or f_from.size < 2 or lm.ndim < 1 or lm.shape[-1] != f_from.size:
        raise ValueError(
            f"log_m's last axis ({lm.shape}) must match factors_from ({f_from.shape}, at least 2 radii). "
            "HINT: pass log_m[..., K] with K = len(factors_from)"
        )
    if not (np.all(f_from > 0) and np.all(np.diff(f_from) > 0)):
        raise ValueError(f"factors_from must be > 0 and strictly increasing, got {f_from.tolist()}")
    if f_to.ndim != 1:
        raise ValueError(f"factors_to must be 1-D, got shape {f_to.shape}")
    outside = (f_to < f_from[0]) | (f_to > f_from[-1]) | ~np.isfinite(f_to)
    if np.any(outside):
        raise ValueError(
            f"factors_to {f_to[outside].tolist()} lie outside the grid [{f_from[0]}, {f_from[-1]}]. "
            "HINT: extrapolating a mass profile is not supported; use radii inside the label grid"
        )
    x = np.log10(f_from)
    xt = np.log10(f_to)
    # Left bracketing index; clipping keeps the right edge (xt == x[-1]) on the last segment with weight 1.
    i = np.clip(np.searchsorted(x, xt, side="right") - 1, 0, x.size - 2)
    w = (xt - x[i]) / (x[i + 1] - x[i])
    return lm[..., i] * (1.0 - w) + lm[..., i + 1] * w
