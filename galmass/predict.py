"""Posterior of the enclosed-mass profile of an observed galaxy (``galmass predict``).

Input: a star catalogue (CSV with a header) with columns ``x_kpc, y_kpc, v_los_kms`` and optionally
``v_err_kms`` — or ``R_kpc, v_los_kms`` for catalogues without position angles — relative to the galaxy centre;
optionally a gas catalogue ``x_kpc, y_kpc, v_los_kms[, mass_msun]`` (e.g. pixels of an HI/Hα velocity map).
The maps are made by the same code as the training mocks (``galmass.maps.observation_to_sample``).

A catalogue outside the training range gets a warning (mildly outside) or an error (far outside, or too few
stars); ``--force`` turns those errors into warnings. Never a silent number.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from galmass.maps import observation_to_sample
from galmass.metrics.estimators import ESTIMATORS, estimator_log_mass
from galmass.models.io import load_trained
from hpc.atomic import atomic_write_bytes, atomic_write_json

__all__ = ["Catalogue", "read_catalogue", "check_range", "predict", "main", "MIN_STARS", "CatalogueError"]

MIN_STARS = 10
"""Fewer observed stars than this give no meaningful dispersion: always an error."""
WARN_DEX, ERROR_DEX = 0.0, 0.5
"""Outside the training range by more than 0 dex → warning; by more than ERROR_DEX → error (unless --force)."""


class CatalogueError(ValueError):
    """A catalogue that cannot be used; the message names the file."""


@dataclass
class Catalogue:
    x_kpc: np.ndarray
    y_kpc: np.ndarray
    v_kms: np.ndarray
    v_err_kms: np.ndarray
    mass: np.ndarray | None = None


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CatalogueError(f"{path}: file not found") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) < 2:
        raise CatalogueError(f"{path}: needs a header line and at least one row")
    header = [h.strip() for h in lines[0].split(",")]
    try:
        rows = np.loadtxt(io.StringIO("\n".join(lines[1:])), delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as err:
        raise CatalogueError(f"{path}: not a numeric CSV below the header ({err})") from None
    if rows.shape[1] != len(header):
        raise CatalogueError(f"{path}: header has {len(header)} columns, rows have {rows.shape[1]}")
    bad = ~np.all(np.isfinite(rows), axis=1)
    if bad.any():
        raise CatalogueError(f"{path}: non-finite values in data rows {np.flatnonzero(bad)[:5] + 1} (1-based)")
    return {h: rows[:, i] for i, h in enumerate(header)}


def read_catalogue(path: str | Path, kind: str = "stars", rng: np.random.Generator | None = None) -> Catalogue:
    """Read a stars or gas CSV catalogue; raises CatalogueError naming the file and the missing columns."""
    path = Path(path)
    cols = _read_csv(path)
    if "v_los_kms" not in cols:
        raise CatalogueError(f"{path}: missing column 'v_los_kms' (have {sorted(cols)})")
    n = len(cols["v_los_kms"])
    if "x_kpc" in cols and "y_kpc" in cols:
        x, y = cols["x_kpc"], cols["y_kpc"]
    elif "R_kpc" in cols and kind == "stars":
        # Without position angles the sky map is circularised: stars get uniform random angles. The phase-space
        # image and all scalars are unaffected; say so.
        warnings.warn(f"{path}: only R_kpc given; position angles drawn uniformly (circularised sky map)",
                      stacklevel=2)
        phi = (rng or np.random.default_rng(0)).uniform(0, 2 * np.pi, n)
        x, y = cols["R_kpc"] * np.cos(phi), cols["R_kpc"] * np.sin(phi)
    else:
        need = "x_kpc, y_kpc (or R_kpc)" if kind == "stars" else "x_kpc, y_kpc"
        raise CatalogueError(f"{path}: missing position columns {need} (have {sorted(cols)})")
    if "v_err_kms" in cols:
        err = cols["v_err_kms"]
        if np.any(err < 0):
            raise CatalogueError(f"{path}: negative v_err_kms")
    else:
        err = np.zeros(n)
    mass = cols.get("mass_msun") if kind == "gas" else None
    if mass is not None and np.any(mass < 0):
        raise CatalogueError(f"{path}: negative mass_msun")
    return Catalogue(x, y, cols["v_los_kms"], err, mass)


def check_range(scalars: np.ndarray, normalisation: dict[str, Any], n_stars: int, force: bool,
                need_gas: bool) -> list[str]:
    """Compare a catalogue's scalars with the training range; return warnings, raise CatalogueError if far out."""
    if n_stars < MIN_STARS:
        raise CatalogueError(f"only {n_stars} stars: at least {MIN_STARS} are needed for a dispersion")
    names = ["log10 R_h [kpc]", "log10 σ★ [km/s]", "log10 v_rms,gas [km/s]", "log10 N★"]
    lo = np.array(normalisation["scalars"]["min"])
    hi = np.array(normalisation["scalars"]["max"])
    messages, errors = [], []
    cols = [0, 1, 3] + ([2] if need_gas else [])
    for c in cols:
        out = max(lo[c] - scalars[c], scalars[c] - hi[c])
        if out > WARN_DEX:
            msg = (f"{names[c]} = {scalars[c]:.2f} lies {out:.2f} dex outside the training range "
                   f"[{lo[c]:.2f}, {hi[c]:.2f}]")
            (errors if out > ERROR_DEX else messages).append(msg)
    if errors and not force:
        raise CatalogueError("; ".join(errors) + ". The posterior would be an extrapolation. HINT: --force to "
                             "predict anyway (with a warning), or train on a suite that covers this galaxy.")
    return messages + errors


def predict(run_dir: str | Path, stars: str | Path, gas: str | Path | None = None, out_dir: str | Path | None = None,
            n_samples: int = 2000, seed: int = 0, force: bool = False) -> Path:
    """Posterior of log10 M(<f R_h) for one observed galaxy; writes posterior.json and samples.npz."""
    model, cfg, blob = load_trained(run_dir)
    rng = np.random.default_rng(seed)
    cat = read_catalogue(stars, "stars", rng)
    gas_cat = read_catalogue(gas, "gas") if gas is not None else None
    need_gas = "gas" in cfg.model.tracer
    if need_gas and gas_cat is None:
        raise CatalogueError(f"the run {run_dir} uses tracer mode '{cfg.model.tracer}': give a gas catalogue (--gas)")
    dc = blob["data_config"]
    gas_tuple = None
    if gas_cat is not None:
        gas_tuple = (gas_cat.x_kpc, gas_cat.y_kpc, gas_cat.v_kms,
                     gas_cat.mass if gas_cat.mass is not None else np.ones_like(gas_cat.v_kms))
    sample = observation_to_sample(cat.x_kpc, cat.y_kpc, cat.v_kms, cat.v_err_kms, gas_tuple,
                                   npix=int(dc["npix"]), extent_rh=float(dc["extent_rh"]),
                                   vmax_sigma=float(dc["vmax_sigma"]))
    notes = check_range(np.asarray(sample["scalars"], dtype=np.float64), blob["normalisation"], len(cat.v_kms),
                        force, need_gas)
    if not np.any(cat.v_err_kms):
        notes.append("no v_err_kms column: velocity errors taken as 0 (σ★ not error-corrected)")
    for msg in notes:
        warnings.warn(msg, stacklevel=2)
    batch = {k: torch.as_tensor(np.asarray(sample[k])[None]) for k in model.input_keys}
    torch.manual_seed(seed)
    samples = model.sample(batch, n_samples)[:, 0].numpy().astype(np.float64)  # [S, 10]
    factors = np.asarray(blob["radii_factors"], dtype=np.float64)
    rh, sigma = float(sample["rh_kpc"]), float(sample["sigma_kms"])
    q16, q50, q84 = np.percentile(samples, [16, 50, 84], axis=0)
    result = {
        "run": str(run_dir), "stars": str(stars), "gas": str(gas) if gas else None, "tracer": cfg.model.tracer,
        "n_stars": int(len(cat.v_kms)), "rh_kpc": rh, "sigma_los_kms": sigma, "seed": seed, "samples": n_samples,
        "warnings": notes,
        "radii_factors": factors.tolist(), "radii_kpc": (factors * rh).tolist(),
        "log10_mass_median": q50.tolist(), "log10_mass_p16": q16.tolist(), "log10_mass_p84": q84.tolist(),
        "mass_median_msun": (10 ** q50).tolist(), "mass_p16_msun": (10 ** q16).tolist(),
        "mass_p84_msun": (10 ** q84).tolist(),
        "estimators": {e.name: {"radius_kpc": e.radius_factor * rh,
                                "log10_mass": float(estimator_log_mass(e, sigma, rh)), "note": e.note}
                       for e in ESTIMATORS},
    }
    out = Path(out_dir) if out_dir else Path(f"predict-{Path(stars).stem}")
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, log10_mass_samples=samples, radii_kpc=factors * rh, radii_factors=factors)
    atomic_write_bytes(out / "samples.npz", buf.getvalue())
    atomic_write_json(out / "posterior.json", result)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="galmass predict", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="trained run directory")
    parser.add_argument("--stars", required=True, help="CSV: x_kpc,y_kpc,v_los_kms[,v_err_kms] or R_kpc,v_los_kms")
    parser.add_argument("--gas", default=None, help="CSV: x_kpc,y_kpc,v_los_kms[,mass_msun]")
    parser.add_argument("--out", default=None, help="output directory (default ./predict-STEM)")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="predict outside the training range (warns)")
    args = parser.parse_args(argv)
    try:
        out = predict(args.run, args.stars, args.gas, args.out, args.samples, args.seed, args.force)
    except (CatalogueError, FileNotFoundError) as err:
        print(f"galmass predict: error: {err}", file=sys.stderr)
        return 2
    res = json.loads((out / "posterior.json").read_text())
    print(f"[galmass] N★={res['n_stars']}  R_h={res['rh_kpc']:.3f} kpc  σ_los={res['sigma_los_kms']:.2f} km/s")
    print(f"{'r [kpc]':>9} {'r/R_h':>6} {'M_16% [Msun]':>13} {'M_50%':>11} {'M_84%':>11}")
    for r, f, a, b, c in zip(res["radii_kpc"], res["radii_factors"], res["mass_p16_msun"], res["mass_median_msun"],
                             res["mass_p84_msun"]):
        print(f"{r:9.3f} {f:6.1f} {a:13.3e} {b:11.3e} {c:11.3e}")
    for name, e in res["estimators"].items():
        print(f"  {name:<18} M(<{e['radius_kpc']:.3f} kpc) = {10 ** e['log10_mass']:.3e} Msun")
    print(f"[galmass] wrote {out}/posterior.json and samples.npz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
