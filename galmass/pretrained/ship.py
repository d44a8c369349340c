"""``galmass ship RUN --name NAME``: put a finished run's model into the package with its model card.

The card records what a user needs to trust (or distrust) the model: the resolved config, the training dataset
(its data hash, suites, feedback models, counts), the training time and epochs, the held-out metrics of
``RUN/eval-test/metrics.json`` and, when present, the independent validations of ``RUN/validate-*/metrics.json``
and the post-hoc calibration (``galmass calibrate``), the galmass version and the sha256 of the shipped weights
(checked at every load). The weights file also carries a sample of the training labels, the prior
``galmass population`` re-weights, since the training dataset does not ship.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from galmass import __version__
from galmass.datasets.integrity import sha256_file
from galmass.models.io import ENSEMBLE_RECORD, ModelFileError, load_trained, training_summary
from galmass.pretrained import MODEL_DIR
from hpc.atomic import atomic_path, atomic_write_json

__all__ = ["ship_model", "build_card"]


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _test_summary(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    if metrics is None:
        return None
    return {"dataset_hash": metrics.get("data_hash"), "n_projections": metrics["n_projections"],
            "n_galaxies": metrics.get("n_galaxies"), "radii_factors": metrics["radii_factors"],
            "bias": metrics["cnn"]["bias"], "scatter": metrics["cnn"]["scatter"],
            "coverage_max_abs_error": metrics["coverage"]["max_abs_error"],
            "tarp_max_abs_error": metrics["tarp"]["max_abs_error"]}


def build_card(run_dir: Path, weights: Path, name: str) -> dict[str, Any]:
    """The model card of ``run_dir``'s best model (``weights`` is the file the card describes)."""
    model, cfg, blob = load_trained(run_dir)
    training, ensemble = training_summary(run_dir), _read_json(run_dir / ENSEMBLE_RECORD)
    if training is None and ensemble is not None:  # `galmass ensemble` of finished runs: their training, summed
        training = {"seconds": sum(m["training"]["seconds"] for m in ensemble["members"]),
                    "ensemble_of": ensemble["members"]}
    if training is None:
        raise ModelFileError(f"{run_dir}: no done.json, the run has not finished. HINT: finish training first")
    manifest = _read_json(Path(blob["data_path"]) / "manifest.json") or {}
    validations = {p.parent.name: p for p in sorted(run_dir.glob("validate-*/metrics.json"))}
    return {
        "name": name, "galmass_version": __version__, "shipped": dt.datetime.now(dt.timezone.utc).isoformat(),
        "weights_sha256": sha256_file(weights), "parameters": int(sum(p.numel() for p in model.parameters())),
        "config": blob["config"], "best_epoch": blob["epoch"], "best_val_nll": blob["val_nll"],
        "training": training,
        "dataset": {"data_hash": blob.get("data_hash"), "suites": manifest.get("suites"),
                    "feedbacks": manifest.get("feedbacks"), "counts": manifest.get("counts"),
                    "config": blob.get("data_config")},
        "calibration": blob.get("calibration"),  # `galmass calibrate`'s tempering, None for a model as trained
        "eval_test": _test_summary(_read_json(run_dir / "eval-test" / "metrics.json")),
        "validation": {k: json.loads(p.read_text()) for k, p in validations.items()},
    }


PRIOR_SAMPLE = 8192
"""Training labels a shipped model carries (0.3 MB): its prior, for ``galmass population`` without the dataset."""


def _with_prior_sample(run_dir: Path, which: str = "best") -> dict[str, Any]:
    """``RUN/<which>.pt``'s contents plus ``prior_labels``: a fixed random sample of its dataset's train-split
    labels."""
    from galmass.population import prior_labels

    model, cfg, blob = load_trained(run_dir, which=which)
    if blob.get("prior_labels") is None:
        labels, _ = prior_labels(run_dir, cfg, blob)  # refuses (by name) when the dataset is not found
        keep = np.sort(np.random.default_rng(0).choice(len(labels), min(PRIOR_SAMPLE, len(labels)), replace=False))
        blob["prior_labels"] = labels[keep].astype(np.float32)
    return blob


def ship_model(run_dir: str | Path, name: str, out_dir: Path = MODEL_DIR) -> Path:
    """Write ``RUN/best.pt`` with a sample of its training labels to ``out_dir/<name>.pt`` and ``<name>.card.json``;
    returns the card's path."""
    run_dir = Path(run_dir)
    weights = out_dir / f"{name}.pt"
    blob = _with_prior_sample(run_dir)
    with atomic_path(weights) as tmp:
        torch.save(blob, tmp)
    card = build_card(run_dir, weights, name)
    card["prior_sample"] = _prior_record(blob)  # training labels carried for `galmass population`
    return atomic_write_json(out_dir / f"{name}.card.json", card)


def attach_prior_sample(name: str, out_dir: Path = MODEL_DIR) -> Path:
    """Give a model shipped before the prior sample existed its ``prior_labels`` (from its training dataset, found
    and hash-checked as ``galmass evaluate`` finds it); the weights are unchanged, the card gets the new sha256 and
    the sample's record. Returns the card's path."""
    card = json.loads((out_dir / f"{name}.card.json").read_text())
    if sha256_file(out_dir / f"{name}.pt") != card["weights_sha256"]:
        raise ModelFileError(f"{out_dir / name}.pt does not match its card: not modified")
    blob = _with_prior_sample(out_dir, which=name)
    with atomic_path(out_dir / f"{name}.pt") as tmp:
        torch.save(blob, tmp)
    card.update(weights_sha256=sha256_file(out_dir / f"{name}.pt"), prior_sample=_prior_record(blob))
    return atomic_write_json(out_dir / f"{name}.card.json", card)


def _prior_record(blob: dict[str, Any]) -> dict[str, Any] | None:
    labels = blob.get("prior_labels")
    return None if labels is None else {"n_labels": int(len(labels)), "data_hash": blob.get("data_hash"),
                                        "split": "train", "seed": 0}
