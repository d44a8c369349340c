"""``galmass calibrate RUN --out DIR``: post-hoc tempering of a trained stars model as a function of N★, fitted on
the validation split of its own dataset.

Why: one flow trained by maximum likelihood on catalogues of 20–3000 stars need not be equally calibrated at every
N★. The shipped ensemble's central 68 % intervals held the truth in 0.63 of its validation catalogues with 20–40
stars and in 0.72 of those with 1800–3000 (TARP 0.036 and 0.060; benchmarks/results/calibration.md): too narrow
for few stars, too wide for many. Tempering every flow's standard-normal base noise, z → s z, with

    log10 s = c0 + c1 x + c2 x²,  x = log10 N★ − 2,

widens (s > 1) or narrows (s < 1) each posterior smoothly in N★; s = 1 is the trained model. The density stays
exact (:func:`galmass.models.sampling.tempered_log_prob`), so draws, ``log_prob`` and every metric agree.

By default the calibration only widens: s = max(s, 1). Narrowing the posteriors of many-star catalogues is what
the training distribution asks for, but on the default independent set it turned the shipped ensemble's 68 %
coverage at N★ = 1000 from 0.64–0.73 to 0.62–0.72 (below 0.63 at three radii), while widening the few-star
posteriors raised N★ = 100 there by 0.01–0.03 (calibration.md); an interval that is too wide is the safe error
on galaxies unlike the training suites. ``--narrow`` applies the fit both ways.

Fit (:func:`fit_temperature`): posterior draws of the validation split — never the test split, which then grades
the result — at a grid of s with the same noise (common random numbers); per N★ bin the s minimising the
calibration error, the mean over the ten radii and the central levels α = 0.1 … 0.9 of |coverage(α) − α| (the
truth's rank among the draws gives every level at once), refined by a parabola through the best grid point and
its neighbours; c0, c1, c2 by least squares over the eight bins, weighted by their catalogues. Three numbers from
~18,000 catalogues (570 galaxies) cannot follow the noise of one bin; a straight line (two) could not follow the shipped
ensemble's best scales, which fall steeply from 20 to 100 stars and slowly beyond (calibration.md).

The output is a new run directory (the original is never modified): ``best.pt`` with the fit in its
``calibration`` entry (the weights are unchanged), the run's ``config.yaml``, ``done.json`` and ensemble record,
and ``calibration.{json,md}`` with the calibration error per N★ bin before and after.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from galmass.datasets import ShardedDataset, scalar_index
from galmass.evaluate import resolve_dataset
from galmass.models.io import load_trained, save_derived, to_torch
from hpc.atomic import atomic_write_json, atomic_write_text

__all__ = ["CalibrationError", "fit_temperature", "calibration_error", "calibrate_run", "run"]

LEVELS = np.linspace(0.1, 0.9, 9)
"""Central credible levels whose coverage is matched."""
GRID = np.round(np.arange(0.80, 1.2501, 0.05), 2)
"""Base-noise scales tried per bin (the shipped ensemble's best lie within 0.94–1.20)."""
N_BINS = 8
"""N★ bins (log-spaced over the split's range) of the fit."""
DEGREE = 2
"""Polynomial degree of log10 s in log10 N★."""
MIN_BIN = 50
"""Validation catalogues a bin needs for its coverages to count."""


class CalibrationError(ValueError):
    """A run that cannot be calibrated, or an output that would overwrite something; the message says what to do."""


def calibration_error(ranks: np.ndarray) -> float:
    """Mean over radii and :data:`LEVELS` of |coverage − level| for ranks [N, R] of the truths among the draws
    (the fraction of draws below the truth): the truth is in the central α interval iff |rank − ½| < α / 2."""
    dev = np.abs(ranks - 0.5)[None] < LEVELS[:, None, None] / 2
    return float(np.mean(np.abs(dev.mean(axis=1) - LEVELS[:, None])))


def _cov68(ranks: np.ndarray) -> float:
    return float(np.mean(np.abs(ranks - 0.5) < 0.34))


def _ranks(model, data: ShardedDataset, log_s: tuple[float, ...], draws: int, seed: int, min_scale: float = 0.0,
           batch: int = 512) -> np.ndarray:
    """Rank [N, R] of each truth among ``draws`` posterior draws with temperature coefficients ``log_s``."""
    model.temperature, model.temper_min = log_s, min_scale
    out = []
    torch.manual_seed(seed)  # the same base noise for every temperature: the fit compares like with like
    for start in range(0, len(data), batch):
        b = to_torch(data.get_batch(np.arange(start, min(len(data), start + batch))), torch.device("cpu"))
        with torch.inference_mode():
            s = model.sample({k: b[k] for k in model.input_keys}, draws).numpy()
        out.append((s < b["labels"].numpy()[None]).mean(axis=0))
    return np.concatenate(out)


def _bins(log_n: np.ndarray) -> list[np.ndarray]:
    edges = np.linspace(log_n.min(), log_n.max() + 1e-9, N_BINS + 1)
    return [(log_n >= lo) & (log_n < hi) for lo, hi in zip(edges[:-1], edges[1:])]


def _best_scale(errors: np.ndarray) -> float:
    """The grid scale of least error, refined by a parabola through it and its neighbours (log s)."""
    i = int(np.clip(np.argmin(errors), 1, len(GRID) - 2))
    x, y = np.log10(GRID[i - 1:i + 2]), errors[i - 1:i + 2]
    c2, c1, _ = np.polyfit(x, y, 2)
    best = -c1 / (2 * c2) if c2 > 0 else x[int(np.argmin(y))]
    return float(np.clip(best, np.log10(GRID[0]), np.log10(GRID[-1])))


def fit_temperature(model, data: ShardedDataset, draws: int = 100, seed: int = 0, narrow: bool = False
                    ) -> dict[str, Any]:
    """Fit the tempering on ``data`` (see the module docstring); returns it and the per-bin errors before/after.
    ``narrow`` False keeps s >= 1 (widen only)."""
    log_n = data.read_all("scalars")[:, scalar_index("log10_n_stars")].astype(np.float64)
    bins = [sel for sel in _bins(log_n) if sel.sum() >= MIN_BIN]  # fewer cannot measure a coverage
    if len(bins) <= DEGREE:  # checked before any sampling
        raise CalibrationError(f"{data.directory}: only {len(bins)} N★ bins with >= {MIN_BIN} validation catalogues "
                               f"({len(log_n)} in all); a degree-{DEGREE} fit needs {DEGREE + 1}. HINT: calibrate a "
                               "model trained on a larger dataset (data.galaxies_per_cell, data.projections)")
    ranks = {float(s): _ranks(model, data, (float(np.log10(s)),), draws, seed) for s in GRID}
    rows = []
    for sel in bins:
        errors = np.array([calibration_error(ranks[float(s)][sel]) for s in GRID])
        rows.append({"log10_n_mid": float(np.median(log_n[sel])), "n": int(sel.sum()),
                     "best_log10_s": _best_scale(errors), "error_trained": float(errors[list(GRID).index(1.0)]),
                     "cov68_trained": _cov68(ranks[1.0][sel])})
    x = np.array([r["log10_n_mid"] - 2.0 for r in rows])
    y, w = np.array([r["best_log10_s"] for r in rows]), np.array([r["n"] for r in rows], dtype=np.float64)
    coef = tuple(float(c) for c in np.polyfit(x, y, DEGREE, w=np.sqrt(w))[::-1])  # c0, c1, c2
    min_scale = 0.0 if narrow else 1.0
    after = _ranks(model, data, coef, draws, seed, min_scale)
    for r, sel in zip(rows, bins):
        r["error_calibrated"], r["cov68_calibrated"] = calibration_error(after[sel]), _cov68(after[sel])
    return {"temperature": list(coef), "min_scale": min_scale, "bins": rows, "draws": draws, "seed": seed,
            "grid": GRID.tolist(), "levels": LEVELS.tolist(), "n_catalogues": int(len(log_n)),
            "error_trained": calibration_error(ranks[1.0]), "error_calibrated": calibration_error(after)}


def _check(run_dir: Path, out: Path, cfg, blob: dict[str, Any]) -> None:
    if "stars" not in cfg.model.tracer:
        raise CalibrationError(f"{run_dir}: tracer mode '{cfg.model.tracer}' has no N★ to calibrate against. "
                               "HINT: calibrate a model that reads stars")
    if blob.get("calibration"):
        raise CalibrationError(f"{run_dir / 'best.pt'} is already calibrated ({blob['calibration']['temperature']}). "
                               "HINT: calibrate the run it was made from")
    if blob.get("population"):  # its draws are re-weighted to another population; the validation split is not it
        raise CalibrationError(f"{run_dir / 'best.pt'} is adapted to a population (`galmass population`). HINT: "
                               "calibrate the run it was adapted from, then adapt the calibrated run")
    if out.resolve() == run_dir.resolve() or (out.exists() and any(out.iterdir())):
        raise CalibrationError(f"{out} is the run itself or not empty (a model is never overwritten). HINT: choose a "
                               "new --out directory")


def calibrate_run(run_dir: str | Path, out: str | Path, draws: int = 100, seed: int = 0, narrow: bool = False
                  ) -> dict[str, Any]:
    """Fit the tempering of ``run_dir`` on its dataset's validation split; write the calibrated run to ``out``."""
    run_dir, out = Path(run_dir), Path(out)
    model, cfg, blob = load_trained(run_dir)
    _check(run_dir, out, cfg, blob)
    path, _ = resolve_dataset(run_dir, cfg, blob, None)  # the run's own dataset (its hash is checked)
    data = ShardedDataset(path, "val", tuple(dict.fromkeys(model.input_keys + ("labels",))), valid_only=True)
    fit = fit_temperature(model, data, draws, seed, narrow)
    fit.update(run=str(run_dir.resolve()), data_path=str(path), data_hash=blob.get("data_hash"), split="val")
    save_derived(run_dir, out, {**blob, "calibration": fit})
    atomic_write_json(out / "calibration.json", fit)
    atomic_write_text(out / "calibration.md", render(fit))
    return fit


def _formula(coef: list[float]) -> str:
    terms = [f"{c:+.4f}" + ("" if k == 0 else " x" if k == 1 else f" x^{k}") for k, c in enumerate(coef)]
    return " ".join(terms) + " (x = log10 N★ − 2)"


def render(fit: dict[str, Any]) -> str:
    """calibration.md: the fit and the calibration error per N★ bin, trained vs calibrated."""
    lines = [f"# Calibration of {fit['run']}", "",
             f"log10 s = {_formula(fit['temperature'])}" + (", s >= 1 (widen only)" if fit["min_scale"] else "")
             + f", fitted on the {fit['split']} split of `{fit['data_path']}` "
             f"({fit['n_catalogues']} catalogues, {fit['draws']} draws each, seed {fit['seed']}). Error = mean over "
             "the ten radii and the central levels 0.1–0.9 of |coverage − level|.", "",
             "| N★ (median) | catalogues | best s of the bin | fitted s | error trained | error calibrated | "
             "68 % coverage trained | calibrated |", "|---|---|---|---|---|---|---|---|"]
    for r in fit["bins"]:
        s_fit = max(10 ** np.polyval(fit["temperature"][::-1], r["log10_n_mid"] - 2), fit["min_scale"])
        lines.append(f"| {10 ** r['log10_n_mid']:.0f} | {r['n']} | {10 ** r['best_log10_s']:.3f} | {s_fit:.3f} | "
                     f"{r['error_trained']:.4f} | {r['error_calibrated']:.4f} | {r['cov68_trained']:.3f} | "
                     f"{r['cov68_calibrated']:.3f} |")
    lines += ["", f"All catalogues: error {fit['error_trained']:.4f} trained, {fit['error_calibrated']:.4f} "
              "calibrated.", ""]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """``galmass calibrate RUN --out DIR``."""
    fit = calibrate_run(args.run, args.out, draws=args.draws, seed=args.seed, narrow=args.narrow)
    print(f"[galmass] calibrated {args.run}: log10 s = {_formula(fit['temperature'])}; calibration error "
          f"{fit['error_trained']:.4f} → {fit['error_calibrated']:.4f} on its validation split; wrote "
          f"{Path(args.out) / 'best.pt'} and calibration.md")
    return 0
