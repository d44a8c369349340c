"""Grading posterior samples on the validation set: observer's steps, truth, metrics, markdown.

Any estimator is graded the same way (a galmass run through :func:`galmass.validate.validate_run`, or any sampler
callable through :func:`evaluate_sampler`):

1. :func:`observe_set` applies the observer's steps to every catalogue of one N★ variant with
   :func:`galmass.maps.observation_to_sample` (membership clipping, centring on the stars, R_h, error-corrected
   σ★; the model inputs when a map geometry is needed), exactly as ``galmass predict`` and the training mocks
   do. The truth is the galaxy's log10 M(< f R_h) at *that* R_h (members about their estimated centre: the
   training labels' definition) and at each literature estimator's radius, from the set's truth table.
2. The estimator returns posterior samples [S, N, 10] of log10 M(< f R_h) [Msun], f = 0.6 … 2.4.
3. :func:`score` computes, per radius: bias (median residual), scatter ((p84 − p16)/2), RMS, 68 % coverage
   (fraction of truths inside the 16–84 % interval), plus the calibration curves of
   :func:`galmass.metrics.summary.compute_metrics`; per literature estimator: its bias, scatter and RMS at its
   radius next to the posterior's (samples interpolated in log r to that radius, median taken); and the
   ratio RMS(posterior) / RMS(best estimator) at the best estimator's radius (best = lowest RMS on this set).

Residuals are log10(M_pred / M_true) [dex]; the point prediction of a posterior is its median.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from galmass.maps import observation_to_sample
from galmass.metrics.calibration import coverage
from galmass.metrics.estimators import ESTIMATORS
from galmass.metrics.summary import compute_metrics
from galmass.observer import with_observer
from galmass.physics.constants import RADII_FACTORS
from galmass.validation.generator import Catalogue, ValidationSet

__all__ = ["ObservedVariant", "Sampler", "observe_set", "score", "evaluate_sampler", "render_markdown",
           "by_family_at", "DEFAULT_GEOMETRY", "FAMILIES"]

Sampler = Callable[[list[Catalogue]], NDArray[np.floating]]
"""A posterior estimator: catalogues (members, centred) → samples [S, N, 10] of log10 M(< f R_h) [Msun] with
R_h = median(hypot(x_kpc, y_kpc)) of each catalogue as given, f = 0.6, 0.8, …, 2.4."""

DEFAULT_GEOMETRY: dict[str, Any] = {"npix": 64, "extent_rh": 4.0, "vmax_sigma": 4.0, "membership_clip": 3.0,
                                    "recentre": True}
"""Observer settings used by :func:`evaluate_sampler` when none are given (galmass's DataConfig defaults)."""

FAMILIES = ("halo", "tracer", "anisotropy")
"""The validation galaxies' generating families (GalaxyParams fields) that metrics are broken down by."""

_INPUT_KEYS = ("maps_stars", "phase_stars", "maps_gas", "phase_gas", "scalars", "summary_stars", "observer")


@dataclass(eq=False)
class ObservedVariant:
    """One N★ variant after the observer's steps: what an estimator sees and the truth it is graded against."""

    n_stars: int
    index: NDArray[np.int64]
    """Catalogue indices in the set [N]."""
    galaxy: NDArray[np.int64]
    catalogues: list[Catalogue]
    """Members, centred on their estimated centre (what the model inputs were made from)."""
    rh_kpc: NDArray[np.float64]
    sigma_kms: NDArray[np.float64]
    n_members: NDArray[np.int64]
    log_m_true: NDArray[np.float64]
    """[N, 10] log10 M(< f R_h) [Msun] at the members' R_h."""
    log_m_true_est: NDArray[np.float64]
    """[N, E] log10 M [Msun] at the literature estimators' radii."""
    inputs: dict[str, NDArray[np.float32]] | None
    """Model inputs stacked over catalogues (``keys`` of :func:`observe_set`), or None."""
    family: dict[str, NDArray[np.str_]] = field(default_factory=dict)
    """Per catalogue [N], its galaxy's generating family: ``halo``, ``tracer`` and ``anisotropy`` (``FAMILIES``)."""


def observe_set(vset: ValidationSet, n_stars: int, *, npix: int, extent_rh: float, vmax_sigma: float,
                membership_clip: float, recentre: bool, keys: Sequence[str] | None = None,
                state_observer: bool = True) -> ObservedVariant:
    """The observer's steps on every catalogue of one N★ variant (see the module docstring).

    Parameters
    ----------
    vset : ValidationSet
        The set.
    n_stars : int
        Which variant (a value of ``vset.spec.n_stars``).
    npix, extent_rh, vmax_sigma, membership_clip, recentre
        Map geometry and observer settings, as in :func:`galmass.maps.observation_to_sample` (a run's data config).
    keys : sequence of str, optional
        Model inputs to keep, stacked (e.g. ``model.input_keys``); None keeps none.
    state_observer : bool
        The ``observer`` input states the generator's binary and foreground fractions (0 and 0); False leaves them
        unstated (NaN).
    """
    bad = [k for k in (keys or ()) if k not in _INPUT_KEYS]
    if bad:
        raise ValueError(f"unknown model inputs {bad}. HINT: choose among {list(_INPUT_KEYS)}")
    idx = vset.indices(n_stars)
    cats = [vset.catalogue(int(c)) for c in idx]
    samples = [observation_to_sample(*cat, npix=npix, extent_rh=extent_rh, vmax_sigma=vmax_sigma,
                                     membership_clip=membership_clip, recentre=recentre) for cat in cats]
    catalogues = [Catalogue(c.x_kpc[s["members"]] - s["centre_x_kpc"], c.y_kpc[s["members"]] - s["centre_y_kpc"],
                            c.v_kms[s["members"]], c.v_err_kms[s["members"]]) for c, s in zip(cats, samples)]
    rh = np.array([s["rh_kpc"] for s in samples])
    galaxy = vset.arrays["cat_galaxy"][idx]
    est_f = np.array([e.radius_factor for e in ESTIMATORS])
    # The generator makes no binaries and no foreground: an observer would state 0 and 0.
    samples = with_observer(samples, (0.0, 0.0) if state_observer else (None, None))
    inputs = {k: np.stack([np.asarray(s[k]) for s in samples]).astype(np.float32) for k in keys} if keys else None
    return ObservedVariant(
        n_stars=int(n_stars), index=idx, galaxy=galaxy, catalogues=catalogues, rh_kpc=rh,
        sigma_kms=np.array([s["sigma_kms"] for s in samples]), n_members=np.array([s["n_members"] for s in samples]),
        log_m_true=vset.log_mass(galaxy, rh[:, None] * np.asarray(RADII_FACTORS)[None]),
        log_m_true_est=vset.log_mass(galaxy, rh[:, None] * est_f[None]), inputs=inputs,
        family={k: v[galaxy] for k, v in vset.galaxy_table().items() if k in FAMILIES})


def _rms(residual: NDArray[np.float64]) -> list[float]:
    return [float(v) for v in np.sqrt(np.mean(residual**2, axis=0))]


def score(samples: NDArray[np.floating], obs: ObservedVariant, seed: int = 0) -> dict[str, Any]:
    """Metrics of posterior samples [S, N, 10] on one observed variant (schema: see :func:`evaluate_sampler`)."""
    s = np.asarray(samples, dtype=np.float64)
    n = len(obs.catalogues)
    if s.ndim != 3 or s.shape[1:] != (n, len(RADII_FACTORS)):
        raise ValueError(f"samples must have shape [S, {n}, {len(RADII_FACTORS)}] (draws, catalogues, radii), got "
                         f"{s.shape}. HINT: one column per radius f = 0.6 … 2.4 R_h, draws first")
    base, arrays = compute_metrics(s, obs.log_m_true, obs.sigma_kms, obs.rh_kpc, obs.log_m_true_est,
                                   np.random.default_rng(seed))
    cov68 = coverage(s, obs.log_m_true, [0.68])[0]
    p16, p84 = np.percentile(s, [16.0, 84.0], axis=0)
    cnn = dict(base["cnn"], rms=_rms(arrays["cnn_residual"]), coverage68=[float(v) for v in cov68],
               width68=[float(v) for v in np.median(p84 - p16, axis=0)])
    est_rms, cnn_rms = _rms(arrays["estimator_residual"]), _rms(arrays["cnn_at_estimator_residual"])
    estimators = {}
    for j, (name, entry) in enumerate(base["estimators"].items()):
        estimators[name] = dict(entry, estimator=dict(entry["estimator"], rms=est_rms[j]),
                                cnn=dict(entry["cnn"], rms=cnn_rms[j]))
    best = min(estimators, key=lambda k: estimators[k]["estimator"]["rms"])
    ratio = estimators[best]["cnn"]["rms"] / max(estimators[best]["estimator"]["rms"], 1e-12)
    j = list(estimators).index(best)
    by_family = by_family_at(arrays["cnn_at_estimator_residual"][:, j], arrays["estimator_residual"][:, j],
                             obs.family)
    return {"n_stars": obs.n_stars, "n_catalogues": n, "n_galaxies": int(np.unique(obs.galaxy).size),
            "n_members_median": float(np.median(obs.n_members)), "posterior_samples": int(s.shape[0]),
            "radii_factors": base["radii_factors"], "cnn": cnn, "estimators": estimators,
            "best_estimator": best, "rms_ratio_vs_best_estimator": float(ratio),
            "coverage": base["coverage"], "tarp": base["tarp"], "by_family": by_family}


def by_family_at(posterior_residual: NDArray[np.float64], estimator_residual: NDArray[np.float64],
                 family: dict[str, NDArray[np.str_]]) -> dict[str, dict[str, dict[str, float]]]:
    """Where the errors live: per generating family (halo, tracer, anisotropy) and value, the number of
    catalogues and the posterior median's and the estimator's bias (median) and RMS [dex] at the best estimator's
    radius (residuals [N] of log10 M_pred / M_true)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key, values in family.items():
        out[key] = {}
        for v in sorted(set(values.tolist())):
            m = values == v
            p, e = posterior_residual[m], estimator_residual[m]
            out[key][str(v)] = {"n": int(m.sum()), "bias": float(np.median(p)), "rms": float(np.sqrt(np.mean(p**2))),
                                "estimator_bias": float(np.median(e)), "estimator_rms": float(np.sqrt(np.mean(e**2)))}
    return out


def width_ratio(arrays: dict[str, NDArray[Any]], lo: int, hi: int, radius_index: int) -> float:
    """Median over galaxies of (median 16–84 % width at N★ = hi) / (the same at N★ = lo) at one radius.

    ``arrays`` holds ``n<N>_p16``, ``n<N>_p84`` [catalogues, radii] and ``n<N>_galaxy`` for both N★ (the layout of
    posteriors.npz); each galaxy is observed along the same lines of sight at both N★, so the ratio says how much
    the posterior narrows with 10× more stars for the same galaxies (1/sqrt(10) = 0.32 for a statistics-limited
    Gaussian measurement).
    """
    per_n = []
    for n in (lo, hi):
        w = arrays[f"n{n}_p84"][:, radius_index] - arrays[f"n{n}_p16"][:, radius_index]
        g = arrays[f"n{n}_galaxy"]
        per_n.append({int(k): float(np.median(w[g == k])) for k in np.unique(g)})
    common = sorted(set(per_n[0]) & set(per_n[1]))
    if not common:
        raise ValueError(f"no galaxy is observed at both N★ = {lo} and {hi}")
    return float(np.median([per_n[1][k] / per_n[0][k] for k in common]))


def evaluate_sampler(sampler: Sampler, vset: ValidationSet, n_stars: Sequence[int] | None = None, *,
                     seed: int = 0, observer: dict[str, Any] | None = None) -> dict[str, Any]:
    """Grade any posterior sampler on the set (e.g. an sbi NPE), per N★ variant.

    Parameters
    ----------
    sampler : callable
        ``sampler(catalogues) -> samples [S, N, 10]``: log10 M(< f R_h) [Msun] for f = 0.6 … 2.4 with R_h the
        median projected radius of each catalogue as given (members, centred on their estimated centre).
    vset : ValidationSet
        The set (:func:`galmass.validation.get_set`).
    n_stars : sequence of int, optional
        Variants to grade (default: all of the set's).
    seed : int
        Seed of the TARP reference points.
    observer : dict, optional
        ``membership_clip`` and ``recentre`` of the observer's steps (default :data:`DEFAULT_GEOMETRY`).

    Returns
    -------
    dict
        ``{"set": {...}, "variants": {"100": metrics, "1000": metrics}}``; per variant: ``cnn`` (the sampler's
        posterior; lists over radii of bias, scatter, rms, coverage68, frac_within_0p1), ``estimators``
        ({name: {radius_factor, estimator: {bias, scatter, rms, ...}, cnn: {...}}}), ``best_estimator``,
        ``rms_ratio_vs_best_estimator``, ``coverage`` (all levels), ``tarp``, counts, and ``by_family``
        (:func:`by_family_at`: bias and RMS per halo / tracer / anisotropy family at the best estimator's radius).
    """
    obs_cfg = dict(DEFAULT_GEOMETRY, **(observer or {}))
    variants = {}
    for n in (n_stars or vset.spec.n_stars):
        obs = observe_set(vset, int(n), **obs_cfg)
        variants[str(int(n))] = score(sampler(obs.catalogues), obs, seed)
    return {"set": set_summary(vset), "variants": variants}


def set_summary(vset: ValidationSet) -> dict[str, Any]:
    """Identity and parameter ranges of a set, for metrics files."""
    g = vset.galaxy_table()

    def span(a: NDArray[Any]) -> list[float]:
        return [float(np.min(a)), float(np.max(a))]

    return {"name": vset.name, "path": str(vset.path) if vset.path else None, "spec": vset.spec.to_dict(),
            "n_galaxies": len(vset.galaxies), "n_catalogues": len(vset), "info": vset.info,
            "ranges": {"log_m200": span(g["log_m200"]), "log_mstar": span(g["log_mstar"]),
                       "rh_kpc": span(g["rh_kpc"]), "sigma_wolf_kms": span(g["sigma_wolf_kms"]),
                       "catalogue_rh_kpc": span(vset.arrays["cat_rh_kpc"])},
            "counts": {k: {v: int(np.sum(g[k] == v)) for v in sorted(set(g[k].tolist()))}
                       for k in FAMILIES}}


def _fmt(values: Sequence[float], digits: int = 3) -> str:
    return " | ".join(f"{v:.{digits}f}" for v in values)


def _set_lines(st: dict[str, Any]) -> list[str]:
    r, c = st["ranges"], st["counts"]
    return [f"Set **{st['name']}**: {st['n_galaxies']} galaxies, {st['n_catalogues']} catalogues (galpy equilibrium "
            f"DFs; haloes {c['halo']}, tracers {c['tracer']}, {c['anisotropy']}).",
            f"log10 M200 {r['log_m200'][0]:.2f}–{r['log_m200'][1]:.2f}, R_h {r['rh_kpc'][0]:.3f}–"
            f"{r['rh_kpc'][1]:.2f} kpc, σ_W {r['sigma_wolf_kms'][0]:.1f}–{r['sigma_wolf_kms'][1]:.1f} km/s.", ""]


def _variant_lines(key: str, m: dict[str, Any]) -> list[str]:
    f = m["radii_factors"]
    lines = [f"## N★ = {key} ({m['n_catalogues']} catalogues, median {m['n_members_median']:.0f} members, "
             f"{m['posterior_samples']} posterior draws)", "",
             "| r / R_h | " + _fmt(f, 1) + " |", "|---" * (len(f) + 1) + "|"]
    for stat, label in (("bias", "bias [dex]"), ("scatter", "scatter [dex]"), ("rms", "RMS [dex]"),
                        ("coverage68", "68 % coverage"), ("width68", "16–84 % width [dex]")):
        if stat in m["cnn"]:
            lines.append(f"| {label} | " + _fmt(m["cnn"][stat]) + " |")
    lines += ["", "| estimator | r / R_h | bias | scatter | RMS | posterior bias | scatter | RMS |",
              "|---|---|---|---|---|---|---|---|"]
    for name, e in m["estimators"].items():
        a, b = e["estimator"], e["cnn"]
        lines.append(f"| {name} | {e['radius_factor']:.2f} | {a['bias']:.3f} | {a['scatter']:.3f} | {a['rms']:.3f} | "
                     f"{b['bias']:.3f} | {b['scatter']:.3f} | {b['rms']:.3f} |")
    lines += ["", f"RMS ratio posterior / best estimator ({m['best_estimator']}): "
              f"**{m['rms_ratio_vs_best_estimator']:.2f}**; TARP max |ECP − α| = {m['tarp']['max_abs_error']:.3f}; "
              f"{m.get('n_outside_training_range', 'n/a')} catalogues outside the training range.", ""]
    return lines + _family_lines(m)


def _family_lines(m: dict[str, Any]) -> list[str]:
    if not m.get("by_family"):
        return []
    r = m["estimators"][m["best_estimator"]]["radius_factor"]
    lines = [f"By the galaxies' generating family, at {r:.2f} R_h ({m['best_estimator']}'s radius):", "",
             "| family | catalogues | posterior bias | RMS | estimator bias | RMS |", "|---|---|---|---|---|---|"]
    for key, values in m["by_family"].items():
        for v, st in values.items():
            lines.append(f"| {key} = {v} | {st['n']} | {st['bias']:+.3f} | {st['rms']:.3f} | "
                         f"{st['estimator_bias']:+.3f} | {st['estimator_rms']:.3f} |")
    return lines + [""]


def render_markdown(metrics: dict[str, Any], title: str = "Independent validation") -> str:
    """validation.md: the set, then per N★ variant the per-radius table and the estimator comparison."""
    lines = [f"# {title}", ""] + _set_lines(metrics["set"])
    if "observer_inputs" in metrics:
        lines += [f"Observer inputs (binary / foreground fractions): {metrics['observer_inputs']}.", ""]
    for key, m in metrics["variants"].items():
        lines += _variant_lines(key, m)
    if "width_ratio" in metrics:
        w = metrics["width_ratio"]
        lines += [f"Posterior 16–84 % width at {w['radius_factor']:.1f} R_h, N★ = {w['n_hi']} ÷ N★ = {w['n_lo']}, "
                  f"median over {w['n_galaxies']} galaxies: **{w['median_over_galaxies']:.2f}** "
                  "(1/√10 = 0.32 for a purely statistical error).", ""]
    return "\n".join(lines)
