"""Saving and loading trained models: what ``evaluate``, ``predict`` and the benchmarks need, without training.

A model file (``best.pt``/``last.pt`` of a run) is self-contained: weights, the resolved config, the training
set's normalisation and map geometry, and the identity of the dataset it was trained on (its ``data_hash`` and
absolute path), so a later step can refuse a dataset that is not the one the model expects.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from galmass.config import Config, ConfigError, build_dataclass, config_to_dict, load_config
from galmass.models.network import MassPosterior
from hpc.atomic import atomic_path

__all__ = ["to_torch", "build_model", "save_model", "load_trained", "training_summary", "ModelFileError"]


class ModelFileError(FileNotFoundError):
    """A run without a usable model file; the message names the file and what to do."""


def to_torch(batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch of numpy arrays as tensors on ``device``."""
    return {k: torch.as_tensor(v).to(device, non_blocking=True) for k, v in batch.items()}


def build_model(cfg: Config, manifest: dict[str, Any]) -> MassPosterior:
    """A freshly initialised model for a dataset manifest (weights depend on ``cfg.train.seed`` only)."""
    torch.manual_seed(cfg.train.seed)
    return MassPosterior(cfg.model, int(manifest["npix"]), manifest["normalisation"],
                         n_labels=len(manifest["radii_factors"]))


def save_model(path: str | Path, model: MassPosterior, cfg: Config, manifest: dict[str, Any], *, epoch: int,
               val_nll: float | None, data_hash: str, data_path: str | Path) -> None:
    """Write a self-contained model file atomically (weights, config, normalisation, dataset identity)."""
    blob = {"model": model.state_dict(), "config": config_to_dict(cfg), "normalisation": manifest["normalisation"],
            "npix": manifest["npix"], "radii_factors": manifest["radii_factors"], "epoch": epoch,
            "val_nll": val_nll, "extent_rh": manifest.get("extent_rh"), "vmax_sigma": manifest.get("vmax_sigma"),
            "data_config": manifest["config"], "data_hash": data_hash, "data_path": str(Path(data_path).resolve())}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


ENSEMBLE_RECORD = "ensemble.json"
"""Written next to a combined ``best.pt`` (``galmass ensemble``): the member runs, their weights' sha256, epochs
and training time."""
RUN_RECORDS = ("config.yaml", "done.json", ENSEMBLE_RECORD)
"""What a run derived from another with the same weights (calibrate, population) copies from it."""


def save_derived(run_dir: str | Path, out: str | Path, blob: dict[str, Any]) -> None:
    """A new run directory ``out`` for ``blob`` (the model file of ``run_dir`` with a post-hoc entry added) and
    the records of ``run_dir``; the caller has checked that ``out`` is new or empty."""
    run_dir, out = Path(run_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_RECORDS:
        if (run_dir / name).exists():
            shutil.copyfile(run_dir / name, out / name)
    with atomic_path(out / "best.pt") as tmp:
        torch.save(blob, tmp)


def load_trained(run_dir: str | Path, which: str = "best", map_location: str = "cpu"
                 ) -> tuple[MassPosterior, Config, dict[str, Any]]:
    """Model (eval mode), resolved config and the file's metadata of a trained run (``RUN/<which>.pt``).

    Raises
    ------
    ModelFileError
        No such file, or a file that does not load / does not fit its config (named, with a hint).
    """
    run_dir = Path(run_dir)
    path = run_dir / f"{which}.pt"
    if not path.exists():
        hint = "train it first (`galmass train`)" if not (run_dir / "config.yaml").exists() else \
            "the run has not finished an epoch yet; rerun `galmass train` with its config to resume"
        raise ModelFileError(f"{path} does not exist. HINT: {hint}")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=False)
        cfg = _config_of(run_dir, blob)
        model = MassPosterior(cfg.model, int(blob["npix"]), blob["normalisation"],
                              n_labels=len(blob["radii_factors"]))
        model.load_state_dict(blob["model"])
        if blob.get("calibration"):  # `galmass calibrate`: a tempering of the same weights
            model.temperature = tuple(float(v) for v in blob["calibration"]["temperature"])
            model.temper_min = float(blob["calibration"].get("min_scale", 0.0))
        if blob.get("population"):  # `galmass population`: a prior tilt over the same weights
            model.population = {k: torch.tensor(blob["population"]["tilt"][k], dtype=torch.float32)
                                for k in ("centre", "basis", "scale", "beta_draws", "log_z")}
    except ConfigError:
        raise
    except Exception as err:  # truncated file, foreign pickle, weights of another architecture
        msg = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        raise ModelFileError(f"{path}: cannot load the model ({msg}). HINT: the file is damaged or was written by "
                             "another config or galmass version; retrain into a new run directory") from None
    model.eval()
    return model, cfg, blob


def _config_of(run_dir: Path, blob: dict[str, Any]) -> Config:
    """The run's config: ``config.yaml`` when present, else the copy inside the model file (a shipped model)."""
    if (run_dir / "config.yaml").exists():
        return load_config(run_dir / "config.yaml")
    return build_dataclass(Config, blob["config"], f"{run_dir} (config stored in the model file)")


def training_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """A finished run's training (epochs run, early stop, seconds, ranks) from its ``done.json``; None if unfinished."""
    path = Path(run_dir) / "done.json"
    if not path.exists():
        return None
    done = json.loads(path.read_text())
    return {"epochs_run": done["epochs_run"], "stopped_early": done["stopped_early"],
            "seconds": sum(h["seconds"] for h in done["history"]), "world_size": done["world_size"]}
