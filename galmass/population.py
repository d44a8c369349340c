"""Population prior adaptation: re-weight a trained model's posteriors to the mass-profile prior of the galaxies it
is applied to, learnt from those galaxies' own (unlabelled) catalogues.

Why: a model's posterior is p_train(θ | x) ∝ p(x | θ) p_train(θ), with p_train the label distribution of its
training suites. Leave-one-feedback-out showed that applying a model to galaxies of another feedback model fails
mostly through that prior — at N★ ≈ 100 the inner slope is hardly measurable, so the training recipes' slope
distribution is the answer inside R_h (README, "Cross-suite transfer") — and that terms acting on the embedding
(MMD) or the calibration (ensembles) do not move it. If the new population's prior differs from the training one
by a factor w(θ), p_new(θ) ∝ w(θ) p_train(θ), while p(x | θ) is the same ("label shift"; Saerens, Latinne &
Decaestecker 2002, Neural Computation 14, 21), then

    p_new(θ | x) ∝ w(θ) p_train(θ | x),

and w is identifiable from the new galaxies *together*: each catalogue's likelihood says little about the inner
slope, but hundreds of them constrain the population's slope distribution (hierarchical inference with the trained
posterior as the per-galaxy likelihood × old prior). Here w is an exponential tilt in K features of the profile,

    w_β(θ) = exp(β · φ(θ)),   φ = the first K principal components of the shape θ − mean_r θ of the training
                                  labels, each scaled to unit variance under p_train,

so β = 0 is the trained model and β moves the prior's mean shape by about β standard deviations. β maximises the
new catalogues' marginal likelihood, which with the model's posterior draws θ_ij ~ p_train(θ | x_i) is

    ℓ(β) = mean_i log mean_j w_β(θ_ij) − log mean_m E_ε w_β(θ_m + ε) − λ |β|² / 2

(θ_m: training labels; ε ~ N(0, σ_j² I) the jitter training adds to them (``model.label_noise_dex``), so θ_m + ε is
the prior the flow learnt — E_ε w_β(θ_m + ε) = w_β(θ_m) exp(σ_j² Σ_k (β_k / scale_k)² / 2) exactly, φ being linear
with orthonormal axes. Without it the jitter, comparable to the labels' spread along the second shape axis
(0.015–0.025 dex), reads as a population shift along that axis; λ a weak ridge so a population that says nothing
keeps β ≈ 0).
β's uncertainty (inverse Hessian, counting galaxies, not projections) is carried into the posteriors: the prior is
the mixture of the tilts of :data:`N_BETA` draws of β. The adapted posterior of catalogue i is its draws with
weights ∝ that prior (sampling-importance-resampling in :meth:`MassPosterior.sample`): no retraining, any trained
model (ensembles and tempered ones included); K = 1 (the slope) by default.

The assumption is strong: only the profile prior shifts. A population whose catalogues differ in what p(x | θ) sees
(halo shape beyond the ten radii, anisotropy, light profiles) is not corrected and can be made worse: on the sealed
independent set it made the 0.6 R_h intervals of N★ = 100 overconfident (README, "A population prior"). Two checks
refuse such a tilt before anything is written (``--force`` writes it, recorded): the two halves of the sample must
ask for the same tilt (:func:`split_half`), and the median catalogue must keep :data:`LOW_ESS` of its draws.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize

__all__ = ["PopulationError", "Tilt", "fit_tilt", "tilt_weights", "weighted_quantiles", "effective_sample_size",
           "split_half", "tilt_problems", "prior_labels", "adapt_run", "run"]

LOW_ESS = 0.25
"""Median fraction of effective draws below which a tilt is refused: the new prior then sits in the tails of most
trained posteriors (leave-one-feedback-out, before the jitter term: mis-fitted tilts had 0.03–0.09; population.md)."""
SPLIT_HALF_P = 0.01
"""p-value of the split-half test (:func:`split_half`) below which a tilt is refused."""
MIN_TARGET = 10
"""Fewest target galaxies a tilt is fitted to (K numbers from fewer would follow their noise; the split-half test
needs both halves)."""
N_BETA = 32
"""Draws of β (antithetic pairs) whose mixture is the adapted prior: a few galaxies give a wide β, and the
posteriors must carry that (with thousands of catalogues the draws coincide)."""
RIDGE = 1e-2
"""λ: a Gaussian prior of width 10 on each β (features have unit prior variance), so the fit is always defined."""


class PopulationError(ValueError):
    """A run or target that cannot be adapted, or an output that would overwrite something; says what to do."""


def _logmeanexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = a.max(axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.mean(np.exp(a - m), axis=axis))


def _softmax(a: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _features(theta: np.ndarray, centre: np.ndarray, basis: np.ndarray, scale: np.ndarray) -> np.ndarray:
    shape = theta - theta.mean(axis=-1, keepdims=True) - centre
    return (shape @ basis.T) / scale


@dataclass(frozen=True)
class Tilt:
    """An exponential tilt of the profile prior, w_β(θ) = exp(β · (shape(θ) − centre) @ basis.T / scale), with the
    uncertainty of β from a finite population carried by ``beta_draws`` (the prior is their mixture)."""

    centre: np.ndarray  # [R] mean shape of the training labels
    basis: np.ndarray  # [K, R] principal axes of the shapes
    scale: np.ndarray  # [K] prior standard deviation of each feature
    beta: np.ndarray  # [K] the best fit
    cov: np.ndarray  # [K, K] its covariance: inverse Hessian of ℓ × the independent galaxies
    beta_draws: np.ndarray  # [B, K] antithetic draws of N(beta, cov)
    log_z: np.ndarray  # [B] log of each draw's prior normaliser, log E_prior w_β
    n_target: int  # catalogues fitted
    n_independent: int  # galaxies among them (projections of one galaxy are not independent data)

    def features(self, theta: np.ndarray) -> np.ndarray:
        """φ(θ) [..., K] of profiles θ [..., R] (log10 M at the model's radii)."""
        return _features(theta, self.centre, self.basis, self.scale)

    def log_weight(self, theta: np.ndarray) -> np.ndarray:
        """log of the mixture tilt mean_b w_β_b(θ) / Z_b [...] of profiles θ [..., R] (up to a constant)."""
        a = self.features(theta) @ self.beta_draws.T - self.log_z  # [..., B]
        m = a.max(axis=-1, keepdims=True)
        return np.squeeze(m, -1) + np.log(np.exp(a - m).sum(axis=-1))

    def prior_shift(self) -> np.ndarray:
        """The tilt's shift of the mean shape [R] in dex, to first order (β times each axis's prior width)."""
        return (self.beta * self.scale) @ self.basis

    def to_dict(self) -> dict[str, Any]:
        return {"centre": self.centre.tolist(), "basis": self.basis.tolist(), "scale": self.scale.tolist(),
                "beta": self.beta.tolist(), "beta_err": np.sqrt(np.diag(self.cov)).tolist(), "cov": self.cov.tolist(),
                "beta_draws": self.beta_draws.tolist(), "log_z": self.log_z.tolist(), "n_target": self.n_target,
                "n_independent": self.n_independent}


def _basis(prior_labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    shape = prior_labels - prior_labels.mean(axis=1, keepdims=True)
    centre = shape.mean(axis=0)
    _, sv, vt = np.linalg.svd(shape - centre, full_matrices=False)
    basis = vt[:k] * np.sign(vt[:k, :1])  # sign fixed (inner radius positive) so β is comparable between fits
    return centre, basis, sv[:k] / np.sqrt(len(shape))


def fit_tilt(target_draws: np.ndarray, prior_labels: np.ndarray, n_features: int = 1, ridge: float = RIDGE,
             jitter_dex: float = 0.0, n_independent: int | None = None) -> Tilt:
    """Fit the tilt of the module docstring.

    Parameters
    ----------
    target_draws : ndarray [S, N, R]
        Posterior draws (log10 M [Msun] at R radii) of the trained model for N catalogues of the new population.
    prior_labels : ndarray [M, R]
        The training labels (the prior p_train the model learnt), e.g. its dataset's train split.
    n_features : int
        K, principal components of the profile shape tilted (1: the slope, what feedback recipes change first;
        2: slope and curvature).
    ridge : float
        λ of the penalty λ|β|²/2.
    jitter_dex : float
        σ_j, the Gaussian jitter [dex] added to each label in training (the module docstring).
    n_independent : int, optional
        Independent galaxies among the N catalogues (default N): sets β's uncertainty.
    """
    if target_draws.ndim != 3 or prior_labels.ndim != 2 or target_draws.shape[2] != prior_labels.shape[1]:
        raise ValueError(f"target draws [S, N, R] and prior labels [M, R] needed, got {target_draws.shape} and "
                         f"{prior_labels.shape}")
    if not 1 <= n_features < prior_labels.shape[1]:
        raise ValueError(f"n_features must be 1..{prior_labels.shape[1] - 1}, got {n_features}")
    k, n = n_features, target_draws.shape[1]
    centre, basis, scale = _basis(prior_labels.astype(np.float64), k)
    phi_t, phi_p = (_features(a.astype(np.float64), centre, basis, scale) for a in (target_draws, prior_labels))
    jitter = jitter_dex**2 / scale**2  # [K]: the jitter's variance along each feature

    def log_z(beta: np.ndarray) -> float:  # E over the jittered prior, exact for a linear φ
        return float(_logmeanexp(phi_p @ beta, 0) + jitter @ beta**2 / 2)

    def neg_ll(beta: np.ndarray) -> tuple[float, np.ndarray]:
        lt = phi_t @ beta  # [S, N]
        value = _logmeanexp(lt, 0).mean() - log_z(beta) - ridge * beta @ beta / 2
        grad = (np.einsum("sn,snk->k", _softmax(lt, 0), phi_t) / n - _softmax(phi_p @ beta, 0) @ phi_p
                - jitter * beta - ridge * beta)
        return -float(value), -grad

    beta = minimize(neg_ll, np.zeros(k), jac=True, method="BFGS").x
    h = 1e-4  # the Hessian of the mean objective by central differences of its exact gradient
    hess = np.stack([(neg_ll(beta + h * e)[1] - neg_ll(beta - h * e)[1]) / (2 * h) for e in np.eye(k)])
    n_ind = n if n_independent is None else int(n_independent)
    cov = np.linalg.inv((hess + hess.T) / 2) / n_ind
    z = np.random.default_rng(0).standard_normal((N_BETA // 2, k))
    draws = beta + np.concatenate([z, -z]) @ np.linalg.cholesky(cov).T
    return Tilt(centre, basis, scale, beta, cov, draws, np.array([log_z(b) for b in draws]), n, n_ind)


def tilt_weights(tilt: Tilt, draws: np.ndarray) -> np.ndarray:
    """Normalised weights [S, N] of posterior draws [S, N, R] under the tilted prior (each column sums to 1)."""
    return _softmax(tilt.log_weight(draws.astype(np.float64)), 0)


def effective_sample_size(weights: np.ndarray) -> np.ndarray:
    """Kish's effective number of draws [N] of normalised weights [S, N]: S when the tilt changes nothing."""
    return 1.0 / np.sum(weights ** 2, axis=0)


def weighted_quantiles(draws: np.ndarray, weights: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Quantiles [Q, N, R] of weighted draws [S, N, R] (weights [S, N], columns summing to 1): linear interpolation
    between the draws' mid-point plotting positions (cumulative weight − own weight / 2); with equal weights numpy's
    ``method="hazen"``."""
    order = np.argsort(draws, axis=0)
    x = np.take_along_axis(draws, order, axis=0)
    w = np.take_along_axis(np.broadcast_to(weights[..., None], draws.shape), order, axis=0)
    pos = np.cumsum(w, axis=0) - w / 2
    out = np.empty((len(q),) + draws.shape[1:])
    for i, qi in enumerate(np.asarray(q, dtype=np.float64)):
        k = np.clip((pos < qi).sum(axis=0), 1, len(x) - 1)[None]
        lo, hi = np.take_along_axis(pos, k - 1, 0)[0], np.take_along_axis(pos, k, 0)[0]
        xlo, xhi = np.take_along_axis(x, k - 1, 0)[0], np.take_along_axis(x, k, 0)[0]
        t = np.clip((qi - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0)
        out[i] = xlo + t * (xhi - xlo)
    return out


# -- the command: galmass population [--run RUN] --target PATH --out DIR ------------------------------------------

def _draws(model, data, n: int, seed: int, batch: int = 256) -> np.ndarray:
    """Posterior draws [n, N, R] of the trained model (no tilt) for every input of ``data``."""
    from galmass.models.io import to_torch

    torch.manual_seed(seed)
    out = []
    for start in range(0, len(data), batch):
        b = to_torch(data.get_batch(np.arange(start, min(len(data), start + batch))), torch.device("cpu"))
        with torch.inference_mode():
            out.append(model.sample({k: b[k] for k in model.input_keys}, n).numpy())
    return np.concatenate(out, axis=1).astype(np.float64)


def _check(source: str, out: Path, blob: dict[str, Any], n_galaxies: int, target: Path) -> None:
    if blob.get("population"):
        raise PopulationError(f"{source} is already adapted to {blob['population']['target']}. HINT: adapt the run it "
                              "was made from")
    if out.exists() and (any(out.iterdir()) or (out / "best.pt").exists()):
        raise PopulationError(f"{out} is not empty (a model is never overwritten). HINT: choose a new --out directory")
    if n_galaxies < MIN_TARGET:
        raise PopulationError(f"--target {target}: {n_galaxies} galaxies; a population prior needs >= {MIN_TARGET} "
                              "(one galaxy's data cannot tell its prior from its likelihood). HINT: use the model as "
                              "trained for a few galaxies")


def prior_labels(run_dir: Path, cfg, blob: dict[str, Any]) -> tuple[np.ndarray, str]:
    """The labels the model learnt as its prior, and where they came from: the sample a shipped model carries
    (``prior_labels``, written by ``galmass ship``; the same answer on every machine), else its dataset's train
    split (found and hash-checked as ``galmass evaluate`` finds it)."""
    from galmass.datasets import DatasetError, ShardedDataset
    from galmass.evaluate import resolve_dataset

    if blob.get("prior_labels") is not None:
        labels = np.asarray(blob["prior_labels"], dtype=np.float64)
        return labels, f"{len(labels)} training labels stored in the model file"
    try:
        path, _ = resolve_dataset(run_dir, cfg, blob, None)
    except DatasetError as err:
        raise PopulationError(f"{err} A population prior needs the labels the model was trained on. HINT: run "
                              "where its dataset is, or use a shipped model (it carries a sample)") from None
    labels = ShardedDataset(path, "train", ("labels",), valid_only=True).read_all("labels").astype(np.float64)
    return labels, f"the train split of {path}"


def split_half(target_draws: np.ndarray, galaxy: np.ndarray, prior: np.ndarray, n_features: int,
               jitter_dex: float) -> dict[str, Any]:
    """Fit the tilt on each half of the galaxies (alternate ids) and test that the two β agree: χ² of their
    difference with the sum of their covariances, and its p-value. A population that a tilt of the training prior
    does not describe (its galaxies differ in what the model's likelihood sees, or it mixes kinds) gives halves
    that disagree (the sealed independent set: p = 8e-7 at N★ = 1000, but 0.014 at N★ = 100, where a cross-fitted
    tilt hurt; population_validation_sealed.md)."""
    from scipy.stats import chi2

    ids = np.unique(galaxy)
    half = np.isin(galaxy, ids[::2])
    fits = [fit_tilt(target_draws[:, m], prior, n_features, jitter_dex=jitter_dex,
                     n_independent=len(np.unique(galaxy[m]))) for m in (half, ~half)]
    d = fits[0].beta - fits[1].beta
    stat = float(d @ np.linalg.solve(fits[0].cov + fits[1].cov, d))
    return {"beta_halves": [f.beta.tolist() for f in fits], "beta_err_halves":
            [np.sqrt(np.diag(f.cov)).tolist() for f in fits], "chi2": stat, "dof": n_features,
            "p_value": float(chi2.sf(stat, n_features))}


def tilt_problems(tilt_ess: np.ndarray, halves: dict[str, Any]) -> list[str]:
    """Why a tilt should not be trusted (empty: no reason found), from the catalogues' fractions of effective
    draws under it and the :func:`split_half` test."""
    out = []
    if halves["p_value"] < SPLIT_HALF_P:
        b = ", ".join(f"{v[0]:+.2f} ± {e[0]:.2f}" for v, e in zip(halves["beta_halves"], halves["beta_err_halves"]))
        out.append(f"the two halves of the sample ask for different tilts (β = {b}; p = {halves['p_value']:.1e} < "
                   f"{SPLIT_HALF_P}): a tilt of the training prior does not describe this population")
    if np.median(tilt_ess) < LOW_ESS:
        out.append(f"the median catalogue keeps {np.median(tilt_ess):.0%} of its draws (< {LOW_ESS:.0%}): the "
                   "population's profiles lie where the trained posteriors have little mass")
    return out


def _galaxies(inputs) -> np.ndarray:
    """Galaxy of each input: a dataset's ids (its projections of one galaxy are not independent), else one each."""
    return inputs.read_all("meta/galaxy_id") if hasattr(inputs, "read_all") else np.arange(len(inputs))


def _fit(model, cfg, inputs, prior: np.ndarray, n_features: int, draws: int, seed: int
         ) -> tuple[Tilt, np.ndarray, dict[str, Any]]:
    """The tilt on all of ``inputs``, each catalogue's fraction of effective draws, and the split-half test."""
    target_draws, galaxy = _draws(model, inputs, draws, seed), _galaxies(inputs)
    jitter = cfg.model.label_noise_dex
    tilt = fit_tilt(target_draws, prior, n_features, jitter_dex=jitter, n_independent=len(np.unique(galaxy)))
    halves = split_half(target_draws, galaxy, prior, n_features, jitter)
    return tilt, effective_sample_size(tilt_weights(tilt, target_draws)) / draws, halves


def adapt_run(run_dir: str | Path | None, target: str | Path, out: str | Path, model_name: str | None = None,
              split: str = "train", n_features: int = 1, draws: int = 200, seed: int = 0, force: bool = False
              ) -> dict[str, Any]:
    """Fit the population tilt of a run's (or, ``run_dir`` None, a shipped model's) posteriors on ``target`` and
    write the adapted model to the new run directory ``out``. A tilt with :func:`tilt_problems` is refused
    (nothing written) unless ``force``; the checks are recorded either way."""
    from galmass.models.io import save_derived
    from galmass.pretrained import MODEL_DIR
    from galmass.predict import load_model
    from galmass.target_domain import target_data
    from hpc.atomic import atomic_write_json, atomic_write_text

    target, out = Path(target), Path(out)
    model, cfg, blob, described = load_model(None if run_dir is None else str(run_dir), model_name)
    source = Path(run_dir) if run_dir is not None else MODEL_DIR
    # one input per galaxy of a catalogue target (min_samples 1): each galaxy counts once in the fit
    inputs = target_data(target, cfg.data, model.input_keys, min_samples=1, split=split, option="--target ")
    _check(described, out, blob, len(np.unique(_galaxies(inputs))), target)
    prior, prior_from = prior_labels(source, cfg, blob)
    tilt, ess, halves = _fit(model, cfg, inputs, prior, n_features, draws, seed)
    problems = tilt_problems(ess, halves)
    if problems and not force:
        raise PopulationError(f"--target {target}: not adapted (nothing written): " + "; ".join(problems) + ". HINT: "
                              "use the model as trained, or one trained on a prior that covers this population; "
                              "--force writes the tilt anyway (recorded)")
    fit = {"tilt": tilt.to_dict(), "target": str(target.resolve()), "split": split if hasattr(inputs, "shards")
           else None, "n_catalogues": len(inputs), "draws": draws, "seed": seed, "model": described,
           "prior": prior_from, "prior_shift_dex": tilt.prior_shift().tolist(), "jitter_dex": cfg.model.label_noise_dex,
           "radii_factors": [float(f) for f in blob["radii_factors"]],
           "ess_fraction": {"median": float(np.median(ess)), "p5": float(np.percentile(ess, 5)),
                            "min": float(ess.min())}, "split_half": halves, "problems": problems, "forced": force}
    blob = {k: v for k, v in blob.items() if k != "card"}  # a shipped model's card describes the shipped weights
    save_derived(source, out, {**blob, "population": fit})
    atomic_write_json(out / "population.json", fit)
    atomic_write_text(out / "population.md", render(fit))
    return fit


def render(fit: dict[str, Any]) -> str:
    """population.md: the tilt, the prior's mean shape shift per radius and the re-weighting's effective draws."""
    t, e = fit["tilt"], fit["ess_fraction"]
    beta = ", ".join(f"{b:+.3f} ± {s:.3f}" for b, s in zip(t["beta"], t["beta_err"]))
    lines = [f"# Population prior of {fit['model']}", "",
             f"Target: `{fit['target']}`" + (f" ({fit['split']} split)" if fit["split"] else "")
             + f", {fit['n_catalogues']} catalogues × {fit['draws']} draws (seed {fit['seed']}); prior: "
             f"{fit['prior']}.", "",
             f"β = {beta} (shape principal component{'s 1–' if len(t['beta']) > 1 else ' '}{len(t['beta'])}, in "
             f"prior standard deviations; errors from {t['n_independent']} independent galaxies, carried into the "
             f"posteriors by {len(t['beta_draws'])} draws of β); training jitter {fit['jitter_dex']} dex.", "",
             "| r / R_h | " + " | ".join(f"{f:.1f}" for f in fit["radii_factors"]) + " |",
             "|---|" + "---|" * len(fit["radii_factors"]),
             "| prior mean shape shift [dex] | " + " | ".join(f"{v:+.3f}" for v in fit["prior_shift_dex"]) + " |", "",
             f"Effective draws after re-weighting (fraction of {fit['draws']}): median {e['median']:.2f}, 5th "
             f"percentile {e['p5']:.2f}, least {e['min']:.3f}.", ""]
    h = fit["split_half"]
    lines += [f"Split-half test: β of the two halves {', '.join(f'{v[0]:+.3f}' for v in h['beta_halves'])} "
              f"(χ² = {h['chi2']:.2f}, {h['dof']} dof, p = {h['p_value']:.2g}).", ""]
    return "\n".join(lines + [f"WARNING (written with --force): {p}." for p in fit["problems"]] + [""])


def run(args: argparse.Namespace) -> int:
    """``galmass population [--run RUN | --model NAME] --target PATH --out DIR``."""
    fit = adapt_run(args.run, args.target, args.out, model_name=args.model, split=args.split,
                    n_features=args.features, draws=args.draws, seed=args.seed, force=args.force)
    shift = ", ".join(f"{v:+.3f}" for v in fit["prior_shift_dex"])
    print(f"[galmass] adapted the {fit['model']} to {fit['n_catalogues']} catalogues of {args.target}: β = "
          f"{np.round(fit['tilt']['beta'], 3).tolist()}, prior mean shape shift [{shift}] dex; median effective "
          f"draws {fit['ess_fraction']['median']:.2f}; wrote {Path(args.out) / 'best.pt'} and population.md")
    for problem in fit["problems"]:
        print(f"[galmass] WARNING (written with --force): {problem}", file=sys.stderr)
    return 0
