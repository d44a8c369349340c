"""The shipped pretrained models: weights inside the package, each with a model card, checksummed.

``galmass predict --stars cat.csv`` without ``--run`` uses :func:`load_default`. A model is two files in this
directory: ``<name>.pt`` (a model file as training writes it: weights, config, normalisation, dataset identity)
and ``<name>.card.json`` (the model card: what it was trained on, how long, and how it scored, plus the sha256 of
the weights). Loading checks the weights against the card's checksum and refuses a mismatch, so a card never
describes other weights. ``galmass ship RUN --name NAME`` writes both from a finished run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from galmass.datasets.integrity import sha256_file
from galmass.models.io import ModelFileError, load_trained

__all__ = ["MODEL_DIR", "DEFAULT", "available", "model_card", "load_pretrained", "load_default"]

MODEL_DIR = Path(__file__).resolve().parent
DEFAULT = "stars"
"""The model ``predict`` uses without ``--run``."""


def available() -> list[str]:
    """Names of the shipped models (those with both weights and a card)."""
    return sorted(p.name[: -len(".card.json")] for p in MODEL_DIR.glob("*.card.json")
                  if (MODEL_DIR / f"{p.name[: -len('.card.json')]}.pt").exists())


def model_card(name: str = DEFAULT) -> dict[str, Any]:
    """The model card of a shipped model (raises ModelFileError if there is none)."""
    path = MODEL_DIR / f"{name}.card.json"
    if not path.exists():
        raise ModelFileError(f"no shipped model '{name}' ({path} is missing; shipped: {available() or 'none'}). "
                             "HINT: pass a trained run with --run, or train one with `galmass train --config "
                             "configs/production.yaml` and `galmass ship RUN`")
    return json.loads(path.read_text())


def load_pretrained(name: str = DEFAULT) -> tuple[Any, Any, dict[str, Any]]:
    """(model, config, model-file metadata) of a shipped model, after checking its weights against the card."""
    card = model_card(name)
    weights = MODEL_DIR / f"{name}.pt"
    digest = sha256_file(weights) if weights.exists() else "missing"
    if digest != card.get("weights_sha256"):
        raise ModelFileError(f"{weights}: sha256 {digest[:12]}… does not match its model card "
                             f"({str(card.get('weights_sha256'))[:12]}…): the weights and the card disagree. "
                             "HINT: reinstall galmass, or re-ship the model with `galmass ship`")
    model, cfg, blob = load_trained(MODEL_DIR, which=name)
    blob["card"] = card
    return model, cfg, blob


def load_default() -> tuple[Any, Any, dict[str, Any]]:
    """The default shipped model (:data:`DEFAULT`)."""
    return load_pretrained(DEFAULT)
