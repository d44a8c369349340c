"""Calibration of posterior samples: marginal coverage, TARP (joint) and rank histograms (Sarrato-Alós et al. 2025; TARP: Lemos et al. 2023, arXiv:2302.03026).

Shapes throughout: ``samples`` [S, N, D] are S posterior draws for each of N test projections in D dimensions
(log10 M at the D = 10 radii [Msun]); ``truth`` [N, D] the true values in the same units.

A calibrated posterior has coverage(level) = level for every level and an expected-coverage curve
ECP(α) = α (TARP); an over-confident one (too narrow) lies below the diagonal in coverage, a biased one too.

References
----------
Lemos, Coogan, Hezaveh & Perreault-Levasseur 2023, "Sampling-Based Accuracy Testing of Posterior Estimators
for General Inference" (TARP), ICML, arXiv:2302.03026.
Talts et al. 2018, "Validating Bayesian Inference Algorithms with Simulation-Based Calibration",
arXiv:1804.06788 (rank histograms).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["DEFAULT_LEVELS", "coverage", "tarp", "tarp_fractions", "tarp_ecp", "rank_histogram"]

DEFAULT_LEVELS: NDArray[np.float64] = np.linspace(0.05, 0.95, 19)
"""Nominal credible levels 0.05, 0.10, …, 0.95."""


def _check_samples_truth(samples: ArrayLike, truth: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    s = np.asarray(samples, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if s.ndim != 3 or t.ndim != 2 or s.shape[1:] != t.shape or s.shape[0] < 1 or t.shape[0] < 1:
        raise ValueError(
            f"need samples [S, N, D] and truth [N, D] with matching N, D; got {s.shape} and {t.shape}. "
            "HINT: put the sample axis first (posterior draws, projections, radii)"
        )
    for name, arr in (("samples", s), ("truth", t)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(
                f"{name} contains {int((~np.isfinite(arr)).sum())} non-finite values. "
                "HINT: check the flow's samples for NaN (diverged training) before computing calibration"
            )
    return s, t


def coverage(
    samples: ArrayLike, truth: ArrayLike, levels: ArrayLike | None = None
) -> NDArray[np.float64]:
    """Empirical marginal coverage of central credible intervals, per dimension.

    For each level ℓ and dimension d, the central interval is [q_{(1−ℓ)/2}, q_{(1+ℓ)/2}] of the S samples
    (linear-interpolated sample quantiles); coverage is the fraction of the N projections whose truth lies in it.

    Parameters
    ----------
    samples : ndarray [S, N, D]
        Posterior draws (e.g. log10 M [Msun]).
    truth : ndarray [N, D]
        True values, same units.
    levels : ndarray [L], optional
        Nominal levels in (0, 1); default :data:`DEFAULT_LEVELS` (0.05 … 0.95, 19 levels).

    Returns
    -------
    ndarray [L, D]
        Empirical coverage (fraction of projections) per level and dimension.
    """
    s, t = _check_samples_truth(samples, truth)
    lv = DEFAULT_LEVELS if levels is None else np.atleast_1d(np.asarray(levels, dtype=np.float64))
    if lv.ndim != 1 or not np.all((lv > 0) & (lv < 1)):
        raise ValueError(f"levels must be a 1-D array in (0, 1), got {np.asarray(levels).tolist()}")
    q = np.concatenate([(1.0 - lv) / 2.0, (1.0 + lv) / 2.0])
    bounds = np.quantile(s, q, axis=0)  # [2L, N, D]
    lo, hi = bounds[: lv.size], bounds[lv.size :]
    inside = (t[None] >= lo) & (t[None] <= hi)  # [L, N, D]
    return inside.mean(axis=1)


def tarp(
    samples: ArrayLike,
    truth: ArrayLike,
    rng: np.random.Generator,
    references: ArrayLike | None = None,
    num_alpha: int = 101,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Expected coverage probability by Tests of Accuracy with Random Points (Lemos et al. 2023), joint in D.

    1. Normalise samples and truth per dimension by the mean and standard deviation of the truth set (so that
       the Euclidean distance is not dominated by one dimension). A dimension with zero spread is left unscaled.
    2. For each projection i draw a reference point θ_r,i uniformly in the normalised bounding box of the truth
       set (or use ``references``).
    3. f_i = fraction of samples closer to θ_r,i than the truth is (:func:`tarp_fractions`).
    4. ECP(α) = mean_i [f_i < α]; at α = 1 the comparison is ≤ so that ECP(1) = 1 (as in the ``tarp`` package,
       whose last histogram bin is closed) (:func:`tarp_ecp`).

    Parameters
    ----------
    samples : ndarray [S, N, D]
        Posterior draws.
    truth : ndarray [N, D]
        True values.
    rng : numpy.random.Generator
        Source of the reference points (unused when ``references`` is given).
    references : ndarray [N, D], optional
        Reference points in the *original* (un-normalised) units of ``truth``; normalised like the truth.
    num_alpha : int
        Number of credibility levels α on a uniform grid over [0, 1] (default 101).

    Returns
    -------
    alpha : ndarray [num_alpha]
        Credibility levels 0 … 1.
    ecp : ndarray [num_alpha]
        Expected coverage probability at each α.
    """
    return tarp_ecp(tarp_fractions(samples, truth, rng, references), num_alpha)


def tarp_fractions(samples: ArrayLike, truth: ArrayLike, rng: np.random.Generator,
                   references: ArrayLike | None = None) -> NDArray[np.float64]:
    """TARP's f_i [N] (steps 1-3 of :func:`tarp`): per projection, the fraction of its samples closer to its
    random reference point than its truth. Uniform on [0, 1] for a calibrated posterior; resampling the f_i (say
    by galaxy) gives the statistic's sampling spread without redrawing the references."""
    s, t = _check_samples_truth(samples, truth)
    n, d = t.shape
    mean = t.mean(axis=0)
    std = t.std(axis=0)
    # A constant truth dimension has no natural scale; dividing by 0 would make every distance NaN.
    std = np.where(std > 0, std, 1.0)
    tn = (t - mean) / std
    sn = (s - mean) / std
    if references is None:
        refs = rng.uniform(tn.min(axis=0), tn.max(axis=0), size=(n, d))
    else:
        r = np.asarray(references, dtype=np.float64)
        if r.shape != (n, d) or not np.all(np.isfinite(r)):
            raise ValueError(
                f"references must be finite with shape {(n, d)} (like truth), got {r.shape}. "
                "HINT: give one reference point per projection, in the units of truth"
            )
        refs = (r - mean) / std
    # Squared distances suffice for the comparison and avoid S·N square roots.
    d_samples = np.sum((sn - refs[None]) ** 2, axis=-1)  # [S, N]
    d_truth = np.sum((tn - refs) ** 2, axis=-1)  # [N]
    return np.mean(d_samples < d_truth[None], axis=0)


def tarp_ecp(f: ArrayLike, num_alpha: int = 101) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(α, ECP(α)) from TARP's f_i (step 4 of :func:`tarp`), on ``num_alpha`` levels over [0, 1]."""
    if num_alpha < 2:
        raise ValueError(f"num_alpha must be >= 2, got {num_alpha}")
    f = np.asarray(f, dtype=np.float64)
    alpha = np.linspace(0.0, 1.0, num_alpha)
    ecp = np.mean(f[None, :] < alpha[:, None], axis=1)
    ecp[alpha >= 1.0] = np.mean(f <= 1.0)
    return alpha, ecp


def rank_histogram(
    samples: ArrayLike, truth: ArrayLike, bins: int = 20
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Histogram of the normalised rank of the truth among the samples, per dimension (Talts et al. 2018).

    The normalised rank u = (number of samples < truth) / S lies in [0, 1]; it is uniform for a calibrated
    posterior, ∪-shaped for an over-confident one, ∩-shaped for an under-confident one, tilted for a biased one.

    Parameters
    ----------
    samples : ndarray [S, N, D]
        Posterior draws.
    truth : ndarray [N, D]
        True values.
    bins : int
        Number of equal-width bins over [0, 1] (u = 1 falls in the last bin).

    Returns
    -------
    counts : ndarray [bins, D] of int
        Projections per bin and dimension (each column sums to N).
    edges : ndarray [bins + 1]
        Bin edges in u.
    """
    s, t = _check_samples_truth(samples, truth)
    if int(bins) < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    bins = int(bins)
    u = np.mean(s < t[None], axis=0)  # [N, D]
    idx = np.minimum((u * bins).astype(np.int64), bins - 1)
    counts = np.zeros((bins, t.shape[1]), dtype=np.int64)
    for dim in range(t.shape[1]):  # D is small (10); bincount per column is the vectorised part
        counts[:, dim] = np.bincount(idx[:, dim], minlength=bins)
    return counts, np.linspace(0.0, 1.0, bins + 1)
