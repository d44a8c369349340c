"""All evaluation metrics of one run from posterior samples and truths: the metrics.json + residuals.npz content.

Schema of the returned ``metrics`` (JSON-serialisable; plain floats and lists):

.. code-block:: text

    {"n_projections": N, "radii_factors": [K],
     "cnn": {"bias": [K], "scatter": [K], "frac_within_0p1": [K]},
     "estimators": {name: {"radius_factor": f, "coefficient": C, "note": str,
                           "estimator": {"bias": x, "scatter": x, "frac_within_0p1": x},
                           "cnn": {"bias": x, "scatter": x, "frac_within_0p1": x}}},
     "coverage": {"levels": [L], "per_radius": [K lists of L], "max_abs_error": x},
     "tarp": {"alpha": [A], "ecp": [A], "max_abs_error": x}}

All residuals are log10(M_pred / M_true) [dex]; the CNN prediction is the posterior median over samples. At an
estimator's radius the CNN's posterior *samples* are interpolated in (log M, log r) and then the median is
taken, so the CNN and the estimator are compared at exactly the same radius and projection.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from galmass.metrics.calibration import DEFAULT_LEVELS, coverage, rank_histogram, tarp
from galmass.metrics.estimators import ESTIMATORS, LABEL_RADII_FACTORS, Estimator, estimator_log_mass
from galmass.metrics.residuals import interp_log_mass, summarise

__all__ = ["compute_metrics"]

_STAT_KEYS = ("bias", "scatter", "frac_within_0p1")


def _stats_scalar(summary: dict[str, Any], j: int) -> dict[str, float]:
    return {k: float(summary[k][j]) for k in _STAT_KEYS}


def compute_metrics(
    log_m_samples: ArrayLike,
    log_m_true: ArrayLike,
    sigma_kms: ArrayLike,
    rh_kpc: ArrayLike,
    log_m_true_at_estimators: ArrayLike,
    rng: np.random.Generator,
    *,
    radii_factors: Sequence[float] = LABEL_RADII_FACTORS,
    estimators: Sequence[Estimator] = ESTIMATORS,
    levels: ArrayLike | None = None,
    rank_bins: int = 20,
) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    """Residual statistics, estimator comparison and calibration of one evaluated run.

    Parameters
    ----------
    log_m_samples : ndarray [S, N, K]
        Posterior samples of log10 M(< f_k R_h) [Msun] for N test projections (K = 10 radii).
    log_m_true : ndarray [N, K]
        True log10 M(< f_k R_h) [Msun].
    sigma_kms : ndarray [N]
        Line-of-sight velocity dispersion of the observed stars per projection [km/s].
    rh_kpc : ndarray [N]
        Projected half-number radius of the observed stars per projection [kpc].
    log_m_true_at_estimators : ndarray [N, E]
        True log10 M(< f_e R_h) [Msun] at each estimator's radius (from the galaxy's mass profile, not
        interpolated from the label grid), E = len(estimators).
    rng : numpy.random.Generator
        Draws the TARP reference points.
    radii_factors : sequence of float [K]
        The label radii in units of R_h (default 0.6, 0.8, …, 2.4).
    estimators : sequence of Estimator [E]
        Literature estimators (default all five literature estimators).
    levels : ndarray [L], optional
        Credible levels for coverage (default 0.05 … 0.95).
    rank_bins : int
        Bins of the rank histograms (returned in ``arrays["rank_counts"]``).

    Returns
    -------
    metrics : dict
        JSON-serialisable summary (schema in the module docstring).
    arrays : dict of ndarray
        For residuals.npz: ``cnn_residual``, ``post_median``, ``post_p16``, ``post_p84``, ``truth`` [N, K];
        ``estimator_residual``, ``cnn_at_estimator_residual`` [N, E]; ``estimator_names`` [E] (str);
        ``radii_factors`` [K]; ``estimator_radius_factors`` [E]; ``rank_counts`` [rank_bins, K].
    """
    samples = np.asarray(log_m_samples, dtype=np.float64)
    truth = np.asarray(log_m_true, dtype=np.float64)
    factors = np.asarray(radii_factors, dtype=np.float64)
    ests = tuple(estimators)
    if samples.ndim != 3 or truth.shape != samples.shape[1:] or factors.shape != (truth.shape[-1],):
        raise ValueError(
            f"need log_m_samples [S, N, K], log_m_true [N, K] and radii_factors [K]; got {samples.shape}, "
            f"{truth.shape}, {factors.shape}. HINT: the sample axis comes first"
        )
    n = truth.shape[0]
    sigma = np.asarray(sigma_kms, dtype=np.float64)
    rh = np.asarray(rh_kpc, dtype=np.float64)
    true_est = np.asarray(log_m_true_at_estimators, dtype=np.float64)
    if sigma.shape != (n,) or rh.shape != (n,) or true_est.shape != (n, len(ests)):
        raise ValueError(
            f"need sigma_kms [N], rh_kpc [N], log_m_true_at_estimators [N, E] with N = {n}, E = {len(ests)}; "
            f"got {sigma.shape}, {rh.shape}, {true_est.shape}. HINT: one entry per projection, one column per "
            "estimator in the order of `estimators`"
        )
    if not (np.all(np.isfinite(samples)) and np.all(np.isfinite(truth)) and np.all(np.isfinite(true_est))):
        raise ValueError(
            "log_m_samples, log_m_true and log_m_true_at_estimators must be finite. "
            "HINT: NaN samples usually mean a diverged flow; check the run's training log"
        )

    post_p16, post_median, post_p84 = np.percentile(samples, [16.0, 50.0, 84.0], axis=0)
    cnn_residual = post_median - truth
    cnn_summary = summarise(cnn_residual)

    est_factors = np.array([e.radius_factor for e in ests], dtype=np.float64)
    est_pred = np.stack([estimator_log_mass(e, sigma, rh) for e in ests], axis=-1) if ests else np.zeros((n, 0))
    estimator_residual = est_pred - true_est
    if ests:
        cnn_at_est = np.median(interp_log_mass(samples, factors, est_factors), axis=0)  # [N, E]
    else:
        cnn_at_est = np.zeros((n, 0))
    cnn_at_estimator_residual = cnn_at_est - true_est

    est_entries: dict[str, Any] = {}
    if ests:
        est_summary = summarise(estimator_residual)
        cnn_est_summary = summarise(cnn_at_estimator_residual)
        for j, e in enumerate(ests):
            est_entries[e.name] = {
                "radius_factor": float(e.radius_factor),
                "coefficient": float(e.coefficient),
                "note": e.note,
                "estimator": _stats_scalar(est_summary, j),
                "cnn": _stats_scalar(cnn_est_summary, j),
            }

    lv = DEFAULT_LEVELS if levels is None else np.asarray(levels, dtype=np.float64)
    cov = coverage(samples, truth, lv)  # [L, K]
    alpha, ecp = tarp(samples, truth, rng)
    rank_counts, _ = rank_histogram(samples, truth, rank_bins)

    metrics: dict[str, Any] = {
        "n_projections": int(n),
        "radii_factors": [float(f) for f in factors],
        "cnn": {k: [float(v) for v in cnn_summary[k]] for k in _STAT_KEYS},
        "estimators": est_entries,
        "coverage": {
            "levels": [float(v) for v in lv],
            "per_radius": [[float(v) for v in cov[:, k]] for k in range(cov.shape[1])],
            "max_abs_error": float(np.max(np.abs(cov - lv[:, None]))),
        },
        "tarp": {
            "alpha": [float(v) for v in alpha],
            "ecp": [float(v) for v in ecp],
            "max_abs_error": float(np.max(np.abs(ecp - alpha))),
        },
    }
    arrays: dict[str, NDArray[Any]] = {
        "cnn_residual": cnn_residual,
        "post_median": post_median,
        "post_p16": post_p16,
        "post_p84": post_p84,
        "truth": truth,
        "estimator_residual": estimator_residual,
        "cnn_at_estimator_residual": cnn_at_estimator_residual,
        "estimator_names": np.array([e.name for e in ests], dtype=str),
        "radii_factors": factors,
        "estimator_radius_factors": est_factors,
        "rank_counts": rank_counts,
    }
    return metrics, arrays
