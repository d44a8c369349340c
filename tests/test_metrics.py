"""Tests of galmass.metrics: estimators, residual statistics, interpolation, calibration and compute_metrics.

Expected values come from hand calculation, analytic Gaussian formulae or explicit per-element loops — never
from the code under test. Statistical tolerances are derived from binomial / DKW noise (stated at each test).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import norm

from galmass.metrics import (
    DEFAULT_LEVELS,
    ESTIMATORS,
    G_KPC_KMS2_PER_MSUN,
    LABEL_RADII_FACTORS,
    compute_metrics,
    coverage,
    estimator_by_name,
    estimator_log_mass,
    interp_log_mass,
    rank_histogram,
    summarise,
    tarp,
)

# ----------------------------------------------------------------------------------------------- estimators


def test_estimator_table_matches_design():
    table = {e.name: (e.radius_factor, e.coefficient) for e in ESTIMATORS}
    assert table == {
        "Walker2009": (1.0, 2.5),
        "Wolf2010": (4.0 / 3.0, 4.0),
        "AmoriscoEvans2011": (1.7, 5.8),
        "Campbell2017": (1.8, 6.0),
        "Errani2018": (1.8, 6.3),
    }
    # Derivations from the papers: Wolf C = 3 × r½/R_h, Errani C = 3.5 × 1.8.
    assert estimator_by_name("Wolf2010").coefficient == pytest.approx(3.0 * 4.0 / 3.0)
    assert estimator_by_name("Errani2018").coefficient == pytest.approx(3.5 * 1.8)
    assert "least certain" in estimator_by_name("Campbell2017").note
    with pytest.raises(ValueError, match="HINT"):
        estimator_by_name("wolf")


def test_estimator_log_mass_against_hand_value_and_vectorised():
    wolf = estimator_by_name("Wolf2010")
    # σ = 10 km/s, R_h = 0.3 kpc: M = 4 × 100 × 0.3 / 4.30092e-6 = 2.79010e7 Msun.
    expected = math.log10(4 * 100 * 0.3 / 4.30092e-6)
    assert float(estimator_log_mass(wolf, 10.0, 0.3)) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(math.log10(2.790101e7), abs=1e-6)
    sig = np.array([5.0, 10.0, 20.0])
    rh = np.array([0.1, 0.3, 1.0])
    got = estimator_log_mass(wolf, sig, rh)
    want = [math.log10(4 * s * s * r / 4.30092e-6) for s, r in zip(sig, rh)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # M ∝ σ²: doubling σ adds log10(4).
    assert float(estimator_log_mass(wolf, 20.0, 0.3) - estimator_log_mass(wolf, 10.0, 0.3)) == pytest.approx(
        math.log10(4.0)
    )


@pytest.mark.parametrize("sigma, rh", [(0.0, 0.3), (-1.0, 0.3), (10.0, np.nan), (10.0, 0.0)])
def test_estimator_log_mass_rejects_bad_input(sigma, rh):
    with pytest.raises(ValueError, match="HINT"):
        estimator_log_mass(ESTIMATORS[0], sigma, rh)


def test_constants_agree_with_physics_constants():
    from galmass.physics import constants

    assert G_KPC_KMS2_PER_MSUN == constants.G == 4.30092e-6
    np.testing.assert_allclose(np.asarray(constants.RADII_FACTORS), LABEL_RADII_FACTORS, atol=1e-12)


def test_label_radii_grid():
    np.testing.assert_allclose(LABEL_RADII_FACTORS, np.arange(10) * 0.2 + 0.6, atol=1e-12)


# ----------------------------------------------------------------------------------------------- residuals


def test_summarise_hand_computed():
    r = np.array([0.0, 0.05, 0.2, -0.3, 0.1])
    out = summarise(r[:, None])
    # sorted: -0.3, 0, 0.05, 0.1, 0.2; median 0.05; p16 at index 0.64 → -0.3 + 0.64·0.3 = -0.108;
    # p84 at index 3.36 → 0.1 + 0.36·0.1 = 0.136; scatter = 0.122. |r|<0.1: 0.0, 0.05 → 2/5 (0.1 is excluded).
    assert out["bias"][0] == pytest.approx(0.05)
    assert out["scatter"][0] == pytest.approx(0.122)
    assert out["frac_within_0p1"][0] == pytest.approx(0.4)
    assert out["n"] == 5


def test_summarise_gaussian_statistics():
    rng = np.random.default_rng(1)
    n = 20000
    mu, sd = np.array([0.05, -0.1, 0.0]), np.array([0.2, 0.05, 0.3])
    r = mu + sd * rng.normal(size=(n, 3))
    out = summarise(r)
    # (p84 - p16)/2 of a Gaussian is 0.9945 σ; the sample median has sd 1.2533 σ/√n ≈ 0.0089 σ here, the
    # half-width about 0.0075 σ; fractions have binomial sd ≤ 0.0035. Tolerances are 5 of these sds.
    half = sd * (norm.ppf(0.84) - norm.ppf(0.16)) / 2
    np.testing.assert_allclose(out["bias"], mu, atol=5 * 1.2533 * sd.max() / math.sqrt(n))
    np.testing.assert_allclose(out["scatter"], half, rtol=0.04)
    frac = norm.cdf((0.1 - mu) / sd) - norm.cdf((-0.1 - mu) / sd)
    np.testing.assert_allclose(out["frac_within_0p1"], frac, atol=5 * 0.5 / math.sqrt(n))


def test_summarise_rejects_nan():
    with pytest.raises(ValueError, match="HINT"):
        summarise(np.array([[0.1], [np.nan]]))


def test_interp_log_mass_exact_for_power_laws_and_on_grid():
    f = np.asarray(LABEL_RADII_FACTORS)
    rng = np.random.default_rng(2)
    slopes = rng.uniform(0.5, 2.5, size=(4, 3, 1))
    norms = rng.uniform(6, 9, size=(4, 3, 1))
    lm = norms + slopes * np.log10(f)  # [S=4, N=3, 10] power laws M ∝ r^slope
    targets = np.array([0.6, 1.0, 4 / 3, 1.7, 1.8, 2.4])
    got = interp_log_mass(lm, f, targets)
    assert got.shape == (4, 3, 6)
    np.testing.assert_allclose(got, norms + slopes * np.log10(targets), atol=1e-12)
    # A curved profile: the grid values come back exactly and midpoints follow np.interp in log r.
    curved = np.log10(f) ** 2 + 7.0
    np.testing.assert_allclose(interp_log_mass(curved, f, f), curved, atol=1e-12)
    np.testing.assert_allclose(
        interp_log_mass(curved, f, [1.1, 1.9]), np.interp(np.log10([1.1, 1.9]), np.log10(f), curved), atol=1e-12
    )


@pytest.mark.parametrize("targets", [[0.5], [2.5], [np.nan]])
def test_interp_log_mass_refuses_extrapolation(targets):
    f = np.asarray(LABEL_RADII_FACTORS)
    with pytest.raises(ValueError, match="HINT"):
        interp_log_mass(np.zeros(10), f, targets)


# ----------------------------------------------------------------------------------------------- calibration

N_CAL, S_CAL, D_CAL, SD = 2000, 400, 10, 0.3


def _toy(rng, width=1.0, shift=0.0):
    """Posterior N(m, SD) per projection; truth drawn from it; samples from N(m + shift·SD, width·SD)."""
    m = rng.normal(0.0, 1.0, size=(N_CAL, D_CAL))
    truth = m + SD * rng.normal(size=(N_CAL, D_CAL))
    samples = m[None] + shift * SD + width * SD * rng.normal(size=(S_CAL, N_CAL, D_CAL))
    return samples, truth


# Tolerance for a calibrated posterior. Each coverage value is a binomial proportion over N = 2000 with
# sd ≤ sqrt(0.25/2000) = 0.011; 0.05 is 4.5 sd, so over 19 levels × 10 radii the chance of a false failure is
# < 2e-3 (the test is seeded, hence deterministic). For TARP the ECP curve is an empirical CDF of N values:
# DKW gives P(sup|ECP − α| > 0.05) ≤ 2 exp(−2 N 0.05²) = 9e-5, plus a 1/(S+1) discreteness of f.
CAL_TOL = 0.05


def test_coverage_and_tarp_calibrated_toy():
    samples, truth = _toy(np.random.default_rng(3))
    cov = coverage(samples, truth)
    assert cov.shape == (19, D_CAL)
    assert np.max(np.abs(cov - DEFAULT_LEVELS[:, None])) < CAL_TOL
    alpha, ecp = tarp(samples, truth, np.random.default_rng(4))
    assert alpha[0] == 0.0 and alpha[-1] == 1.0 and ecp[-1] == 1.0
    assert np.all(np.diff(ecp) >= 0)
    assert np.max(np.abs(ecp - alpha)) < CAL_TOL


def test_coverage_overconfident_matches_analytic_curve():
    samples, truth = _toy(np.random.default_rng(5), width=0.5)
    cov = coverage(samples, truth)
    # Interval ±0.5·z_ℓ·SD around the true posterior mean: coverage 2Φ(0.5 z_ℓ) − 1, with z_ℓ = Φ⁻¹((1+ℓ)/2).
    expected = 2 * norm.cdf(0.5 * norm.ppf((1 + DEFAULT_LEVELS) / 2)) - 1
    np.testing.assert_allclose(cov, np.broadcast_to(expected[:, None], cov.shape), atol=CAL_TOL)
    assert np.max(np.abs(cov - DEFAULT_LEVELS[:, None])) > 0.15
    alpha, ecp = tarp(samples, truth, np.random.default_rng(6))
    assert np.max(np.abs(ecp - alpha)) > 0.15


def test_coverage_biased_matches_analytic_curve():
    samples, truth = _toy(np.random.default_rng(7), shift=1.0)
    cov = coverage(samples, truth)
    # Truth z ~ N(0,1) relative to the true mean; the interval is 1 ± z_ℓ: Φ(1 + z_ℓ) − Φ(1 − z_ℓ).
    z = norm.ppf((1 + DEFAULT_LEVELS) / 2)
    expected = norm.cdf(1 + z) - norm.cdf(1 - z)
    np.testing.assert_allclose(cov, np.broadcast_to(expected[:, None], cov.shape), atol=CAL_TOL)
    assert np.max(np.abs(cov - DEFAULT_LEVELS[:, None])) > 0.15


def test_tarp_detects_bias():
    # TARP with random references is less sensitive to a bias than the marginal coverage (the bias projects
    # onto a random direction towards the reference); a 2 SD shift in every dimension is clearly detected.
    samples, truth = _toy(np.random.default_rng(8), shift=2.0)
    alpha, ecp = tarp(samples, truth, np.random.default_rng(9))
    assert np.max(np.abs(ecp - alpha)) > 0.15


def test_tarp_matches_explicit_loop_with_given_references():
    rng = np.random.default_rng(10)
    s, n, d = 30, 12, 3
    samples = rng.normal(size=(s, n, d)) * [1.0, 10.0, 0.1]
    truth = rng.normal(size=(n, d)) * [1.0, 10.0, 0.1]
    refs = rng.normal(size=(n, d)) * [1.0, 10.0, 0.1]
    alpha, ecp = tarp(samples, truth, np.random.default_rng(0), references=refs, num_alpha=11)
    mu, sd = truth.mean(0), truth.std(0)
    f = []
    for i in range(n):
        r = (refs[i] - mu) / sd
        dt = math.dist((truth[i] - mu) / sd, r)
        f.append(sum(math.dist((samples[k, i] - mu) / sd, r) < dt for k in range(s)) / s)
    want = [sum(fi < a for fi in f) / n for a in np.linspace(0, 1, 11)]
    want[-1] = 1.0
    np.testing.assert_allclose(alpha, np.linspace(0, 1, 11))
    np.testing.assert_allclose(ecp, want)


def test_tarp_against_reference_package_if_installed():
    tarp_pkg = pytest.importorskip("tarp")
    samples, truth = _toy(np.random.default_rng(11))
    samples, truth = samples[:, :500], truth[:500]
    refs = np.random.default_rng(12).normal(size=truth.shape)
    alpha, ecp = tarp(samples, truth, np.random.default_rng(0), references=refs)
    # The package's normalisation differs between versions (min-max vs mean/std), so hand it pre-normalised
    # arrays with norm=False; its alpha grid spans [min f, max f], so compare at its own alpha values.
    mu, sd = truth.mean(0), truth.std(0)
    ecp_pkg, alpha_pkg = tarp_pkg.get_tarp_coverage(
        (samples - mu) / sd, (truth - mu) / sd, references=(refs - mu) / sd, metric="euclidean", norm=False
    )
    ecp_pkg, alpha_pkg = np.ravel(ecp_pkg), np.ravel(alpha_pkg)
    n = min(ecp_pkg.size, alpha_pkg.size)
    diff = np.interp(alpha_pkg[-n:], alpha, ecp) - ecp_pkg[-n:]
    assert np.max(np.abs(diff)) < 0.03


def test_rank_histogram_counts_and_shapes():
    samples = np.arange(10.0)[:, None, None] * np.ones((10, 4, 2))  # samples 0..9 for every (n, d)
    truth = np.array([[-1.0, 9.5], [4.5, 0.5], [2.5, 2.5], [7.5, 100.0]])
    counts, edges = rank_histogram(samples, truth, bins=5)
    # normalised ranks u: d0 → 0, 0.5, 0.3, 0.8 ; d1 → 1.0, 0.1, 0.3, 1.0 ; bins of width 0.2.
    np.testing.assert_array_equal(counts[:, 0], [1, 1, 1, 0, 1])
    np.testing.assert_array_equal(counts[:, 1], [1, 1, 0, 0, 2])
    np.testing.assert_allclose(edges, np.linspace(0, 1, 6))


def test_calibration_rejects_bad_shapes_and_nan():
    with pytest.raises(ValueError, match="HINT"):
        coverage(np.zeros((5, 3, 2)), np.zeros((3, 3)))
    bad = np.zeros((5, 3, 2))
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="HINT"):
        tarp(bad, np.zeros((3, 2)), np.random.default_rng(0))
    with pytest.raises(ValueError):
        coverage(np.zeros((5, 3, 2)), np.zeros((3, 2)), levels=[0.5, 1.0])


# ----------------------------------------------------------------------------------------------- summary


def _small_case(seed=20, s=41, n=9):
    rng = np.random.default_rng(seed)
    f = np.asarray(LABEL_RADII_FACTORS)
    slope = rng.uniform(1.0, 2.0, size=(n, 1))
    truth = 7.5 + rng.normal(0, 0.3, size=(n, 1)) + slope * np.log10(f)
    samples = truth[None] + rng.normal(0.05, 0.1, size=(s, n, 10))
    sigma = rng.uniform(5, 15, size=n)
    rh = rng.uniform(0.1, 1.0, size=n)
    est_f = np.array([e.radius_factor for e in ESTIMATORS])
    true_est = 7.5 + rng.normal(0, 0.3, size=(n, 1)) + slope * np.log10(est_f)
    return samples, truth, sigma, rh, true_est


def test_compute_metrics_matches_explicit_loops():
    samples, truth, sigma, rh, true_est = _small_case()
    s, n, k = samples.shape
    metrics, arrays = compute_metrics(samples, truth, sigma, rh, true_est, np.random.default_rng(0))
    json.dumps(metrics)  # must be JSON-serialisable as is

    def stats(col):
        col = np.asarray(col)
        return (
            float(np.median(col)),
            float((np.percentile(col, 84) - np.percentile(col, 16)) / 2),
            float(np.mean(np.abs(col) < 0.1)),
        )

    f = np.asarray(LABEL_RADII_FACTORS)
    for j in range(k):
        res = [float(np.median(samples[:, i, j])) - truth[i, j] for i in range(n)]
        b, sc, fr = stats(res)
        assert metrics["cnn"]["bias"][j] == pytest.approx(b, abs=1e-12)
        assert metrics["cnn"]["scatter"][j] == pytest.approx(sc, abs=1e-12)
        assert metrics["cnn"]["frac_within_0p1"][j] == pytest.approx(fr, abs=1e-12)
        np.testing.assert_allclose(arrays["cnn_residual"][:, j], res, atol=1e-12)
    for e_idx, est in enumerate(ESTIMATORS):
        entry = metrics["estimators"][est.name]
        pred = [math.log10(est.coefficient * sigma[i] ** 2 * rh[i] / 4.30092e-6) for i in range(n)]
        res_est = [pred[i] - true_est[i, e_idx] for i in range(n)]
        assert entry["estimator"]["bias"] == pytest.approx(stats(res_est)[0], abs=1e-12)
        assert entry["estimator"]["scatter"] == pytest.approx(stats(res_est)[1], abs=1e-12)
        cnn_pred = []
        for i in range(n):
            interp = [np.interp(math.log10(est.radius_factor), np.log10(f), samples[q, i]) for q in range(s)]
            cnn_pred.append(float(np.median(interp)))
        res_cnn = [cnn_pred[i] - true_est[i, e_idx] for i in range(n)]
        assert entry["cnn"]["bias"] == pytest.approx(stats(res_cnn)[0], abs=1e-12)
        assert entry["cnn"]["scatter"] == pytest.approx(stats(res_cnn)[1], abs=1e-12)
        assert entry["cnn"]["frac_within_0p1"] == pytest.approx(stats(res_cnn)[2], abs=1e-12)
        np.testing.assert_allclose(arrays["estimator_residual"][:, e_idx], res_est, atol=1e-12)
        assert entry["radius_factor"] == est.radius_factor and entry["coefficient"] == est.coefficient
    # Coverage, per radius and level, by explicit quantiles.
    levels = metrics["coverage"]["levels"]
    np.testing.assert_allclose(levels, np.linspace(0.05, 0.95, 19))
    worst = 0.0
    for j in range(k):
        for li, lv in enumerate(levels):
            inside = 0
            for i in range(n):
                lo, hi = np.quantile(samples[:, i, j], [(1 - lv) / 2, (1 + lv) / 2])
                inside += lo <= truth[i, j] <= hi
            assert metrics["coverage"]["per_radius"][j][li] == pytest.approx(inside / n)
            worst = max(worst, abs(inside / n - lv))
    assert metrics["coverage"]["max_abs_error"] == pytest.approx(worst)
    alpha, ecp = tarp(samples, truth, np.random.default_rng(0))
    np.testing.assert_allclose(metrics["tarp"]["ecp"], ecp)
    assert metrics["tarp"]["max_abs_error"] == pytest.approx(np.max(np.abs(ecp - alpha)))
    assert metrics["n_projections"] == n
    np.testing.assert_allclose(metrics["radii_factors"], f)
    np.testing.assert_allclose(arrays["post_p16"], np.percentile(samples, 16, axis=0))
    np.testing.assert_allclose(arrays["post_p84"], np.percentile(samples, 84, axis=0))
    assert list(arrays["estimator_names"]) == [e.name for e in ESTIMATORS]


def test_compute_metrics_shape_errors():
    samples, truth, sigma, rh, true_est = _small_case()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="HINT"):
        compute_metrics(samples, truth[:, :9], sigma, rh, true_est, rng)
    with pytest.raises(ValueError, match="HINT"):
        compute_metrics(samples, truth, sigma, rh, true_est[:, :4], rng)
