"""`galmass population` on galaxies galmass did not make: the independent (galpy) validation sets.

Usage:  python benchmarks/population_validation.py [--run RUN] [--set-name default|sealed] [--samples 400]
        [--name population_validation]

For each N★ variant of the set, the model's posterior draws of every catalogue (4 × --samples, as an adapted
model draws them), re-weighted two ways and resampled to --samples (sampling-importance-resampling, as
`MassPosterior.sample` does): cross-fitted over galaxies (the tilt fitted on the draws of one half's galaxies, no
labels read, re-weights the other half: how a population's tilt carries to galaxies it was not fitted on) and on
the whole sample (what `galmass population` does to the galaxies it is given); the plain model's posterior is the
first --samples draws. All three are scored by the set's own scorer (galmass.validation.report.score). Errors of
the differences: bootstrap over galaxies (--boot resamples, paired, the tilt refitted on each). Default: the
shipped model (its stored training-label sample is the prior). On the sealed set: graded after the method's settings (K = 1, the jitter term, β's mixture)
were fixed on leave-one-feedback-out and the default set; its cross-fitted folds' disagreement then led to the
split-half check, so that check's verdict on the sealed set is not blind.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import load_average, machine, write_result  # noqa: E402  (puts the repository on sys.path)

from galmass.models.network import POPULATION_OVERSAMPLE
from galmass.population import (effective_sample_size, fit_tilt, prior_labels, split_half, tilt_problems,
                                tilt_weights)
from galmass.predict import load_model
from galmass.pretrained import MODEL_DIR
from galmass.validate import model_samples, run_observer
from galmass.validation.generator import NAMED_SETS, get_set
from galmass.validation.report import observe_set, score

SHOW = (0, 2, 6, 9)  # 0.6, 1.0, 1.8, 2.4 R_h


def _resample(draws: np.ndarray, tilt, n: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """n draws per catalogue resampled ∝ the tilt (as MassPosterior.sample does) and the median effective fraction."""
    w = tilt_weights(tilt, draws)
    pick = np.stack([rng.choice(len(draws), n, p=w[:, i]) for i in range(w.shape[1])], axis=1)
    return np.take_along_axis(draws, pick[..., None], axis=0), float(np.median(effective_sample_size(w)) / len(draws))


def adapted_draws(draws: np.ndarray, galaxy: np.ndarray, prior: np.ndarray, jitter: float, n: int,
                  rng: np.random.Generator, cross: bool = True) -> tuple[np.ndarray, list[dict]]:
    """Resampled draws [n, N, R] under the tilt and each fit's summary: two-fold cross-fitted (each half
    re-weighted by the tilt of the other), or ``cross`` False fitted on all galaxies and applied to all (what
    `galmass population` does to the sample it is given)."""
    out, fits = np.empty((n,) + draws.shape[1:]), []
    half = np.isin(galaxy, np.unique(galaxy)[::2])
    for fit_on, apply in ((half, ~half), (~half, half)) if cross else ((half | True, half | True),):
        tilt = fit_tilt(draws[:, fit_on], prior, 1, jitter_dex=jitter, n_independent=len(np.unique(galaxy[fit_on])))
        out[:, apply], ess = _resample(draws[:, apply], tilt, n, rng)
        fits.append({"beta": float(tilt.beta[0]), "beta_err": float(np.sqrt(tilt.cov[0, 0])),
                     "shift_06": float(tilt.prior_shift()[0]), "ess_median": ess})
    return out, fits


def _stats(samples: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """bias, RMS, 68 % coverage [3, R] of the posterior medians."""
    p16, p50, p84 = np.percentile(samples, [16, 50, 84], axis=0)
    res = p50 - truth
    return np.stack([res.mean(0), np.sqrt((res**2).mean(0)), ((truth >= p16) & (truth <= p84)).mean(0)])


def paired_errors(draws: np.ndarray, galaxy: np.ndarray, truth: np.ndarray, prior: np.ndarray, jitter: float,
                  n: int, boot: int) -> np.ndarray:
    """Bootstrap std over galaxies of (adapted − plain) statistics [2, 3, R] (cross-fitted, whole sample), the tilt
    refitted on every resample (its own uncertainty included; a galaxy drawn twice counts as two)."""
    rng, ids = np.random.default_rng(0), np.unique(galaxy)
    rows = {g: np.flatnonzero(galaxy == g) for g in ids}
    diffs = []
    for _ in range(boot):
        pick = rng.choice(ids, len(ids))
        idx = np.concatenate([rows[g] for g in pick])
        relabel = np.concatenate([np.full(len(rows[g]), j) for j, g in enumerate(pick)])
        plain = _stats(draws[:n, idx], truth[idx])
        diffs.append([_stats(adapted_draws(draws[:, idx], relabel, prior, jitter, n, rng, cross)[0], truth[idx])
                      - plain for cross in (True, False)])
    return np.std(diffs, axis=0)


def grade(model, cfg, blob, vset, n_stars: int, prior: np.ndarray, a: argparse.Namespace) -> list[str]:
    obs = observe_set(vset, n_stars, keys=model.input_keys, **run_observer(blob))
    draws = model_samples(model, obs.inputs, POPULATION_OVERSAMPLE * a.samples, a.seed + n_stars)
    jitter, rng = cfg.model.label_noise_dex, np.random.default_rng(a.seed)
    plain = draws[: a.samples]
    cross, folds = adapted_draws(draws, obs.galaxy, prior, jitter, a.samples, rng)
    whole, (fit,) = adapted_draws(draws, obs.galaxy, prior, jitter, a.samples, rng, cross=False)
    problems = tilt_problems(effective_sample_size(tilt_weights(
        fit_tilt(draws, prior, 1, jitter_dex=jitter, n_independent=len(np.unique(obs.galaxy))), draws)) / len(draws),
        split_half(draws, obs.galaxy, prior, 1, jitter))
    scores = [score(d, obs, a.seed) for d in (plain, cross, whole)]
    st = [_stats(d, obs.log_m_true) for d in (plain, cross, whole)]
    err = paired_errors(draws, obs.galaxy, obs.log_m_true, prior, jitter, a.samples, a.boot)
    lines = [f"## N★ = {n_stars} ({len(obs.galaxy)} catalogues, {len(np.unique(obs.galaxy))} galaxies)", "",
             "Cross-fitted tilts (fitted on one half, applied to the other): " + "; ".join(
                 f"β = {f['beta']:+.2f} ± {f['beta_err']:.2f}, prior shape shift at 0.6 R_h {f['shift_06']:+.3f} "
                 f"dex, median effective draws {f['ess_median']:.2f}" for f in folds) + f". Whole sample: β = "
             f"{fit['beta']:+.2f} ± {fit['beta_err']:.2f}, shift {fit['shift_06']:+.3f} dex.", "",
             "`galmass population` on the whole set: " + ("**refused** (" + "; ".join(problems) + ")" if problems
                                                           else "accepted (the checks pass)") + ".", "",
             "| r / R_h | bias: plain, cross-fitted, whole sample | RMS | 68 % coverage |", "|---|---|---|---|"]
    for k in SHOW:
        cells = [f"{st[0][i, k]:{fmt}}, " + ", ".join(f"{st[m][i, k]:{fmt}} ± {err[m - 1, i, k]:{efmt}}"
                                                     for m in (1, 2))
                 for i, fmt, efmt in ((0, "+.3f", ".3f"), (1, ".3f", ".3f"), (2, ".2f", ".2f"))]
        lines.append(f"| {scores[0]['radii_factors'][k]:.1f} | " + " | ".join(cells) + " |")
    cov = [f"{s[2].min():.2f}–{s[2].max():.2f}" for s in st]
    lines += ["", "(± : bootstrap error of the difference from plain.) 68 % coverage over the ten radii: plain "
              f"{cov[0]}, cross-fitted {cov[1]}, whole sample {cov[2]}. RMS ÷ best estimator "
              f"({scores[0]['best_estimator']}): " + ", ".join(f"{s['rms_ratio_vs_best_estimator']:.2f}"
                                                              for s in scores)
              + ". TARP max |ECP − α|: " + ", ".join(f"{s['tarp']['max_abs_error']:.3f}" for s in scores) + ".", ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="trained run (default: the shipped model)")
    ap.add_argument("--set-name", default="default", choices=sorted(NAMED_SETS))
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--boot", type=int, default=100, help="bootstrap resamples of the galaxies (tilt refitted)")
    ap.add_argument("--name", default="population_validation")
    a = ap.parse_args()
    t0 = time.time()
    model, cfg, blob, described = load_model(a.run, None)
    prior, prior_from = prior_labels(MODEL_DIR if a.run is None else a.run, cfg, blob)
    vset = get_set(None, NAMED_SETS[a.set_name])
    lines = []
    for n in vset.spec.n_stars:
        lines += grade(model, cfg, blob, vset, int(n), prior, a)
    head = [f"# `galmass population` on the {a.set_name} independent set ({vset.name})", "",
            f"Machine: {machine()}; load {load_average()}", "",
            f"Model: {described}; prior: {prior_from} ({len(prior)} labels); {a.samples} draws per catalogue "
            f"(from {POPULATION_OVERSAMPLE * a.samples}), seed {a.seed}; wall time {(time.time() - t0) / 60:.1f} min.",
            f"Reproduce: `python benchmarks/population_validation.py --set-name {a.set_name} --samples {a.samples} "
            f"--boot {a.boot}"
            + (f" --run {a.run}" if a.run else "") + "`.", "", __doc__.split("\n\n", 2)[2].strip(), ""]
    write_result(f"{a.name}_{a.set_name}", "\n".join(head + lines) + "\n")


if __name__ == "__main__":
    main()
