"""A negative result, kept reproducible: a population tilt that also widens or narrows the slope prior.

Usage:  python benchmarks/population_spread.py --loso /work/runs_loso_prod/feedback [--families cusp,core,...]
        [--null-run RUN --null-data DATASET] [--name population_spread]

Why it was tried: held out, the Zhao family (inner slopes γ 0–1.5 continuously) has about the training recipes' mean
slope but a wider spread, and the shift-only tilt moved its 0.6 R_h bias from +0.014 to +0.067 dex
(loso_production_feedback.md). The candidate: the same exponential tilt with the square of the slope component
added, w = exp(b t + a (t² − 1)) (t: the first shape component of galmass.population, unit variance under the
training labels), a > 0 widening the prior along t and a < 0 narrowing it, fitted by the same marginal likelihood
with the training jitter exact (a Gaussian integral: for u ~ N(t, v), c = 1 − 2 a v > 0, E exp(a u² + b u) =
c^(−1/2) exp((a t² + b t + b² v / 2) / c)). For every held-out family of a leave-one-feedback-out directory
(benchmarks/loso.py, its ``<family>-plain`` runs and ``only-<family>`` datasets): both tilts fitted on the held-out
train split's unlabelled catalogues (as loso's ``population`` option does), applied to its test split's draws by
importance weights (best fit, no β mixture), bias and 68 % coverage against the truths. And a null: the fit on a
model's own validation split (a population exactly like its training one), where the square must find nothing."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import load_average, machine, write_result  # noqa: E402  (puts the repository on sys.path)
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

from galmass.datasets import ShardedDataset
from galmass.models.io import load_trained
from galmass.evaluate import posterior_samples
from galmass.population import effective_sample_size, fit_tilt, prior_labels, tilt_weights, weighted_quantiles

SHOW = (0, 2, 6)  # 0.6, 1.0, 1.8 R_h


def fit_spread(t_draws: np.ndarray, t_prior: np.ndarray, v: float, n_ind: int) -> tuple[np.ndarray, np.ndarray]:
    """(b, a) maximising mean_i log mean_j exp(b t_ij + a (t_ij² − 1)) − log E_prior E_jitter of the same, and
    their covariance (numeric Hessian of the mean objective ÷ the independent galaxies)."""
    n_s = t_draws.shape[0]

    def neg(x: np.ndarray) -> float:
        b, a = x
        c = 1 - 2 * a * v
        if c <= 0.05:
            return np.inf
        like = np.mean(logsumexp(b * t_draws + a * (t_draws**2 - 1), axis=0) - np.log(n_s))
        log_z = (logsumexp((a * t_prior**2 + b * t_prior) / c) - np.log(len(t_prior)) + b**2 * v / (2 * c)
                 - np.log(c) / 2 - a)
        return -(like - log_z - 1e-2 * (b * b + a * a) / 2)

    x = minimize(neg, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-10}).x
    h, e = 1e-3, np.eye(2)
    hess = np.array([[(neg(x + h * (e[i] + e[j])) - neg(x + h * (e[i] - e[j])) - neg(x - h * (e[i] - e[j]))
                       + neg(x - h * (e[i] + e[j]))) / (4 * h * h) for j in range(2)] for i in range(2)])
    return x, np.linalg.inv(hess) / n_ind


def _open(path: Path, split: str, model) -> ShardedDataset:
    return ShardedDataset(path, split, model.input_keys + ("labels",), meta=True)


def _draws(model, data: ShardedDataset, seed: int) -> np.ndarray:
    return posterior_samples(model, data, 200, 256, seed)["samples"].astype(np.float64)


def _grade(draws: np.ndarray, w: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q = weighted_quantiles(draws, w, np.array([0.16, 0.5, 0.84]))
    return np.median(q[1] - truth, axis=0), ((truth > q[0]) & (truth < q[2])).mean(axis=0)


def _fits(run: Path, data: Path, split: str, seed: int = 0):
    """The run, its two tilts fitted on the draws of ``data``'s ``split``, and what the square did to the training
    labels."""
    model, cfg, blob = load_trained(run)
    fit_set = _open(data, split, model)
    prior, _ = prior_labels(run, cfg, blob)
    jitter = cfg.model.label_noise_dex
    draws = _draws(model, fit_set, seed)
    n_ind = len(np.unique(fit_set.read_all("meta/galaxy_id")))
    shift = fit_tilt(draws, prior, 1, jitter_dex=jitter, n_independent=n_ind)
    t_prior = shift.features(prior)[:, 0]
    (b, a), cov = fit_spread(shift.features(draws)[..., 0], t_prior, (jitter / shift.scale[0]) ** 2, n_ind)
    w = softmax(a * t_prior**2 + b * t_prior)
    ratio = float(np.sqrt(w @ (t_prior - w @ t_prior) ** 2 / t_prior.var()))
    return model, shift, (b, a), cov, ratio


def family_rows(loso: Path, fam: str) -> list[str]:
    data = loso / "data" / f"only-{fam}"
    model, shift, (b, a), cov, ratio = _fits(loso / "runs" / f"{fam}-plain", data, "train")
    test = _open(data, "test", model)
    draws, truth = _draws(model, test, 1), test.read_all("labels").astype(np.float64)
    t = shift.features(draws)[..., 0]
    t_true = shift.features(truth)[:, 0]
    tilts = (("plain", np.full(t.shape, 1 / len(t)), ""),
             ("shift (the command)", tilt_weights(shift, draws), f"b = {shift.beta[0]:+.2f} ± "
              f"{np.sqrt(shift.cov[0, 0]):.2f}"),
             ("shift + square", softmax(b * t + a * t**2, axis=0), f"a = {a:+.2f} ± {np.sqrt(cov[1, 1]):.2f}, slope "
              f"spread ×{ratio:.2f}; held-out test truths {t_true.std():.2f}× the training labels'"))
    rows = []
    for name, w, note in tilts:
        bias, cov68 = _grade(draws, w, truth)
        ess = np.median(effective_sample_size(w)) / len(w)
        rows.append(f"| {fam} | {name} | " + " / ".join(f"{bias[k]:+.3f}" for k in SHOW)
                    + f" | {cov68[0]:.2f} | {cov68.min():.2f}–{cov68.max():.2f} | {ess:.2f} | {note} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loso", required=True, help="a benchmarks/loso.py --axis feedback output directory")
    ap.add_argument("--families", default="cusp,mild_core,core,dc14,zhao")
    ap.add_argument("--null-run", default=None, help="a run whose own validation split is the null population")
    ap.add_argument("--null-data", default=None, help="that run's dataset")
    ap.add_argument("--name", default="population_spread")
    a = ap.parse_args()
    t0, loso = time.time(), Path(a.loso)
    lines = ["| held out | tilt | bias at 0.6 / 1.0 / 1.8 R_h [dex] | 68 % cov. 0.6 R_h | ten radii | effective "
             "draws | fit |", "|---|---|---|---|---|---|---|"]
    for fam in a.families.split(","):
        lines += family_rows(loso, fam)
    if a.null_run:
        _, shift, (b, sq), cov, ratio = _fits(Path(a.null_run), Path(a.null_data), "val")
        lines += ["", f"Null (`{a.null_run}` on the validation split of `{a.null_data}`): shift b = "
                  f"{shift.beta[0]:+.3f} ± {np.sqrt(shift.cov[0, 0]):.3f}; with the square b = {b:+.3f}, "
                  f"a = {sq:+.3f} ± {np.sqrt(cov[1, 1]):.3f} (slope spread ×{ratio:.2f})."]
    head = [f"# {__doc__.splitlines()[0]}", "", f"Machine: {machine()}; load {load_average()}; wall time "
            f"{(time.time() - t0) / 60:.1f} min.", "", f"Reproduce: `python benchmarks/population_spread.py --loso "
            f"{a.loso} --families {a.families}" + (f" --null-run {a.null_run} --null-data {a.null_data}"
                                                   if a.null_run else "") + "`.", "",
            __doc__.split("\n\n", 2)[2].strip(), ""]
    write_result(a.name, "\n".join(head + lines) + "\n")


if __name__ == "__main__":
    main()
