"""Grade a trained run on the independent validation set (``galmass validate RUN``).

The set (:mod:`galmass.validation.generator`: galpy equilibrium galaxies in Burkert / cored / cuspy two-power
haloes with non-Plummer tracers, none of them in the training family) is generated on first use into the cache
(``$GALMASS_CACHE/validation``, default ``~/.cache/galmass/validation``) and reused. Every catalogue is turned
into model inputs by :func:`galmass.maps.observation_to_sample` with the run's own map geometry and observer
settings (from the model file), batched through ``model.sample``, and graded per N★ variant by
:func:`galmass.validation.report.score`. Writes ``metrics.json``, ``validation.md`` and ``posteriors.npz``
(per catalogue: truth and the 16/50/84 % posterior quantiles) to ``RUN/validate-<set name>/`` by default.

Usage::

    galmass validate runs/stars                       # default set (cached), N★ = 100 and 1000
    galmass validate runs/stars --samples 1000 --n-stars 1000 --out val/
    galmass validate runs/stars --set my_set.npz --regenerate
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from galmass.datasets.integrity import sha256_file
from galmass.models.io import ModelFileError, load_trained, to_torch
from galmass.observer import training_range
from galmass.validation.generator import NAMED_SETS, SetSpec, ValidationSet, get_set
from galmass.validation.report import (ObservedVariant, observe_set, render_markdown, score, set_summary,
                                      width_ratio)
from hpc.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["validate_run", "run_observer", "model_samples", "run"]


def run_observer(blob: dict[str, Any]) -> dict[str, Any]:
    """Map geometry and observer settings of a trained model (from its file), as ``observe_set`` takes them.

    A model file written before ``data.membership_clip`` / ``data.recentre`` existed was trained without those
    steps, so they default to off.
    """
    dc = blob.get("data_config") or {}
    return {"npix": int(blob["npix"]), "extent_rh": float(blob.get("extent_rh") or dc["extent_rh"]),
            "vmax_sigma": float(blob.get("vmax_sigma") or dc["vmax_sigma"]),
            "membership_clip": float(dc.get("membership_clip", 0.0)), "recentre": bool(dc.get("recentre", False))}


def model_samples(model: torch.nn.Module, inputs: dict[str, np.ndarray], n_samples: int, seed: int,
                  batch_size: int = 64) -> np.ndarray:
    """Posterior samples [S, N, 10] (log10 M [Msun]) of stacked model inputs, batch b drawn with seed (seed, b)."""
    if n_samples < 1 or batch_size < 1:
        raise ValueError(f"n_samples and batch_size must be >= 1, got {n_samples}, {batch_size}")
    n = len(next(iter(inputs.values())))
    out = []
    for b, start in enumerate(range(0, n, batch_size)):
        batch = to_torch({k: v[start:start + batch_size] for k, v in inputs.items()}, torch.device("cpu"))
        torch.manual_seed(int(np.random.SeedSequence([seed, b]).generate_state(1)[0]))
        with torch.inference_mode():
            out.append(model.sample(batch, n_samples).numpy().astype(np.float64))
    return np.concatenate(out, axis=1)


def _outside_training(obs: ObservedVariant, inputs: dict[str, np.ndarray], blob: dict[str, Any]) -> int:
    """Catalogues whose log R_h, log σ★ or log N★ lie outside the training set's range (extrapolations)."""
    sc = blob["normalisation"]["scalars"]
    lo, hi = np.asarray(sc["min"]), np.asarray(sc["max"])
    cols = [0, 1, 3]  # log10 R_h, log10 σ★, log10 N★ (the gas column is unused here)
    s = inputs["scalars"][:, cols]
    return int(np.sum(np.any((s < lo[cols]) | (s > hi[cols]), axis=1)))


def _observer_note(keys: tuple[str, ...], marginalise: bool, dc: dict[str, Any]) -> str:
    if "observer" not in keys:
        return "none (the model marginalises over its training fractions)"
    if marginalise:
        hi = training_range(dc)
        return f"not stated (the network's own marginal; training ranges: binary 0–{hi[0]:g}, foreground 0–{hi[1]:g})"
    return "stated: binary_fraction 0, foreground_fraction 0 (the generator makes neither)"


def _variant(model, blob, vset: ValidationSet, n_stars: int, n_samples: int, seed: int, keys: tuple[str, ...],
             marginalise: bool = False) -> tuple[dict[str, Any], dict[str, np.ndarray], float]:
    """Observe, sample and score one N★ variant; also the arrays for posteriors.npz and the sampling time."""
    obs = observe_set(vset, n_stars, keys=keys, state_observer=not marginalise, **run_observer(blob))
    t0 = time.perf_counter()
    samples = model_samples(model, obs.inputs, n_samples, seed + n_stars)
    dt = time.perf_counter() - t0
    metrics = score(samples, obs, seed)
    metrics["n_outside_training_range"] = _outside_training(obs, obs.inputs, blob)
    q16, q50, q84 = np.percentile(samples, [16.0, 50.0, 84.0], axis=0)
    arrays = {f"n{n_stars}_{k}": v for k, v in (("index", obs.index), ("galaxy", obs.galaxy), ("rh_kpc", obs.rh_kpc),
                                                ("sigma_kms", obs.sigma_kms), ("truth", obs.log_m_true),
                                                ("p16", q16), ("p50", q50), ("p84", q84))}
    return metrics, arrays, dt


def validate_run(run_dir: str | Path, set_path: str | Path | None = None, n_stars: Sequence[int] | None = None, *,
                 n_samples: int = 400, seed: int = 0, out_dir: str | Path | None = None, regenerate: bool = False,
                 workers: int | None = None, spec: SetSpec | None = None, progress: bool = False,
                 marginalise: bool = False) -> dict[str, Any]:
    """Grade ``run_dir`` on the validation set; write metrics.json, validation.md, posteriors.npz; return metrics.

    Parameters
    ----------
    run_dir : path
        Trained run (``best.pt``).
    set_path : path, optional
        Validation set file; made there if missing (default: the cache file of ``spec``).
    n_stars : sequence of int, optional
        N★ variants to grade (default: all of the set's, 100 and 1000). Sizes the set does not have (e.g. 30, the
        ultra-faint regime) grade a variant of it instead: the same galaxies drawn again as catalogues of exactly
        these sizes (its own name and cache file; not with ``set_path``).
    n_samples : int
        Posterior draws per catalogue.
    seed : int
        Seed of the posterior draws and of the TARP reference points.
    out_dir : path, optional
        Default ``RUN/validate-<set name>``.
    regenerate, workers, spec
        Regenerate the set even if the file exists; processes for generating it; its spec (default SetSpec()).
    marginalise : bool
        For a model with observer inputs: leave the binary and foreground fractions unstated (as ``predict`` does
        by default) instead of stating the set's 0 and 0; output then goes to
        ``RUN/validate-<set name>-marginalised`` by default.
    """
    t0 = time.perf_counter()
    model, cfg, blob = load_trained(run_dir)
    if cfg.model.tracer != "stars":
        raise ValueError(f"{run_dir} uses tracer mode '{cfg.model.tracer}'; the validation set has stars only. "
                         "HINT: validate a run trained with --model.tracer=stars")
    base = spec or SetSpec()
    if n_stars and set_path is None and not set(map(int, n_stars)) <= set(base.n_stars):
        spec = dataclasses.replace(base, n_stars=tuple(sorted(set(map(int, n_stars)))))
    vset = get_set(set_path, spec, regenerate=regenerate, workers=workers, progress=progress)
    if spec is not None and vset.spec != spec:
        raise ValueError(f"{set_path} holds validation set {vset.name}, not the requested {spec.name}. HINT: drop "
                         "--set to use the requested set's cache file, or drop --set-name to grade on this file")
    t_set = time.perf_counter() - t0
    variants = [int(n) for n in (n_stars or vset.spec.n_stars)]
    keys = tuple(getattr(model, "input_keys", model.map_keys + ("scalars",)))
    metrics: dict[str, Any] = {"run": str(run_dir), "model_sha256": sha256_file(Path(run_dir) / "best.pt"),
                               "tracer": cfg.model.tracer, "best_epoch": int(blob["epoch"]), "seed": seed,
                               "posterior_samples": n_samples, "observer": run_observer(blob),
                               "observer_inputs": _observer_note(keys, marginalise, blob["data_config"]),
                               "set": set_summary(vset), "variants": {}}
    arrays: dict[str, np.ndarray] = {}
    t_sample = 0.0
    for n in variants:
        metrics["variants"][str(n)], arr, dt = _variant(model, blob, vset, n, n_samples, seed, keys, marginalise)
        arrays.update(arr)
        t_sample += dt
    if len(variants) >= 2:  # the same galaxies at the smallest and largest N★: how much the posterior narrows
        lo, hi = min(variants), max(variants)
        k = int(np.argmin(np.abs(np.asarray(metrics["variants"][str(lo)]["radii_factors"]) - 1.0)))
        metrics["width_ratio"] = {"n_lo": lo, "n_hi": hi, "radius_factor": 1.0,
                                  "n_galaxies": int(np.unique(arrays[f"n{lo}_galaxy"]).size),
                                  "median_over_galaxies": width_ratio(arrays, lo, hi, k)}
    metrics["timing"] = {"set_s": round(t_set, 2), "sampling_s": round(t_sample, 2),
                         "total_s": round(time.perf_counter() - t0, 2)}
    suffix = "-marginalised" if marginalise and "observer" in keys else ""
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / f"validate-{vset.name}{suffix}"
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, radii_factors=np.asarray(metrics["variants"][str(variants[0])]["radii_factors"]),
                        **arrays)
    atomic_write_bytes(out / "posteriors.npz", buf.getvalue())
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "validation.md", render_markdown(metrics, f"Independent validation of {run_dir}"))
    metrics["out_dir"] = str(out)
    return metrics


def _parse_n_stars(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--n-stars must be comma-separated integers, got {text!r}. "
                         "HINT: --n-stars 100,1000") from None
    return values or None


def run(args: argparse.Namespace) -> int:
    """``galmass validate`` (options in :mod:`galmass.cli`): grade ``args.run``, print the summary; 2 on a clear error."""
    try:
        if args.set_name is not None and args.set_name not in NAMED_SETS:
            raise ValueError(f"--set-name {args.set_name!r} is not a validation set. HINT: one of {list(NAMED_SETS)}")
        m = validate_run(args.run, args.set, _parse_n_stars(args.n_stars), n_samples=args.samples, seed=args.seed,
                         out_dir=args.out, regenerate=args.regenerate, workers=args.workers, progress=True,
                         marginalise=args.marginalise,
                         spec=NAMED_SETS[args.set_name] if args.set_name else None)
    except (ValueError, FileNotFoundError, ModelFileError) as err:
        print(f"galmass validate: error: {err}", file=sys.stderr)
        return 2
    t = m["timing"]
    print(f"[galmass] validation set {m['set']['name']} ({m['set']['n_galaxies']} galaxies; generation took "
          f"{m['set']['info'].get('generation_time_s', '?')} s when it was made): ready in {t['set_s']} s, graded in "
          f"{t['total_s'] - t['set_s']:.1f} s ({t['sampling_s']} s of posterior sampling)")
    for key, v in m["variants"].items():
        b = v["best_estimator"]
        e = v["estimators"][b]
        print(f"[galmass] N★={key}: RMS at {e['radius_factor']:.2f} R_h: posterior {e['cnn']['rms']:.3f} dex, "
              f"{b} {e['estimator']['rms']:.3f} dex (ratio {v['rms_ratio_vs_best_estimator']:.2f}); mean 68 % "
              f"coverage {np.mean(v['cnn']['coverage68']):.2f}; {v['n_outside_training_range']} of "
              f"{v['n_catalogues']} catalogues outside the training range")
    print(f"[galmass] wrote {m['out_dir']}/metrics.json and validation.md")
    return 0

