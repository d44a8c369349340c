"""``galmass ship RUN --name NAME``: put a finished run's model into the package with its model card.

The card records what a user needs to trust (or distrust) the model: the resolved config, the training dataset
(its data hash, suites, feedback models, counts), the training time and epochs, the held-out metrics of
``RUN/eval-test/metrics.json`` and, when present, the independent validations of ``RUN/validate-*/metrics.json``
and the post-hoc calibration (``galmass calibrate``), the galmass version and the sha256 of the shipped weights
(checked at every load).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

from galmass import __version__
from galmass.datasets.integrity import sha256_file
from galmass.models.combine import PROVENANCE
from galmass.models.io import ModelFileError, load_trained, training_summary
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
    training, ensemble = training_summary(run_dir), _read_json(run_dir / PROVENANCE)
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


def ship_model(run_dir: str | Path, name: str, out_dir: Path = MODEL_DIR) -> Path:
    """Copy ``RUN/best.pt`` to ``out_dir/<name>.pt`` and write ``<name>.card.json``; returns the card's path."""
    run_dir = Path(run_dir)
    weights = out_dir / f"{name}.pt"
    with atomic_path(weights) as tmp:
        shutil.copyfile(run_dir / "best.pt", tmp)
    card = build_card(run_dir, weights, name)
    return atomic_write_json(out_dir / f"{name}.card.json", card)
