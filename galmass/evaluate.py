"""Evaluation of a trained run on held-out galaxies (``galmass evaluate``).

For every projection of the chosen split: posterior samples of log10 M(<f_i R_h), the five literature estimators
on the same observed stars, the true mass at each estimator's radius (from the galaxy's stored profile). Metrics
(bias, scatter, |r|<0.1, coverage, TARP, estimator comparison) come from ``galmass.metrics.summary`` and are
written to ``metrics.json`` + ``residuals.npz`` in the evaluation directory.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from galmass.config import ConfigError
from galmass.datasets import ShardedDataset, TruthProfiles, tracer_keys
from galmass.metrics.estimators import ESTIMATORS
from galmass.metrics.summary import compute_metrics
from galmass.train import load_trained, to_torch
from hpc.atomic import atomic_write_bytes, atomic_write_json

__all__ = ["evaluate", "posterior_samples", "main"]


def posterior_samples(model, data: ShardedDataset, n_samples: int, batch_size: int, seed: int,
                      indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Posterior samples [S, N, 10] plus labels, scalars and galaxy ids for ``indices`` (default: all)."""
    idx = np.arange(len(data)) if indices is None else np.asarray(indices)
    torch.manual_seed(seed)
    out: dict[str, list[np.ndarray]] = {"samples": [], "labels": [], "scalars": [], "galaxy_id": []}
    for start in range(0, len(idx), batch_size):
        raw = data.get_batch(idx[start : start + batch_size])
        batch = to_torch({k: raw[k] for k in model.map_keys + ("scalars", "labels")}, torch.device("cpu"))
        out["samples"].append(model.sample(batch, n_samples).numpy())
        out["labels"].append(raw["labels"].astype(np.float64))
        out["scalars"].append(raw["scalars"].astype(np.float64))
        out["galaxy_id"].append(raw["galaxy_id"])
    return {k: np.concatenate(v, axis=1 if k == "samples" else 0) for k, v in out.items()}


def evaluate(run_dir: str | Path, data_path: str | None = None, split: str | None = None,
             out_dir: str | Path | None = None, n_samples: int | None = None) -> Path:
    """Evaluate ``run_dir`` and write ``metrics.json`` and ``residuals.npz``; returns the evaluation directory."""
    run_dir = Path(run_dir)
    model, cfg, blob = load_trained(run_dir)
    ev = cfg.evaluate
    data_path = data_path or ev.data_path or cfg.data.path
    split = split or ev.split
    n_samples = n_samples or ev.posterior_samples
    data = ShardedDataset(data_path, split, tracer_keys(cfg.model.tracer) + ("scalars", "labels"), meta=True)
    if int(data.manifest["npix"]) != int(blob["npix"]):
        raise ValueError(f"{data_path}: maps are {data.manifest['npix']} px, the model was trained on {blob['npix']} px")
    res = posterior_samples(model, data, n_samples, ev.batch_size, ev.seed)
    rh_kpc = 10 ** res["scalars"][:, 0]
    sigma_kms = 10 ** res["scalars"][:, 1]
    truth = TruthProfiles(data)
    est_radii = rh_kpc[:, None] * np.array([e.radius_factor for e in ESTIMATORS])[None, :]
    true_at_est = truth.log_mass_at(res["galaxy_id"], est_radii)
    metrics, arrays = compute_metrics(res["samples"], res["labels"], sigma_kms, rh_kpc, true_at_est,
                                      np.random.default_rng(ev.seed))
    metrics.update(
        run=str(run_dir), tracer=cfg.model.tracer, dataset=str(data_path), split=split,
        n_galaxies=int(len(np.unique(res["galaxy_id"]))), seed=ev.seed, posterior_samples=n_samples,
        suites=sorted({s["suite"] for s in data.shards}), feedbacks=sorted({s["feedback"] for s in data.shards}),
        train_suites=list(cfg.data.suites), train_feedbacks=list(cfg.data.feedbacks),
        best_epoch=int(blob["epoch"]), model_nll=float(blob["val_nll"]),
    )
    if out_dir is None:
        same = Path(data_path).resolve() == Path(cfg.data.path).resolve()
        out_dir = run_dir / (f"eval-{split}" if same else f"eval-{Path(data_path).name}-{split}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays["galaxy_id"] = res["galaxy_id"]
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(out_dir / "residuals.npz", buf.getvalue())
    atomic_write_json(out_dir / "metrics.json", metrics)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="galmass evaluate", description="Evaluate a trained run.")
    parser.add_argument("--run", required=True, help="run directory (holds best.pt and config.yaml)")
    parser.add_argument("--data", default=None, help="dataset directory (default: the run's training dataset)")
    parser.add_argument("--split", default=None, choices=["train", "val", "test"])
    parser.add_argument("--out", default=None, help="output directory (default: RUN/eval-SPLIT)")
    parser.add_argument("--samples", type=int, default=None, help="posterior samples per projection")
    args = parser.parse_args(argv)
    try:
        out = evaluate(args.run, args.data, args.split, args.out, args.samples)
    except (ConfigError, FileNotFoundError) as err:
        print(f"galmass evaluate: {err}", file=sys.stderr)
        return 2
    m: dict[str, Any] = __import__("json").loads((out / "metrics.json").read_text())
    wolf = m["estimators"].get("Wolf2010", {})
    print(f"[galmass] wrote {out}/metrics.json ({m['n_projections']} projections, {m['n_galaxies']} galaxies)")
    if wolf:
        print(f"[galmass] scatter at 4/3 R_h: CNN {wolf['cnn']['scatter']:.3f} dex, Wolf+2010 "
              f"{wolf['estimator']['scatter']:.3f} dex")
    return 0


if __name__ == "__main__":
    sys.exit(main())
