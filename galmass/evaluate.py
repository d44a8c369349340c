"""Evaluation of a trained run on held-out galaxies (``galmass evaluate``).

For every projection of the chosen split: posterior samples of log10 M(<f_i R_h), the five literature estimators
on the same observed stars, the true mass at each estimator's radius (from the galaxy's stored profile). Metrics
(bias, scatter, |r|<0.1, coverage, TARP, estimator comparison) come from ``galmass.metrics.summary`` and are
written to ``metrics.json`` + ``residuals.npz`` in the evaluation directory.

Under MPI (``mpiexec -n N python -m galmass.evaluate --run RUN``, or ``slurm/eval_mpi.sh``) the ranks split the
work by *global batch*: batch b (projections ``b·batch_size … (b+1)·batch_size − 1`` of the split) goes to rank
``b mod N``, and its posterior samples are drawn with a seed derived from (evaluate.seed, b) alone. Rank 0 gathers
every batch with mpi4py, puts them back in order and computes the metrics exactly as a single process does, so
metrics.json is identical for any N. mpi4py is imported only when an MPI launcher with more than one rank is
detected (never in DataLoader-forking processes: evaluation reads batches in the main process).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from galmass.config import Config, ConfigError
from galmass.datasets import DatasetError, ShardedDataset, TruthProfiles, load_manifest, scalar_index
from galmass.datasets.integrity import manifest_hash, sha256_file
from galmass.metrics.estimators import ESTIMATORS
from galmass.metrics.summary import compute_metrics
from galmass.models.io import load_trained, to_torch
from galmass.models.network import input_keys
from hpc.atomic import atomic_write_bytes, atomic_write_json
from hpc.launchers import MpiEnv

__all__ = ["evaluate", "posterior_samples", "batch_seed", "mpi_comm", "main"]

_KEYS = ("samples", "labels", "scalars", "galaxy_id")


def batch_seed(seed: int, batch_index: int) -> int:
    """Seed of the posterior draws of global batch ``batch_index``: a function of (seed, batch) only.

    Deriving it per batch (not per rank, not from a running generator) is what makes the samples independent of
    how many ranks share the work and which rank draws which batch.
    """
    if seed < 0 or batch_index < 0:
        raise ValueError(f"seed and batch_index must be >= 0, got {seed}, {batch_index}")
    return int(np.random.SeedSequence([seed, batch_index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def mpi_comm():
    """``MPI.COMM_WORLD`` when this process is one of several MPI ranks, else ``None`` (mpi4py not imported)."""
    if not MpiEnv.detect():
        return None
    env = MpiEnv()
    if env.world_size < 2:
        return None
    try:
        from mpi4py import MPI  # lazy: importing it initialises MPI, which must not happen in forked workers
    except ImportError as err:
        raise ImportError(
            f"{env.describe()} started {env.world_size} ranks but mpi4py is not installed ({err}). "
            "HINT: pip install 'galmass[mpi]' (mpi4py + the mpich wheel, whose mpiexec is in the venv's bin/)"
        ) from None
    return MPI.COMM_WORLD


def _sample_batches(model, data: ShardedDataset, idx: np.ndarray, n_samples: int, batch_size: int, seed: int,
                    batches: range | list[int]) -> dict[int, dict[str, np.ndarray]]:
    """Posterior samples [S, B, 10], labels, scalars, galaxy ids of the given global batches of ``idx``."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for b in batches:
        raw = data.get_batch(idx[b * batch_size : (b + 1) * batch_size])
        batch = to_torch({k: raw[k] for k in model.input_keys + ("labels",)}, torch.device("cpu"))
        torch.manual_seed(batch_seed(seed, b))
        with torch.inference_mode():
            samples = model.sample(batch, n_samples).numpy()
        out[b] = {"samples": samples, "labels": raw["labels"].astype(np.float64),
                  "scalars": raw["scalars"].astype(np.float64), "galaxy_id": raw["galaxy_id"]}
    return out


def _concat(parts: dict[int, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    order = sorted(parts)
    return {k: np.concatenate([parts[b][k] for b in order], axis=1 if k == "samples" else 0) for k in _KEYS}


def posterior_samples(model, data: ShardedDataset, n_samples: int, batch_size: int, seed: int,
                      indices: np.ndarray | None = None, comm=None) -> dict[str, np.ndarray] | None:
    """Posterior samples [S, N, 10] plus labels, scalars and galaxy ids for ``indices`` (default: all).

    Parameters
    ----------
    model : MassPosterior
        Trained model (eval mode).
    data : ShardedDataset
        The split to evaluate.
    n_samples : int
        Posterior draws S per projection.
    batch_size : int
        Projections per global batch; batch b is sampled with seed ``batch_seed(seed, b)``.
    seed : int
        Evaluation seed.
    indices : ndarray, optional
        Projections to evaluate, in order (default all).
    comm : mpi4py communicator, optional
        Split the global batches round-robin over its ranks and gather them on rank 0.

    Returns
    -------
    dict or None
        ``samples`` [S, N, 10] (log10 M [Msun]), ``labels`` [N, 10], ``scalars`` [N, 3], ``galaxy_id`` [N] —
        identical for any number of ranks. ``None`` on ranks other than 0.
    """
    if batch_size < 1 or n_samples < 1:
        raise ValueError(f"batch_size and n_samples must be >= 1, got {batch_size}, {n_samples}")
    idx = np.arange(len(data)) if indices is None else np.asarray(indices)
    n_batches = -(-len(idx) // batch_size)
    if comm is None or comm.Get_size() < 2:
        return _concat(_sample_batches(model, data, idx, n_samples, batch_size, seed, range(n_batches)))
    rank, size = comm.Get_rank(), comm.Get_size()
    mine = _sample_batches(model, data, idx, n_samples, batch_size, seed, range(rank, n_batches, size))
    # One pickled dict per rank: fine for evaluation sets (S·N·10 float32); order is restored by batch index.
    gathered = comm.gather(mine, root=0)
    if rank != 0:
        return None
    parts: dict[int, dict[str, np.ndarray]] = {}
    for part in gathered:
        parts.update(part)
    if sorted(parts) != list(range(n_batches)):
        raise RuntimeError(f"gathered batches {sorted(parts)} != 0..{n_batches - 1}: a rank lost work")
    return _concat(parts)


def resolve_dataset(run_dir: Path, cfg: Config, blob: dict[str, Any], data_path: str | None
                    ) -> tuple[Path, bool]:
    """The dataset to evaluate on and whether it is the run's own training dataset.

    Without ``data_path`` the run's own dataset is used: the absolute path recorded in the model file (a relative
    ``data.path`` meant the directory training ran in, not the current one), else ``data.path``. Its manifest must
    carry the data hash the model was trained on — a different dataset at that path is refused, never evaluated
    under the run's name. An explicit ``data_path`` may be any dataset (cross-suite evaluation).
    """
    trained_hash = blob.get("data_hash")
    if data_path:
        path = Path(data_path)
        manifest = load_manifest(path)
        return path, trained_hash is not None and manifest_hash(manifest) == trained_hash
    candidates = [Path(p) for p in (blob.get("data_path"), cfg.evaluate.data_path or None, cfg.data.path) if p]
    for path in candidates:
        if (path / "manifest.json").exists():
            found = manifest_hash(load_manifest(path))
            if trained_hash is None or found == trained_hash:
                return path, True
            raise DatasetError(
                f"{path}: this dataset (hash {found}) is not the one {run_dir} was trained on (hash "
                f"{trained_hash}); evaluating it would write numbers of another dataset under the run's name. "
                "HINT: run from the directory training ran in, or pass the right dataset with --data "
                "(an explicit --data is evaluated into eval-<dataset>-<split>)")
    raise DatasetError(f"{run_dir}: its training dataset was not found (looked in "
                       f"{', '.join(str(c) for c in candidates)}). HINT: pass it with --data")


def _check_output(out_dir: Path, identity: dict[str, Any]) -> None:
    """An evaluation directory holds one (model, dataset, split, samples, seed): refuse to overwrite another's."""
    old_path = out_dir / "metrics.json"
    if not old_path.exists():
        return
    old = json.loads(old_path.read_text())
    diffs = [f"{k}: {old.get(k)!r} → {v!r}" for k, v in identity.items() if old.get(k) != v]
    if diffs:
        raise ConfigError(f"{old_path} holds an evaluation of other inputs ({'; '.join(diffs)}); not overwritten. "
                          "HINT: pass another --out, or delete that directory")


def evaluate(run_dir: str | Path, data_path: str | None = None, split: str | None = None,
             out_dir: str | Path | None = None, n_samples: int | None = None) -> Path:
    """Evaluate ``run_dir`` and write ``metrics.json`` and ``residuals.npz``; returns the evaluation directory.

    Under MPI with several ranks every rank must call this; the work is split by global batch, rank 0 writes the
    files (the same bytes of metrics.json as a single process) and every rank returns the directory.
    """
    comm = mpi_comm()
    rank = comm.Get_rank() if comm is not None else 0
    run_dir = Path(run_dir)
    model, cfg, blob = load_trained(run_dir)
    ev = cfg.evaluate
    split = split or ev.split
    n_samples = ev.posterior_samples if n_samples is None else n_samples
    if n_samples < 1:
        raise ConfigError(f"--samples must be >= 1 posterior draws per projection, got {n_samples}")
    path, own = resolve_dataset(run_dir, cfg, blob, data_path)
    data = ShardedDataset(path, split, input_keys(cfg.model) + ("labels",), meta=True,
                          valid_only=not ev.use_flagged_labels)
    if int(data.manifest["npix"]) != int(blob["npix"]):
        raise DatasetError(f"{path}: maps are {data.manifest['npix']} px, the model was trained on {blob['npix']} px. "
                           "HINT: evaluate on a dataset made with the same data.npix")
    out_dir = Path(out_dir) if out_dir is not None else run_dir / (
        f"eval-{split}" if own else f"eval-{path.name}-{split}")
    identity = {"model_sha256": sha256_file(run_dir / "best.pt"), "data_hash": manifest_hash(data.manifest),
                "split": split, "posterior_samples": n_samples, "seed": ev.seed}
    _check_output(out_dir, identity)
    res = posterior_samples(model, data, n_samples, ev.batch_size, ev.seed, comm=comm)
    if rank != 0:
        return out_dir
    metrics, arrays = _metrics(res, data, ev.seed)
    metrics.update(
        run=str(run_dir), tracer=cfg.model.tracer, dataset=str(path), **identity,
        n_galaxies=int(len(np.unique(res["galaxy_id"]))), n_flagged_left_out=data.n_flagged,
        suites=sorted({s["suite"] for s in data.shards}), feedbacks=sorted({s["feedback"] for s in data.shards}),
        train_suites=list(cfg.data.suites), train_feedbacks=list(cfg.data.feedbacks),
        best_epoch=int(blob["epoch"]), model_nll=blob["val_nll"], trained_data_hash=blob.get("data_hash"),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays["galaxy_id"] = res["galaxy_id"]
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(out_dir / "residuals.npz", buf.getvalue())
    atomic_write_json(out_dir / "metrics.json", metrics)
    return out_dir


def _metrics(res: dict[str, np.ndarray], data: ShardedDataset, seed: int) -> tuple[dict[str, Any], dict]:
    """Metrics and per-projection arrays of gathered posterior samples (rank 0)."""
    rh_kpc = 10 ** res["scalars"][:, scalar_index("log10_rh_kpc")]
    sigma_kms = 10 ** res["scalars"][:, scalar_index("log10_sigma_stars_kms")]
    est_radii = rh_kpc[:, None] * np.array([e.radius_factor for e in ESTIMATORS])[None, :]
    true_at_est = TruthProfiles(data).log_mass_at(res["galaxy_id"], est_radii)
    return compute_metrics(res["samples"], res["labels"], sigma_kms, rh_kpc, true_at_est, np.random.default_rng(seed))


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
    except (ConfigError, DatasetError, FileNotFoundError) as err:
        print(f"galmass evaluate: error: {err}", file=sys.stderr)
        return 2
    comm = mpi_comm()
    if comm is not None and comm.Get_rank() != 0:
        return 0
    m: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    if comm is not None:
        print(f"[galmass] evaluated with {comm.Get_size()} MPI ranks (results gathered on rank 0)")
    wolf = m["estimators"].get("Wolf2010", {})
    print(f"[galmass] wrote {out}/metrics.json ({m['n_projections']} projections, {m['n_galaxies']} galaxies)")
    if wolf:
        print(f"[galmass] scatter at 4/3 R_h: CNN {wolf['cnn']['scatter']:.3f} dex, Wolf+2010 "
              f"{wolf['estimator']['scatter']:.3f} dex")
    return 0


if __name__ == "__main__":
    sys.exit(main())
