"""``galmass population``: the prior tilt recovers a known label shift of a conjugate Gaussian problem (and finds
none where there is none, training jitter included), weighted quantiles, and the command on a tiny run (a new run
directory whose draws are re-weighted; refusals before anything is written)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from conftest import run_cmd
import galmass.population as population
import galmass.pretrained as pretrained
from galmass.calibrate import CalibrationError, calibrate_run
from galmass.datasets.integrity import sha256_file
from galmass.models.combine import EnsembleError, combine_runs
from galmass.models.io import load_trained, to_torch
from galmass.models.network import tilt_log_weight
from galmass.population import (PopulationError, Tilt, adapt_run, effective_sample_size, fit_tilt, split_half,
                                tilt_weights, weighted_quantiles)

R = 4
COV = 0.04 * np.array([[1, .8, .6, .5], [.8, 1, .8, .6], [.6, .8, 1, .8], [.5, .6, .8, 1]])
TAU = 0.15  # per-radius measurement noise [dex] of the toy likelihood x = θ + N(0, τ²)


def _toy(shift: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Truths θ ~ N(shift, COV) of a new population, and draws [S, n, R] of the exact posterior under the
    *training* prior N(0, COV) (what a perfectly trained model returns); also the training labels."""
    chol = np.linalg.cholesky(COV)
    truth = shift + rng.normal(size=(n, R)) @ chol.T
    x = truth + TAU * rng.normal(size=(n, R))
    post_cov = np.linalg.inv(np.linalg.inv(COV) + np.eye(R) / TAU**2)
    mean = x @ (post_cov / TAU**2).T
    draws = mean[None] + rng.normal(size=(400, n, R)) @ np.linalg.cholesky(post_cov).T
    return truth, draws, rng.normal(size=(40_000, R)) @ chol.T


def test_tilt_recovers_a_label_shift_and_restores_coverage():
    rng = np.random.default_rng(0)
    shift = np.array([-0.15, -0.05, 0.05, 0.15])  # cores: less inner mass relative to the outer (shape only)
    truth, draws, prior = _toy(shift, 3000, rng)
    tilt = fit_tilt(draws, prior, n_features=R - 1)
    np.testing.assert_allclose(tilt.prior_shift(), shift - shift.mean(), atol=0.02)
    w = tilt_weights(tilt, draws)
    assert np.allclose(w.sum(0), 1.0) and np.median(effective_sample_size(w)) > 0.2 * len(draws)

    def bias_cov(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.abs((q[1] - truth).mean(0)), ((truth > q[0]) & (truth < q[2])).mean(0)

    b_plain, c_plain = bias_cov(np.percentile(draws, [16, 50, 84], axis=0))
    b_tilt, c_tilt = bias_cov(weighted_quantiles(draws, w, np.array([0.16, 0.5, 0.84])))
    assert b_plain.max() > 0.06 and b_tilt.max() < 0.015  # the prior's pull on the outer radii, removed
    assert np.abs(c_plain - 0.68).max() > 0.08 and np.abs(c_tilt - 0.68).max() < 0.03


def test_a_small_population_restores_coverage_on_average():
    """15 galaxies at a time (a realistic sample of dwarfs), 80 populations: the tilt, with its β uncertainty,
    brings the outer radii's 68 % coverage from ~0.57 back to ~0.68."""
    rng = np.random.default_rng(5)
    shift = np.array([-0.15, -0.05, 0.05, 0.15])
    plain, tilted = [], []
    for _ in range(80):
        truth, draws, prior = _toy(shift, 15, rng)
        q = weighted_quantiles(draws, tilt_weights(fit_tilt(draws, prior, 1), draws), np.array([0.16, 0.84]))
        tilted.append(((truth > q[0]) & (truth < q[1])).mean(0))
        q = np.percentile(draws, [16, 84], axis=0)
        plain.append(((truth > q[0]) & (truth < q[1])).mean(0))
    plain, tilted = np.mean(plain, 0), np.mean(tilted, 0)
    assert plain[[0, -1]].max() < 0.61 and tilted.min() > 0.63 and tilted.max() < 0.73


def test_split_half_test_accepts_one_population_and_flags_two():
    """One shifted population: the halves' tilts agree. Two populations interleaved (even galaxies shifted one
    way, odd the other): no single tilt describes them, and the halves say so."""
    rng = np.random.default_rng(7)
    shift = np.array([-0.15, -0.05, 0.05, 0.15])
    truth, draws, prior = _toy(shift, 600, rng)
    galaxy = np.arange(600)
    assert split_half(draws, galaxy, prior, 1, 0.0)["p_value"] > 0.01
    _, other, _ = _toy(-shift, 600, rng)
    mixed = np.where((galaxy % 2 == 0)[None, :, None], draws, other)
    halves = split_half(mixed, galaxy, prior, 1, 0.0)
    assert halves["p_value"] < 1e-4 and halves["beta_halves"][0][0] * halves["beta_halves"][1][0] < 0


def test_no_shift_no_tilt():
    rng = np.random.default_rng(1)
    _, draws, prior = _toy(np.zeros(R), 3000, rng)
    tilt = fit_tilt(draws, prior, n_features=2)
    assert np.abs(tilt.prior_shift()).max() < 0.01
    assert np.median(effective_sample_size(tilt_weights(tilt, draws))) > 0.9 * len(draws)
    with pytest.raises(ValueError, match="n_features"):
        fit_tilt(draws, prior, n_features=R)


def test_training_jitter_is_not_read_as_a_population_shift():
    """Labels with a small curvature spread (0.02 dex) and the 0.01 dex jitter training adds: the trained posterior
    of a population *like the training one* is wider than the labels along that axis. Uncorrected, the fit reads
    that as a shift (and keeps ~2 % of the draws); with the jitter in the prior term it finds none."""
    rng = np.random.default_rng(3)
    x = np.arange(R) - 1.5

    def labels(n: int) -> np.ndarray:  # level, slope, curvature
        lvl, slope, curv = rng.normal(0, 0.3, n), rng.normal(0, 0.06, n), rng.normal(0, 0.01, n)
        return lvl[:, None] + slope[:, None] * x + curv[:, None] * (x**2 - 1.25)

    jitter, n = 0.01, 3000
    prior, truth = labels(40_000), labels(n)
    post_cov = np.linalg.inv(np.linalg.inv(np.cov(prior.T) + jitter**2 * np.eye(R)) + np.eye(R) / TAU**2)
    mean = (truth + TAU * rng.normal(size=(n, R))) @ (post_cov / TAU**2).T
    draws = mean[None] + rng.normal(size=(400, n, R)) @ np.linalg.cholesky(post_cov).T
    naive, right = fit_tilt(draws, prior, 2), fit_tilt(draws, prior, 2, jitter_dex=jitter)
    assert np.median(effective_sample_size(tilt_weights(naive, draws))) < 0.1 * len(draws)
    assert np.median(effective_sample_size(tilt_weights(right, draws))) > 0.9 * len(draws)
    assert np.abs(right.prior_shift()).max() < 0.008 < np.abs(naive.prior_shift()).max()


def test_weighted_quantiles_equal_and_integer_weights():
    rng = np.random.default_rng(2)
    draws = rng.normal(size=(300, 7, 3))
    q = np.array([0.05, 0.16, 0.5, 0.84, 0.95])
    equal = weighted_quantiles(draws, np.full((300, 7), 1 / 300), q)
    np.testing.assert_allclose(equal, np.percentile(draws, 100 * q, axis=0, method="hazen"), atol=1e-12)
    counts = rng.integers(1, 4, size=300)  # weight k = the draw repeated k times
    w = np.broadcast_to((counts / counts.sum())[:, None], (300, 7))
    repeated = np.percentile(np.repeat(draws, counts, axis=0), 100 * q, axis=0, method="hazen")
    np.testing.assert_allclose(weighted_quantiles(draws, w, q), repeated, atol=0.05)


def _dwarfs(path, n_galaxies: int, seed: int = 0):
    """Plummer dwarfs (R_h 0.1–0.4 kpc, σ 6–12 km/s, 60–200 stars) in predict's CSV format."""
    rng = np.random.default_rng(seed)
    rows = ["galaxy,x_kpc,y_kpc,v_los_kms,v_err_kms"]
    for g in range(n_galaxies):
        n, rh, sigma = rng.integers(60, 200), rng.uniform(0.1, 0.4), rng.uniform(6, 12)
        u, phi = rng.random(n), 2 * np.pi * rng.random(n)
        r = rh * np.sqrt(u / (1 - u))
        rows += [f"g{g},{a:.5f},{b:.5f},{v:.3f},2.0" for a, b, v in
                 zip(r * np.cos(phi), r * np.sin(phi), rng.normal(0.0, sigma, n))]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_population_command_writes_an_adapted_run_and_refuses_what_it_cannot_do(tiny_stars_run, tiny_dataset,
                                                                                tmp_path, monkeypatch):
    run, digest = tiny_stars_run, sha256_file(tiny_stars_run / "best.pt")
    out = tmp_path / "pop"
    r = run_cmd([sys.executable, "-m", "galmass", "population", "--run", str(run), "--target", str(tiny_dataset),
                 "--out", str(out), "--draws", "50"])
    fit = json.loads((out / "population.json").read_text())
    assert "adapted" in r.stdout and fit["n_catalogues"] > 10 and fit["split"] == "train"
    assert len(fit["tilt"]["beta"]) == 1 and len(fit["prior_shift_dex"]) == 10 and 0 < fit["ess_fraction"]["min"]
    assert sha256_file(run / "best.pt") == digest  # the original run is never modified
    model, _, blob = load_trained(out)
    assert torch.equal(model.population["beta_draws"], torch.tensor(fit["tilt"]["beta_draws"], dtype=torch.float32))
    assert fit["tilt"]["n_independent"] < fit["n_catalogues"]  # projections of one galaxy count once
    from galmass.datasets import ShardedDataset
    batch = to_torch(ShardedDataset(tiny_dataset, "test", model.input_keys).get_batch(np.arange(4)),
                     torch.device("cpu"))
    torch.manual_seed(0)
    a = model.sample(batch, 30)
    torch.manual_seed(0)
    assert a.shape == (30, 4, 10) and torch.equal(model.sample(batch, 30), a)  # deterministic under a seed
    tilt = Tilt(**{k: np.asarray(v) for k, v in fit["tilt"].items() if k not in ("beta_err",)})
    theta = torch.randn(7, 4, 10, dtype=torch.float64) * 0.3 + 7.0
    np.testing.assert_allclose(tilt_log_weight({k: torch.as_tensor(getattr(tilt, k)) for k in model.population},
                                               theta).numpy(), tilt.log_weight(theta.numpy()), atol=1e-9)
    with pytest.raises(ValueError, match="population-adapted"):
        model.log_prob({**batch, "labels": a[0]})
    # refusals, nothing written
    x = ["--out", str(tmp_path / "x")]
    for args, needle in ((["--run", str(out), "--target", str(tiny_dataset), *x], "already adapted"),
                         (["--run", str(run), "--target", str(tiny_dataset), "--out", str(out)], "not empty"),
                         (["--run", str(run), "--target", str(_dwarfs(tmp_path / "few.csv", 3)), *x], "3 galaxies"),
                         (["--run", str(run), "--target", str(tmp_path / "nothing"), *x], "neither a dataset")):
        bad = run_cmd([sys.executable, "-m", "galmass", "population", *args], check=False)
        assert bad.returncode == 2 and needle in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    assert not (tmp_path / "x").exists()
    with pytest.raises(CalibrationError, match="adapted"):
        calibrate_run(out, tmp_path / "cal", draws=10)
    with pytest.raises(EnsembleError, match="adapted"):
        combine_runs([run, out], tmp_path / "ens")
    monkeypatch.setattr(population, "SPLIT_HALF_P", 1.01)  # every split-half test now fails: refused, unless forced
    with pytest.raises(PopulationError, match="nothing written.*two halves"):
        adapt_run(run, tiny_dataset, tmp_path / "z", draws=20)
    assert not (tmp_path / "z").exists()
    forced = adapt_run(run, tiny_dataset, tmp_path / "z", draws=20, force=True)
    assert forced["forced"] and "two halves" in forced["problems"][0]
    assert "WARNING (written with --force)" in (tmp_path / "z" / "population.md").read_text()
    monkeypatch.undo()
    dwarfs = _dwarfs(tmp_path / "dwarfs.csv", 12)
    cats = adapt_run(run, dwarfs, tmp_path / "pop_cat", draws=40)
    assert cats["n_catalogues"] == 12 and cats["split"] is None
    run_cmd([sys.executable, "-m", "galmass", "predict", "--run", str(tmp_path / "pop_cat"), "--stars", str(dwarfs),
             "--out", str(tmp_path / "pred"), "--samples", "50"])
    post = json.loads((tmp_path / "pred" / "g0" / "posterior.json").read_text())
    assert post["population"]["beta"] == cats["tilt"]["beta"]  # the adaptation is recorded with the draws
    with pytest.raises(PopulationError, match="already adapted"):
        adapt_run(tmp_path / "pop_cat", tiny_dataset, tmp_path / "y")


@pytest.mark.skipif(not pretrained.available(), reason="no pretrained model shipped in this checkout")
def test_the_shipped_model_adapts_with_the_prior_it_carries(tmp_path):
    """No training dataset on a user's machine: the shipped model's stored training-label sample is the prior."""
    dwarfs = _dwarfs(tmp_path / "dwarfs.csv", 12, seed=4)
    run_cmd([sys.executable, "-m", "galmass", "population", "--target", str(dwarfs), "--out", str(tmp_path / "pop"),
             "--draws", "100", "--force"])  # forced: this test is about the prior, not whether 12 dwarfs pass
    fit = json.loads((tmp_path / "pop" / "population.json").read_text())
    assert "shipped model 'stars'" in fit["model"] and "8192 training labels stored in the model file" in fit["prior"]
    run_cmd([sys.executable, "-m", "galmass", "predict", "--run", str(tmp_path / "pop"), "--stars", str(dwarfs),
             "--out", str(tmp_path / "pred"), "--samples", "100", "--no-plot"])
    post = json.loads((tmp_path / "pred" / "g3" / "posterior.json").read_text())
    assert post["population"]["n_catalogues"] == 12 and 6.0 < post["log10_mass_median"][2] < 9.0
