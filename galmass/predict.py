"""Posterior mass profiles of observed galaxies (``galmass predict``).

Input: a star catalogue (CSV, one or many galaxies; columns in :mod:`galmass.catalogue`), optionally a gas
catalogue with the same galaxy names. The model is a trained run (``--run``) or a shipped one (default
:data:`galmass.pretrained.DEFAULT`). The maps are made by the same code and with the same observer steps as the
model's training data (``galmass.maps.observation_to_sample`` with its ``membership_clip`` and ``recentre``; for
many star catalogues ``galmass.maps_batch``, which gives the same numbers bit for bit, several catalogues at once).

Uncertainties the catalogue carries are propagated, not ignored: the posterior pools ``--realisations``
draws, each with its own distance (normal, ``distance_err_kpc``) and its own member list (each star kept with
probability ``p_member``); the flow is sampled equally in each. A model trained with observer inputs is told the
sample's binary and foreground fractions (``--binary-fraction``, ``--foreground-fraction``; 0 and 0 for a
multi-epoch, membership-cleaned sample); an unstated one is left out and the network gives its own marginal
(:mod:`galmass.observer`).

Every galaxy is checked before any posterior is computed: too few stars, scalars (R_h, σ★, N★) outside the
training range, a catalogue origin far from the stars' centre. Mild excursions are warnings recorded in
``posterior.json``; far ones are errors for all galaxies at once (``--force`` turns them into recorded warnings).
Outputs per galaxy ``OUT/<galaxy>/{posterior.json, samples.npz, profile.png}`` and ``OUT/summary.{csv,json}``;
with ``--single-file`` instead every galaxy's draws in ``OUT/samples.h5`` (:func:`read_samples`), their results only
in ``OUT/summary.json`` and any PNGs in ``OUT/profiles/``: three files, not three per galaxy.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from galmass import observer
from galmass.catalogue import Catalogue, CatalogueError, read_catalogues
from galmass.datasets.schema import SCALAR_NAMES
from galmass.maps import estimate_centre, observation_to_sample
from galmass.maps_batch import observations_to_samples
from galmass.metrics.estimators import ESTIMATORS, estimator_log_mass
from galmass.naming import slug
from hpc.atomic import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text, sync_all
from hpc.forkpool import shared_state, worker_pool

__all__ = ["CatalogueError", "Target", "assess", "assess_many", "check_range", "joint_distance", "load_model",
           "observe_catalogue", "observe_catalogues", "realisations", "predict", "read_samples", "add_arguments",
           "main", "MIN_STARS"]

MIN_STARS = 10
"""Fewer members than this give no meaningful dispersion: an error even with --force (models trained on fewer
stars than the catalogue's are refused by the trained N★ range, ``data.n_stars``)."""
ERROR_DEX = 0.5
"""A scalar outside the training range by more than this [dex] is an error (unless --force); any excursion warns."""
RANGE_SLACK_DEX = 0.005
"""Excursions below this [dex] are rounding (scalars are stored as float32), not extrapolation."""
JOINT_WARN_SIGMA, JOINT_ERROR_SIGMA = 3.7, 6.0
"""(log R_h, log σ★) this many Mahalanobis standard deviations from the training set: warning (99.9 % of a 2-D
Gaussian lies within 3.7) / error (unless --force)."""
CENTRE_WARN_RH, CENTRE_ERROR_RH = 0.25, 1.0
"""Catalogue origin this far [R_h] from the stars' own centre: warning / error (the latter unless --force); for
small catalogues the thresholds grow to 2 and 3 times the centroid's Poisson scatter, 1.5 R_h / sqrt(N★)."""
FOOTPRINT_WARN = 2.0
"""Members beyond this many times the widest training footprint (``data.selection_fov_rh``) [R_h] warn."""
SCALAR_LABELS = {"log10_rh_kpc": "log10 R_h [kpc]", "log10_sigma_stars_kms": "log10 σ★ [km/s]",
                 "log10_vrms_gas_kms": "log10 v_rms,gas [km/s]", "log10_n_stars": "log10 N★"}


@dataclass
class Target:
    """One galaxy to predict: its catalogues, the nominal inputs and what the checks found."""

    cat: Catalogue
    gas: Catalogue | None
    nominal: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def load_model(run: str | None, name: str | None) -> tuple[Any, Any, dict[str, Any], str]:
    """(model, config, model-file metadata, description) of a trained run or a shipped model."""
    if run is not None:
        from galmass.models.io import load_trained

        model, cfg, blob = load_trained(run)
        return model, cfg, blob, f"run {run}"
    from galmass.pretrained import DEFAULT, load_pretrained

    model, cfg, blob = load_pretrained(name or DEFAULT)
    return model, cfg, blob, f"shipped model '{name or DEFAULT}'"


def _calibration(blob: dict[str, Any]) -> dict[str, Any] | None:
    """The model's N★ tempering (``galmass calibrate``) as the posterior files record it; None if as trained."""
    cal = blob.get("calibration")
    return None if not cal else {"log10_scale_coefficients": cal["temperature"], "min_scale": cal["min_scale"]}


def _population(blob: dict[str, Any]) -> dict[str, Any] | None:
    """The model's population prior tilt (``galmass population``) as the posterior files record it; None if none."""
    pop = blob.get("population")
    return None if not pop else {"target": pop["target"], "n_catalogues": pop["n_catalogues"],
                                 "beta": pop["tilt"]["beta"], "prior_shift_dex": pop["prior_shift_dex"]}


def observe_catalogue(cat: Catalogue, gas: Catalogue | None, dc: dict[str, Any], keep: np.ndarray, scale: float
                      ) -> dict[str, Any]:
    """Model inputs of one realisation: the kept stars, positions scaled by ``scale`` (distance draw / nominal)."""
    gas_tuple = None
    if gas is not None:
        gm = gas.mass if gas.mass is not None else np.ones_like(gas.v_kms)
        gas_tuple = (gas.x_kpc * scale, gas.y_kpc * scale, gas.v_kms, gm)
    return observation_to_sample(cat.x_kpc[keep] * scale, cat.y_kpc[keep] * scale, cat.v_kms[keep],
                                 cat.v_err_kms[keep], gas_tuple, npix=int(dc["npix"]),
                                 extent_rh=float(dc["extent_rh"]), vmax_sigma=float(dc["vmax_sigma"]),
                                 gas_beam_fwhm_rh=float(dc.get("gas_beam_fwhm_rh", 0.0)),
                                 membership_clip=float(dc.get("membership_clip", 0.0)),
                                 recentre=bool(dc.get("recentre", False)))


def observe_catalogues(items: list[tuple[Catalogue, Catalogue | None, np.ndarray, float]], dc: dict[str, Any]
                       ) -> list[dict[str, Any] | ValueError]:
    """:func:`observe_catalogue` of each (stars, gas, kept stars [N★] bool, distance scale), or the ValueError it
    raises, in order. Star-only catalogues are observed together (``galmass.maps_batch``, bit-identical and ~4x
    faster per catalogue for many); those with gas one at a time."""
    out: list[dict[str, Any] | ValueError | None] = [None] * len(items)
    alone = [i for i, it in enumerate(items) if it[1] is not None]
    together = [i for i, it in enumerate(items) if it[1] is None]
    # the same star arrays observe_catalogue hands to observation_to_sample (× scale: a distance draw / nominal)
    stars = [(c.x_kpc[keep] * scale, c.y_kpc[keep] * scale, c.v_kms[keep], c.v_err_kms[keep])
             for c, _, keep, scale in (items[i] for i in together)]
    batch = observations_to_samples(stars, npix=int(dc["npix"]), extent_rh=float(dc["extent_rh"]),
                                    vmax_sigma=float(dc["vmax_sigma"]),
                                    membership_clip=float(dc.get("membership_clip", 0.0)),
                                    recentre=bool(dc.get("recentre", False)))
    for i, res in zip(together, batch):
        out[i] = res
    for i in alone:
        try:
            out[i] = observe_catalogue(*items[i][:2], dc, *items[i][2:])
        except ValueError as err:
            out[i] = err
    return out  # type: ignore[return-value]


def check_range(scalars: np.ndarray, normalisation: dict[str, Any], need_gas: bool) -> tuple[list[str], list[str]]:
    """(warnings, errors) for scalars outside the training range (min/max of the training set's scalars)."""
    lo, hi = np.array(normalisation["scalars"]["min"]), np.array(normalisation["scalars"]["max"])
    warn, err = [], []
    for c, name in enumerate(SCALAR_NAMES):
        if name == "log10_vrms_gas_kms" and not need_gas:
            continue
        out = max(lo[c] - scalars[c], scalars[c] - hi[c])
        if out > RANGE_SLACK_DEX:  # float32 scalars at the training edge are inside
            msg = (f"{SCALAR_LABELS[name]} = {scalars[c]:.2f} lies {out:.2f} dex outside the training range "
                   f"[{lo[c]:.2f}, {hi[c]:.2f}]")
            (err if out > ERROR_DEX else warn).append(msg)
    return warn, err


def joint_distance(scalars: np.ndarray, normalisation: dict[str, Any]) -> float | None:
    """Mahalanobis distance of (log10 R_h, log10 σ★) from the training set (None if the model lacks the stats).

    R_h and σ★ are correlated in any galaxy population (mass-size relation), so a catalogue can sit inside both
    marginal ranges and still be unlike every training galaxy, e.g. positions in degrees labelled kpc.
    """
    st = normalisation["scalars"]
    if "corr" not in st:
        return None
    idx = [SCALAR_NAMES.index("log10_rh_kpc"), SCALAR_NAMES.index("log10_sigma_stars_kms")]
    std = np.array(st["std"])[idx]
    cov = np.array(st["corr"])[np.ix_(idx, idx)] * np.outer(std, std)
    d = np.asarray(scalars, np.float64)[idx] - np.array(st["mean"])[idx]
    return float(np.sqrt(d @ np.linalg.solve(cov, d)))


def _check(t: Target, blob: dict[str, Any], need_gas: bool) -> None:
    """Fill the target's warnings and errors (every check, so that one message lists all problems)."""
    dc, s = blob["data_config"], t.nominal
    n = int(s["n_members"])
    if n < MIN_STARS:
        t.errors.append(f"only {n} member stars: at least {MIN_STARS} are needed for a dispersion")
        return
    warn, err = check_range(np.asarray(s["scalars"], np.float64), blob["normalisation"], need_gas)
    t.warnings += warn
    t.errors += [e + " (the posterior would be an extrapolation)" for e in err]
    dist = joint_distance(np.asarray(s["scalars"]), blob["normalisation"])
    if dist is not None and dist > JOINT_WARN_SIGMA:
        msg = (f"R_h = {s['rh_kpc']:.3g} kpc and σ★ = {s['sigma_kms']:.3g} km/s together lie {dist:.1f} standard "
               "deviations from the training galaxies (Mahalanobis); check the position and velocity units")
        (t.errors if dist > JOINT_ERROR_SIGMA else t.warnings).append(msg)
    lo_n, hi_n = dc.get("n_stars", [MIN_STARS, np.inf])
    if not lo_n <= n <= hi_n:
        t.errors.append(f"{n} member stars: the model was trained on catalogues of {lo_n}–{hi_n} stars. HINT: "
                        + ("a catalogue this small constrains little" if n < lo_n else
                           "subsample the catalogue to the trained maximum (keep the best-measured stars)"))
    recentred = bool(dc.get("recentre", False))
    # "members" indexes the stars the nominal inputs were made from: the likely members (p_member >= 0.5)
    likely = t.cat.p_member >= 0.5
    xm, ym = t.cat.x_kpc[likely][s["members"]], t.cat.y_kpc[likely][s["members"]]
    # A recentring observer step has already estimated the members' centre; otherwise estimate it here.
    cx, cy = (s["centre_x_kpc"], s["centre_y_kpc"]) if recentred else estimate_centre(xm, ym)
    _check_footprint(t, np.hypot(xm - cx, ym - cy) / float(s["rh_kpc"]), dc)
    off = float(np.hypot(cx, cy)) / float(s["rh_kpc"])
    msg = (f"the catalogue origin (the given centre) is {off:.2f} R_h from the stars' own centre"
           + (" (the model recentres on the stars, as in training)" if recentred else ""))
    # Far off, the given centre (or the catalogue) is wrong even if the model recentres: the user should know.
    # The stars' own centre scatters by ~1.5 R_h / sqrt(N) (Poisson): a small catalogue's offset is mostly noise.
    noise = 1.5 / np.sqrt(n)
    if off > max(CENTRE_ERROR_RH, 3 * noise):
        t.errors.append(msg + ". HINT: check --centre-ra-deg/--centre-dec-deg or that positions are relative to "
                        "the galaxy centre")
    elif off > max(CENTRE_WARN_RH, 2 * noise):
        t.warnings.append(msg)
    if need_gas and t.gas is None:
        t.errors.append("the model uses gas: give a gas catalogue (--gas) with this galaxy")


def _check_footprint(t: Target, radius_rh: np.ndarray, dc: dict[str, Any]) -> None:
    """Warn about members beyond twice the widest footprint of the training catalogues (data.selection_fov_rh, in
    units of the population's R_h): no training catalogue had such stars, and their low dispersion lowers σ★, the
    model's unit of mass (a 100 R_h footprint reads lower at 1.8 R_h than a 10 R_h one; README, "The pretrained
    model")."""
    widest = float(dc.get("selection_fov_rh", [0.0, np.inf])[1])
    far = int(np.sum(radius_rh > FOOTPRINT_WARN * widest))
    if far:
        t.warnings.append(f"{far} member star{'s' if far > 1 else ''} lie beyond {FOOTPRINT_WARN * widest:g} R_h "
                          f"(the outermost at {radius_rh.max():.0f} R_h), {FOOTPRINT_WARN:g}× the widest footprint of "
                          f"the training catalogues ({widest:g} R_h). HINT: keep the stars within {widest:g} R_h of "
                          "the centre")


def _uncertain(cat: Catalogue) -> bool:
    """Whether the catalogue carries a distance error or membership probabilities (then K realisations)."""
    return bool(cat.distance_err_kpc > 0 or np.any((cat.p_member > 0) & (cat.p_member < 1)))


def realisations(t: Target, dc: dict[str, Any], k: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """K inputs, each with a distance draw and a membership draw (the nominal one when neither is uncertain)."""
    draws = _draws(t, k, rng)
    return [t.nominal] if draws is None else _observed(observe_catalogues(draws, dc))


def _draws(t: Target, k: int, rng: np.random.Generator
           ) -> list[tuple[Catalogue, Catalogue | None, np.ndarray, float]] | None:
    """The K (stars, gas, kept stars, distance scale) of :func:`realisations`, drawn in its order; None when
    neither the distance nor the membership is uncertain."""
    cat = t.cat
    if not _uncertain(cat):
        return None
    out = []
    for _ in range(k):
        scale = 1.0
        if cat.distance_kpc and cat.distance_err_kpc > 0:
            scale = max(rng.normal(cat.distance_kpc, cat.distance_err_kpc), 0.5 * cat.distance_kpc) / cat.distance_kpc
        keep = rng.random(cat.v_kms.size) < cat.p_member
        if np.count_nonzero(keep) < MIN_STARS:  # a draw too poor to observe: keep the likely members instead
            keep = cat.p_member >= 0.5
        out.append((cat, t.gas, keep, scale))
    return out


def _observed(results: list[dict[str, Any] | ValueError]) -> list[dict[str, Any]]:
    """The inputs, raising the first error (where observing one draw after the other would have stopped)."""
    for res in results:
        if isinstance(res, ValueError):
            raise res
    return results  # type: ignore[return-value]


BATCH = 128
"""Catalogue realisations per network call: the model is loaded once and catalogues go through it in batches (the
flow sampler bounds its own working set, ``galmass.models.sampling.CHUNK_ROWS``)."""


def _posteriors(model: Any, inputs: list[list[dict[str, Any]]], n_samples: int) -> list[np.ndarray]:
    """Pooled flow samples [n_samples, 10] per galaxy over its realisations (equal share each), batched; float32,
    the flow's own precision."""
    import torch  # here, not at module level: `galmass --help` should not pay for importing torch

    out: list[np.ndarray | None] = [None] * len(inputs)
    for k in sorted({len(r) for r in inputs}):  # galaxies with the same number of realisations share batches
        members = [i for i, r in enumerate(inputs) if len(r) == k]
        per = -(-n_samples // k)
        step = max(1, BATCH // k)
        for j in range(0, len(members), step):
            chunk = members[j:j + step]
            flat = [s for i in chunk for s in inputs[i]]
            batch = {key: torch.as_tensor(np.stack([np.asarray(s[key]) for s in flat])) for key in model.input_keys}
            with torch.no_grad():
                draws = model.sample(batch, per).numpy()  # [per, len(chunk) * k, 10]
            for c, i in enumerate(chunk):
                mine = draws[:, c * k:(c + 1) * k]  # [per, k, 10]
                out[i] = mine.transpose(1, 0, 2).reshape(-1, mine.shape[-1])[:n_samples]
    return out  # type: ignore[return-value]


def _quantiles(samples: list[np.ndarray]) -> np.ndarray:
    """16/50/84 % points [3, galaxies, 10] of equally many draws per galaxy, in float64: numpy's default (linear)
    percentiles, from one sort of the batch (``np.percentile`` partitions once per quantile pair: ~3× slower)."""
    s = np.sort(np.stack(samples), axis=1).astype(np.float64)  # [galaxies, n, 10]
    n, out = s.shape[1], []
    for q in (0.16, 0.5, 0.84):  # fixed: posterior.json's p16 / median / p84
        lo = int(np.floor(q * (n - 1)))
        t, a, b = q * (n - 1) - lo, s[:, lo], s[:, min(lo + 1, n - 1)]
        out.append(a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t))  # numpy's _lerp, for the same values
    return np.stack(out)


def _result(t: Target, quantiles: np.ndarray, factors: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
    """What posterior.json holds for one galaxy; ``quantiles`` [3, 10] its 16/50/84 % points."""
    s, cat = t.nominal, t.cat
    rh, sigma = float(s["rh_kpc"]), float(s["sigma_kms"])
    q16, q50, q84 = quantiles
    return {
        **meta, "galaxy": cat.name, "n_stars_catalogue": int(cat.v_kms.size), "n_members": int(s["n_members"]),
        "rh_kpc": rh, "sigma_los_kms": sigma, "v_sys_kms": float(s["v_sys_kms"]),
        "centre_offset_kpc": [float(s["centre_x_kpc"]), float(s["centre_y_kpc"])],
        "distance_kpc": cat.distance_kpc, "distance_err_kpc": cat.distance_err_kpc,
        "catalogue_notes": cat.notes, "warnings": t.warnings, "forced_errors": t.errors,
        "radii_factors": factors.tolist(), "radii_kpc": (factors * rh).tolist(),
        "log10_mass_median": q50.tolist(), "log10_mass_p16": q16.tolist(), "log10_mass_p84": q84.tolist(),
        "estimators": {e.name: {"radius_kpc": e.radius_factor * rh,
                                "log10_mass": float(estimator_log_mass(e, sigma, rh)), "note": e.note}
                       for e in ESTIMATORS},
    }


def _plot(path: Path, res: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = np.array(res["radii_kpc"])
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.fill_between(r, res["log10_mass_p16"], res["log10_mass_p84"], alpha=0.3, label="galmass 68 %")
    ax.plot(r, res["log10_mass_median"], lw=2, label="galmass median")
    for name, e in res["estimators"].items():
        ax.plot(e["radius_kpc"], e["log10_mass"], "o", ms=4, label=name)
    ax.set(xlabel="r [kpc]", ylabel="log10 M(<r) [Msun]", title=f"{res['galaxy']}  (N★ = {res['n_members']})")
    ax.legend(fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue(), durable=False)


def _read(args: argparse.Namespace) -> list[tuple[Catalogue, Catalogue | None]]:
    """(stars, gas or None) per galaxy, in catalogue order; refuses a non-empty --out before any work."""
    centre = (args.centre_ra_deg, args.centre_dec_deg) if args.centre_ra_deg is not None else None
    rng = np.random.default_rng(args.seed)
    stars = read_catalogues(args.stars, "stars", args.distance_kpc, args.distance_err_kpc, centre, rng)
    gas = read_catalogues(args.gas, "gas", args.distance_kpc, args.distance_err_kpc, centre) if args.gas else {}
    extra = sorted(set(gas) - set(stars))
    if extra:
        raise CatalogueError(f"{args.gas}: galaxies {extra} have gas but no stars in {args.stars}")
    out = _out_dir(args)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise CatalogueError(f"{out} exists and is not empty (earlier results are never overwritten silently). "
                             "HINT: choose a new --out, or --overwrite")
    return [(cat, gas.get(name)) for name, cat in stars.items()]


def assess(cat: Catalogue, gas: Catalogue | None, blob: dict[str, Any], need_gas: bool) -> Target:
    """One galaxy's nominal model inputs (likely members, nominal distance) and every check's verdict."""
    try:
        observed: dict[str, Any] | ValueError = observe_catalogue(cat, gas, blob["data_config"],
                                                                  cat.p_member >= 0.5, 1.0)
    except ValueError as err:
        observed = err
    return _assessed(cat, gas, observed, blob, need_gas)


def assess_many(galaxies: list[tuple[Catalogue, Catalogue | None]], blob: dict[str, Any], need_gas: bool
                ) -> list[Target]:
    """:func:`assess` of each (stars, gas) galaxy, the nominal inputs observed together (the same numbers)."""
    observed = observe_catalogues([(cat, gas, cat.p_member >= 0.5, 1.0) for cat, gas in galaxies],
                                  blob["data_config"])
    return [_assessed(cat, gas, res, blob, need_gas) for (cat, gas), res in zip(galaxies, observed)]


def _assessed(cat: Catalogue, gas: Catalogue | None, observed: dict[str, Any] | ValueError, blob: dict[str, Any],
              need_gas: bool) -> Target:
    """The target of one galaxy from its nominal inputs (or the error observing it raised), checked."""
    t = Target(cat, gas, {})
    if isinstance(observed, ValueError):
        t.errors.append(str(observed))
        return t
    t.nominal = observed
    if not need_gas:  # empty gas maps: half of what a target would carry
        del t.nominal["maps_gas"], t.nominal["phase_gas"]
    _check(t, blob, need_gas)
    return t


@dataclass
class _Job:
    """What every predict worker shares, inherited by fork (never pickled): the model, this call's settings and
    the checked galaxies (their nominal inputs: the maps never cross processes)."""

    model: Any
    blob: dict[str, Any]
    args: argparse.Namespace
    need_gas: bool
    stated: tuple[float | None, float | None]
    meta: dict[str, Any]
    targets: list[Target]


ASSESS_CHUNK = 512
"""Galaxies observed together while checking (the more per batch, the fewer numpy calls per galaxy; 512 bounds a
batch's working arrays to ~30 MB)."""


def _assess_all(galaxies: list[tuple[Catalogue, Catalogue | None]], blob: dict[str, Any], need_gas: bool
                ) -> list[Target]:
    """:func:`assess_many` of every galaxy, ASSESS_CHUNK at a time, in this process: ~0.15 ms per catalogue of 100
    stars, less than sending its maps (~20 kB) to a worker and back; forked workers then inherit the targets."""
    return [t for a in range(0, len(galaxies), ASSESS_CHUNK)
            for t in assess_many(galaxies[a:a + ASSESS_CHUNK], blob, need_gas)]


def _units(targets: list[Target], k: int) -> list[list[int]]:
    """Galaxy indices per network call: galaxies with the same number of realisations share calls (BATCH inputs).

    Fixed by the catalogues alone, so the draws do not depend on how many workers share the units.
    """
    ks = [k if _uncertain(t.cat) else 1 for t in targets]
    units = []
    for kk in sorted(set(ks)):
        members = [i for i, x in enumerate(ks) if x == kk]
        step = max(1, BATCH // kk)
        units += [members[j:j + step] for j in range(0, len(members), step)]
    return units


def _predict_unit(task: tuple[int, list[int]]) -> tuple[list[dict[str, Any]], np.ndarray | None]:
    """Realisations, posterior draws and files of one unit of galaxies (catalogue indices): their results
    (posterior.json) and, with ``--single-file``, their draws [galaxies, samples, 10] for the caller to write."""
    import torch

    job: _Job = shared_state()
    unit, items = task[0], [(i, job.targets[i]) for i in task[1]]
    args, dc = job.args, job.blob["data_config"]
    uses_observer = "observer" in job.model.input_keys
    inputs = []
    for draws in _unit_realisations(items, dc, args):
        inputs.append(observer.with_observer(draws, job.stated) if uses_observer else draws)
    # One seed per unit (not one stream over all units): the same draws in one process or in several workers.
    torch.manual_seed(int(np.random.SeedSequence([args.seed, unit]).generate_state(1)[0]))
    factors = np.asarray(job.blob["radii_factors"], dtype=np.float64)
    posteriors = _posteriors(job.model, inputs, args.samples)
    quantiles = _quantiles(posteriors)
    rows = []
    for j, ((_, t), samples) in enumerate(zip(items, posteriors)):
        res = _result(t, quantiles[:, j], factors, job.meta)
        if not args.single_file:
            _write_galaxy(_out_dir(args) / slug(t.cat.name), res, samples, factors, plot=not args.no_plot)
        elif not args.no_plot:
            _plot(_out_dir(args) / PROFILES / f"{slug(t.cat.name)}.png", res)
        rows.append(res)
    return rows, (np.stack(posteriors) if args.single_file else None)


def _unit_realisations(items: list[tuple[int, Target]], dc: dict[str, Any], args: argparse.Namespace
                       ) -> list[list[dict[str, Any]]]:
    """:func:`realisations` of each galaxy of a unit (seeded by its catalogue index), the draws of all its galaxies
    observed together (more catalogues per batch than one galaxy's K)."""
    draws = [_draws(t, args.realisations, np.random.default_rng([args.seed, i])) for i, t in items]
    observed = iter(_observed(observe_catalogues([d for ds in draws if ds for d in ds], dc)))
    return [[t.nominal] if ds is None else [next(observed) for _ in ds] for (_, t), ds in zip(items, draws)]


def _write_galaxy(gdir: Path, res: dict[str, Any], samples: np.ndarray, factors: np.ndarray, plot: bool) -> None:
    gdir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    # Uncompressed: random float draws shrink only ~15 % and zlib took ~15 % of a batch predict's time.
    np.savez(buf, log10_mass_samples=samples, radii_kpc=factors * res["rh_kpc"], radii_factors=factors)
    # Atomic renames without a per-file fsync (~8 ms each, more than the posterior itself); one sync by the
    # caller, then the summary: a summary.json on disk means every galaxy's files are complete and durable.
    atomic_write_bytes(gdir / "samples.npz", buf.getvalue(), durable=False)
    atomic_write_json(gdir / "posterior.json", res, durable=False)
    if plot:
        _plot(gdir / "profile.png", res)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # a worker per core: torch threads on top would oversubscribe the cores


def predict(args: argparse.Namespace) -> tuple[Path, list[dict[str, Any]]]:
    """Check every galaxy, then write one posterior per galaxy and the summary; returns the output directory and
    the galaxies' results (what each ``posterior.json`` holds, in catalogue order).

    The checks run here (all galaxies' maps batched, ``galmass.maps_batch``); with ``args.workers`` > 1 the
    posteriors run in that many forked processes (one torch thread each) sharing the loaded model and the checked
    galaxies; the draws are the same as in one process.
    """
    model, cfg, blob, described = load_model(args.run, args.model)
    dc, need_gas = blob["data_config"], "gas" in cfg.model.tracer
    stated = (args.binary_fraction, args.foreground_fraction)
    wrong = observer.check_stated(stated, dc, "observer" in model.input_keys, described)
    if wrong:
        raise CatalogueError("cannot predict (nothing written): " + "; ".join(wrong))
    galaxies = _read(args)
    meta = {"model": described, "stars": str(args.stars), "gas": args.gas, "tracer": cfg.model.tracer,
            "seed": args.seed, "samples": args.samples, "realisations": args.realisations,
            "observer": observer.describe(stated, dc), "calibration": _calibration(blob),
            "population": _population(blob)}
    targets = _assess_all(galaxies, blob, need_gas)
    if any(t.errors for t in targets) and (not args.force or any(not t.nominal for t in targets)):
        raise CatalogueError(_refusal(targets))
    units = _units(targets, args.realisations)
    out = _out_dir(args)
    if args.single_file:
        (out / PROFILES if not args.no_plot else out).mkdir(parents=True, exist_ok=True)
    job = _Job(model, blob, args, need_gas, stated, meta, targets)
    with worker_pool(min(args.workers, len(galaxies)), job, init=_one_thread) as pmap:
        done = pmap(_predict_unit, list(enumerate(units)))
    order = np.argsort(np.concatenate(units), kind="stable")  # unit order → catalogue order
    flat = [r for unit_rows, _ in done for r in unit_rows]
    rows = [flat[i] for i in order]
    if args.single_file:
        _write_samples(out / SAMPLES_FILE, rows, np.concatenate([d for _, d in done])[order],
                       np.asarray(blob["radii_factors"], dtype=np.float64), meta)
    if not (args.single_file and args.no_plot):  # per-galaxy files were renamed into place without fsync
        sync_all()
    _write_summary(out, rows)
    return out, rows


REFUSED_LISTED, REFUSED_NAMED = 20, 200
"""A refusal shows every problem of the first REFUSED_LISTED failing galaxies; beyond, how many galaxies have each
kind of problem and the names of up to REFUSED_NAMED more (a table of thousands must not flood the terminal)."""


def _refusal(targets: list[Target]) -> str:
    """The "cannot predict" message: each failing galaxy with its problems, or for many the first REFUSED_LISTED,
    a count per kind of problem (its message with the numbers replaced by #) and the other galaxies' names."""
    bad = [t for t in targets if t.errors]
    lines = ["cannot predict (nothing written):"] + [f"  {t.cat.name}: " + "; ".join(t.errors)
                                                     for t in bad[:REFUSED_LISTED]]
    if len(bad) > REFUSED_LISTED:
        kinds = Counter(_problem_kind(e) for t in bad for e in t.errors)
        lines.append(f"  ... {len(bad)} of {len(targets)} galaxies cannot be predicted; galaxies with each problem:")
        lines += [f"    {n} × {kind}" for kind, n in kinds.most_common()]
        rest = [t.cat.name for t in bad[REFUSED_LISTED:]]
        lines.append(f"  the other {len(rest)}: " + ", ".join(rest[:REFUSED_NAMED])
                     + (f" and {len(rest) - REFUSED_NAMED} more" if len(rest) > REFUSED_NAMED else ""))
    return "\n".join(lines) + "\nHINT: fix the catalogue, or --force to predict anyway (recorded in posterior.json)"


def _problem_kind(error: str) -> str:
    """An error message without its numbers and hint, so that galaxies with the same problem count together."""
    return re.sub(r"(?<![\w.])[-+]?\d+(?:[.,]\d+)*(?:e[-+]?\d+)?", "#", error.split(". HINT")[0])


SAMPLES_FILE, PROFILES = "samples.h5", "profiles"
"""``--single-file`` outputs: every galaxy's draws in one HDF5 file; PNGs in a folder."""


def _write_samples(path: Path, rows: list[dict[str, Any]], draws: np.ndarray, factors: np.ndarray,
                   meta: dict[str, Any]) -> None:
    """OUT/samples.h5 (durable): galaxy names, log10 M draws [galaxies, samples, 10] (float32, one chunk per
    galaxy, so reading one galaxy reads one chunk), radii in R_h and kpc, and this call's settings."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("galaxy", data=[r["galaxy"] for r in rows], dtype=h5py.string_dtype())
        f.create_dataset("log10_mass_samples", data=draws, chunks=(1, *draws.shape[1:]))
        f.create_dataset("radii_factors", data=factors)
        f.create_dataset("radii_kpc", data=np.array([r["radii_kpc"] for r in rows]))
        f.attrs["units"] = "log10_mass_samples: log10 M(<r) [Msun]; radii_kpc [kpc]; radii_factors [R_h]"
        f.attrs["settings"] = json.dumps(meta, sort_keys=True)


def read_samples(out: str | Path) -> dict[str, np.ndarray]:
    """Posterior draws [samples, 10] of log10 M(<f R_h) [Msun] per galaxy of a predict output directory, in
    catalogue order, from either layout (``OUT/samples.h5`` or ``OUT/<galaxy>/samples.npz``)."""
    out = Path(out)
    if (out / SAMPLES_FILE).exists():
        import h5py

        with h5py.File(out / SAMPLES_FILE, "r") as f:
            return dict(zip(f["galaxy"].asstr()[:], f["log10_mass_samples"][:]))
    names = json.loads((out / "summary.json").read_text())["galaxies"]
    return {n: np.load(out / slug(n) / "samples.npz")["log10_mass_samples"] for n in names}


def _out_dir(args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out else Path(f"predict-{Path(args.stars).stem}")


def _write_summary(out: Path, rows: list[dict[str, Any]]) -> None:
    keys = ("galaxy", "n_members", "rh_kpc", "sigma_los_kms")
    factors = rows[0]["radii_factors"]
    head = list(keys) + [f"log10M_{q}_{f:g}Rh" for f in factors for q in ("p16", "p50", "p84")] + ["n_warnings"]
    lines = [",".join(head)]
    for r in rows:
        vals = [str(r[k]) if k == "galaxy" else f"{r[k]:.6g}" for k in keys]
        for i in range(len(factors)):
            vals += [f"{r[q][i]:.4f}" for q in ("log10_mass_p16", "log10_mass_median", "log10_mass_p84")]
        lines.append(",".join(vals + [str(len(r["warnings"]) + len(r["forced_errors"]))]))
    atomic_write_text(out / "summary.csv", "\n".join(lines) + "\n")
    # One line: this file holds every galaxy's result (indented, json's pure-Python encoder took ~0.2 s per 1000).
    atomic_write_json(out / "summary.json", {"galaxies": [r["galaxy"] for r in rows], "results": rows}, indent=None)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The predict options (one home for ``galmass predict`` and ``python -m galmass.predict``)."""
    p.add_argument("--stars", required=True, help="star catalogue CSV (columns: see galmass.catalogue)")
    p.add_argument("--run", default=None, help="trained run directory (default: a shipped model)")
    p.add_argument("--model", default=None, help="name of a shipped model (default: stars)")
    p.add_argument("--gas", default=None, help="gas catalogue CSV (x_kpc,y_kpc,v_los_kms[,mass_msun][,galaxy])")
    p.add_argument("--distance-kpc", type=float, default=None, help="distance for ra_deg/dec_deg catalogues [kpc]")
    p.add_argument("--distance-err-kpc", type=float, default=0.0, help="its 1-sigma error [kpc]")
    p.add_argument("--centre-ra-deg", type=float, default=None, help="projection centre (default: stars' median)")
    p.add_argument("--centre-dec-deg", type=float, default=None)
    p.add_argument("--out", default=None, help="output directory (default ./predict-STEM)")
    p.add_argument("--samples", type=int, default=2000, help="posterior samples per galaxy")
    p.add_argument("--realisations", type=int, default=16, help="distance/membership draws pooled per galaxy")
    p.add_argument("--binary-fraction", type=float, default=None,
                   help="fraction of unresolved binaries in the sample (0 = multi-epoch cleaned; default: not "
                        "stated; models with observer inputs)")
    p.add_argument("--foreground-fraction", type=float, default=None,
                   help="fraction of foreground stars in the sample (0 = membership cleaned; default: not stated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1,
                   help="processes sharing the loaded model, one torch thread each (for many galaxies: one per "
                        "core; the same draws as one process)")
    p.add_argument("--single-file", action="store_true",
                   help="every galaxy's draws in OUT/samples.h5 and results in OUT/summary.json (3 files, not 3 "
                        "per galaxy: for many galaxies, and kind to parallel file systems); PNGs in OUT/profiles/")
    p.add_argument("--no-plot", action="store_true", help="skip profile.png")
    p.add_argument("--force", action="store_true", help="predict outside the training range (recorded)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out directory")


def _validate_args(args: argparse.Namespace) -> None:
    if args.run and args.model:
        raise CatalogueError("give --run (a trained run) or --model (a shipped model), not both")
    if args.samples < 1 or args.realisations < 1 or args.workers < 1:
        raise CatalogueError(f"--samples, --realisations and --workers must be >= 1, got {args.samples}, "
                             f"{args.realisations}, {args.workers}")
    if (args.centre_ra_deg is None) != (args.centre_dec_deg is None):
        raise CatalogueError("give both --centre-ra-deg and --centre-dec-deg, or neither")


PRINT_GALAXIES, EXAMPLES, LISTED = 10, 5, 10
"""Up to PRINT_GALAXIES galaxies, predict prints each one's profile; beyond, a summary: EXAMPLES galaxies' mass
within R_h and the first LISTED galaxies with warnings or notes (every number is in the files)."""


def run(args: argparse.Namespace) -> int:
    """Predict and print a short table per galaxy (a summary for many); user errors are raised for the CLI to
    report."""
    _validate_args(args)
    out, rows = predict(args)
    if len(rows) <= PRINT_GALAXIES:
        for res in rows:
            _print_galaxy(res)
    else:
        _print_summary(out, rows)
    print(f"[galmass] wrote {out}/summary.csv, summary.json and "
          + (f"{SAMPLES_FILE}" if args.single_file else "one directory per galaxy"))
    return 0


def _print_galaxy(res: dict[str, Any]) -> None:
    """One galaxy's profile, M(<r) at every radius [Msun, kpc]; its notes and warnings on stderr."""
    print(f"[galmass] {res['galaxy']}: N★={res['n_members']}  R_h={res['rh_kpc']:.3f} kpc  "
          f"σ_los={res['sigma_los_kms']:.2f} km/s")
    for r, f, a, b, c in zip(res["radii_kpc"], res["radii_factors"], res["log10_mass_p16"],
                             res["log10_mass_median"], res["log10_mass_p84"]):
        print(f"   M(<{r:.3f} kpc = {f:.1f} R_h): log10 M = {b:.2f} (+{c - b:.2f} / -{b - a:.2f})")
    for note in res["catalogue_notes"]:
        print(f"   note: {note}", file=sys.stderr)
    for w in res["warnings"] + res["forced_errors"]:
        print(f"   warning: {w}", file=sys.stderr)


def _print_summary(out: Path, rows: list[dict[str, Any]]) -> None:
    """Many galaxies: how many, EXAMPLES of them at the radius nearest R_h, and (stderr) how many have warnings or
    notes, the first LISTED of those; every galaxy's numbers are in OUT/summary.csv and summary.json."""
    j = int(np.argmin(np.abs(np.asarray(rows[0]["radii_factors"]) - 1.0)))
    print(f"[galmass] {len(rows)} galaxies; the first {EXAMPLES} (every galaxy at every radius: {out}/summary.csv):")
    for res in rows[:EXAMPLES]:
        a, b, c = (res[q][j] for q in ("log10_mass_p16", "log10_mass_median", "log10_mass_p84"))
        print(f"   {res['galaxy']}: N★={res['n_members']}  R_h={res['rh_kpc']:.3f} kpc  σ_los="
              f"{res['sigma_los_kms']:.2f} km/s  M(<{res['radii_factors'][j]:.1f} R_h): log10 M = {b:.2f} "
              f"(+{c - b:.2f} / -{b - a:.2f})")
    flagged = [r for r in rows if r["warnings"] or r["forced_errors"] or r["catalogue_notes"]]
    if flagged:
        print(f"[galmass] {len(flagged)} of {len(rows)} galaxies have warnings or notes (all in summary.json; "
              f"n_warnings in summary.csv)" + (f", the first {LISTED}:" if len(flagged) > LISTED else ":"),
              file=sys.stderr)
    for res in flagged[:LISTED]:
        said = [f"note: {n}" for n in res["catalogue_notes"]]
        said += [f"warning: {w}" for w in res["warnings"] + res["forced_errors"]]
        print(f"   {res['galaxy']}: " + "; ".join(said), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="galmass predict", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (CatalogueError, FileNotFoundError) as err:
        print(f"galmass predict: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
