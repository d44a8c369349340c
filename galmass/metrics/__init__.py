"""Evaluation metrics: literature estimators, residual statistics, calibration (coverage, TARP, ranks).

Metrics of Sarrato-Alós et al. 2025 (A&A) and Expósito-Márquez et al. 2026. ``compute_metrics`` gathers everything for one evaluated run; ``galmass.report`` renders it.
"""

from galmass.metrics.calibration import DEFAULT_LEVELS, coverage, rank_histogram, tarp
from galmass.metrics.estimators import (
    ESTIMATORS,
    G_KPC_KMS2_PER_MSUN,
    LABEL_RADII_FACTORS,
    Estimator,
    estimator_by_name,
    estimator_log_mass,
)
from galmass.metrics.residuals import interp_log_mass, summarise
from galmass.metrics.summary import compute_metrics

__all__ = [
    "DEFAULT_LEVELS",
    "ESTIMATORS",
    "G_KPC_KMS2_PER_MSUN",
    "LABEL_RADII_FACTORS",
    "Estimator",
    "compute_metrics",
    "coverage",
    "estimator_by_name",
    "estimator_log_mass",
    "interp_log_mass",
    "rank_histogram",
    "summarise",
    "tarp",
]
