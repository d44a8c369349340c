"""Deep ensembles from independently trained runs: ``galmass ensemble RUN RUN [...] --out DIR``.

A deep ensemble (Lakshminarayanan et al. 2017) is K networks trained from different initialisations and batch
orders; its posterior is their equal-weight mixture, wider where the members disagree, which is what keeps it
honest off the training distribution (Hermans et al. 2022). ``model.ensemble=K`` trains K members inside one run
on the same batches; this module assembles members trained as *separate* runs (say one SLURM array task per
``train.seed``, each as long as a single model) into one model file that ``predict``, ``evaluate``, ``validate``
and ``ship`` read like any other. Members must come from the same dataset (the normalisation and the label
whitening in their buffers are its statistics) and the same model section apart from ``ensemble``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from galmass.config import Config, config_to_dict
from galmass.datasets.integrity import sha256_file
from galmass.models.io import ENSEMBLE_RECORD, load_trained, save_model, training_summary
from galmass.models.network import MassPosterior
from hpc.atomic import atomic_write_json

__all__ = ["EnsembleError", "combine_runs"]

class EnsembleError(ValueError):
    """Runs that cannot form one ensemble; the message names the runs and what differs."""


def _model_section(cfg: Config) -> dict[str, Any]:
    return {k: v for k, v in config_to_dict(cfg)["model"].items() if k != "ensemble"}


def _check_members(runs: list[Path], loaded: list[tuple[MassPosterior, Config, dict[str, Any]]],
                   digests: list[str]) -> None:
    """None calibrated or adapted, same dataset (hence the same normalisation buffers), same model section (but
    ``ensemble``), no weights twice (``digests``: sha256 of each run's ``best.pt``)."""
    derived = [str(r) for r, (_, _, b) in zip(runs, loaded) if b.get("calibration") or b.get("population")]
    if derived:  # a merged model would silently drop the members' tempering or prior tilt
        raise EnsembleError(f"{derived}: calibrated (`galmass calibrate`) or adapted (`galmass population`); an "
                            "ensemble is calibrated and adapted as a whole. HINT: combine the runs they were made "
                            "from, then calibrate or adapt the ensemble")
    ref_run, (ref_model, ref_cfg, ref_blob) = runs[0], loaded[0]
    for run, (model, cfg, blob) in zip(runs[1:], loaded[1:]):
        if blob.get("data_hash") != ref_blob.get("data_hash"):
            raise EnsembleError(f"{run} was trained on dataset {blob.get('data_hash')}, {ref_run} on "
                                f"{ref_blob.get('data_hash')}: members must share the dataset (its normalisation "
                                "is in their weights). HINT: train every member on the same data.path")
        a, b = _model_section(ref_cfg), _model_section(cfg)
        diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        if diff:
            raise EnsembleError(f"{run} and {ref_run} differ in model.{', model.'.join(diff)} "
                                f"({[b.get(k) for k in diff]} vs {[a.get(k) for k in diff]}). HINT: members of "
                                "one ensemble differ only in train.seed (and the run directory)")
    for i, d in enumerate(digests):
        if d in digests[:i]:
            raise EnsembleError(f"{runs[i]} has the same weights as {runs[digests.index(d)]}: an ensemble of copies "
                                "is one model. HINT: train the members with different --train.seed")


def _merged_state(loaded: list[tuple[MassPosterior, Config, dict[str, Any]]]) -> dict[str, torch.Tensor]:
    """One state dict: the shared buffers of the first run, every run's members renumbered 0..K-1."""
    state, k = {}, 0
    for model, _, _ in loaded:
        for name, value in model.state_dict().items():
            if not name.startswith("members."):
                state.setdefault(name, value)
        for member in model.members:
            state.update({f"members.{k}.{n}": v for n, v in member.state_dict().items()})
            k += 1
    return state


def combine_runs(runs: list[str | Path], out: str | Path) -> Path:
    """Write ``out/best.pt`` (the members of ``runs`` as one mixture model) and ``out/ensemble.json``."""
    runs, out = [Path(r) for r in runs], Path(out)
    if len(runs) < 2:
        raise EnsembleError(f"an ensemble needs at least 2 runs, got {len(runs)}")
    if (out / "best.pt").exists():
        raise EnsembleError(f"{out / 'best.pt'} exists (a model is never overwritten). HINT: choose a new --out")
    trainings = [training_summary(r) for r in runs]
    unfinished = [str(r) for r, t in zip(runs, trainings) if t is None]
    if unfinished:
        raise EnsembleError(f"{unfinished}: no done.json, training has not finished. HINT: let every member finish "
                            "(rerun its `galmass train` to resume) before combining")
    loaded = [load_trained(r) for r in runs]
    digests = [sha256_file(r / "best.pt") for r in runs]
    _check_members(runs, loaded, digests)
    first_cfg, first = loaded[0][1], loaded[0][2]
    k = sum(len(m.members) for m, _, _ in loaded)
    cfg = dataclasses.replace(first_cfg, model=dataclasses.replace(first_cfg.model, ensemble=k),
                              train=dataclasses.replace(first_cfg.train, run_dir=str(out)))
    model = MassPosterior(cfg.model, int(first["npix"]), first["normalisation"], n_labels=len(first["radii_factors"]))
    model.load_state_dict(_merged_state(loaded))  # strict: the merged members fit a K-member model
    geometry = {key: first[key] for key in ("normalisation", "npix", "radii_factors", "extent_rh", "vmax_sigma")}
    out.mkdir(parents=True, exist_ok=True)
    save_model(out / "best.pt", model, cfg, {**geometry, "config": first["data_config"]},
               epoch=max(int(b["epoch"]) for _, _, b in loaded),  # the latest member's best epoch
               val_nll=None, data_hash=first["data_hash"], data_path=first["data_path"])
    members = [{"run": str(r.resolve()), "best_sha256": d, "train_seed": c.train.seed, "best_epoch": int(b["epoch"]),
                "best_val_nll": b["val_nll"], "members": len(m.members), "training": t}
               for r, d, t, (m, c, b) in zip(runs, digests, trainings, loaded)]
    return atomic_write_json(out / ENSEMBLE_RECORD,
                             {"members": members, "data_hash": first["data_hash"], "ensemble": k})
