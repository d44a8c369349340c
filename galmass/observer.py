"""What the observer states about a sample: its unresolved-binary and foreground fractions (the ``observer`` input).

Unresolved binaries seen at one epoch and foreground stars both inflate the measured σ★. A model trained on a
range of both learns to discount the inflation it expects; told nothing, it discounts the training range's average,
which biases it low on a sample cleaned of both (multi-epoch velocities, proper-motion membership). A model with
``model.observer_inputs`` is instead conditioned on the fractions (``schema.OBSERVER_NAMES``), which every training
catalogue records as drawn (uniform in [0, ``data.binary_fraction``] and [0, ``data.contamination_fraction``]).

At prediction a stated fraction is fed as is; an unstated one is marginalised: the K realisations of a catalogue
each take a stratified draw from that same uniform range, and their pooled posterior is the training prior's
mixture over it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from galmass.datasets.schema import OBSERVER_NAMES

__all__ = ["OPTIONS", "training_range", "check_stated", "describe", "with_observer"]

OPTIONS = ("--binary-fraction", "--foreground-fraction")
"""predict's options for the two fractions, in ``OBSERVER_NAMES`` order."""


def training_range(dc: dict[str, Any]) -> np.ndarray:
    """Upper ends [2] of the fractions a model's training catalogues were drawn with (lower ends are 0)."""
    return np.array([float(dc.get("binary_fraction", 0.0)), float(dc.get("contamination_fraction", 0.0))])


def check_stated(stated: Sequence[float | None], dc: dict[str, Any], uses_observer: bool, model: str) -> list[str]:
    """Errors for stated fractions the model cannot take: outside [0, 1], outside the training range, or given to a
    model without the observer input (it would silently ignore them)."""
    given = [(opt, f) for opt, f in zip(OPTIONS, stated) if f is not None]
    if given and not uses_observer:
        return [f"{model} was not trained with model.observer_inputs, so it cannot take {', '.join(o for o, _ in given)}"
                f" (it marginalises over binary fractions 0–{training_range(dc)[0]:g} and foreground fractions "
                f"0–{training_range(dc)[1]:g}). HINT: drop the option, or use a model trained with observer inputs "
                "(the shipped `stars` model is)"]
    errors = []
    for (opt, f), hi in zip(zip(OPTIONS, stated), training_range(dc)):
        if f is None:
            continue
        if not 0.0 <= f <= 1.0:
            errors.append(f"{opt} {f:g} is not a fraction in [0, 1]")
        elif f > hi + 1e-9:
            errors.append(f"{opt} {f:g} lies above the training range [0, {hi:g}] (the posterior would be an "
                          "extrapolation)")
    return errors


def describe(stated: Sequence[float | None], dc: dict[str, Any]) -> dict[str, Any]:
    """What a posterior was conditioned on, for its JSON record: a stated value or the marginalised range."""
    return {name: f if f is not None else f"marginalised over [0, {hi:g}]"
            for name, f, hi in zip(OBSERVER_NAMES, stated, training_range(dc))}


def with_observer(samples: list[dict[str, Any]], stated: Sequence[float | None], dc: dict[str, Any], k: int,
                  rng: np.random.Generator) -> list[dict[str, Any]]:
    """The realisations ``samples`` of one catalogue, each with its ``observer`` input [2] (float32).

    Stated fractions are copied in. With an unstated one, a single realisation (nothing else uncertain) is
    repeated to ``k`` (the maps are shared, not copied), and realisation i draws that fraction in the i-th of
    ``len`` equal strata of its training range (stratified, so that a few realisations already cover it).
    """
    if all(f is not None for f in stated):
        fixed = np.asarray(stated, dtype=np.float32)
        return [{**s, "observer": fixed} for s in samples]
    out = samples if len(samples) > 1 else samples * k
    n, hi = len(out), training_range(dc)
    draws = np.empty((n, len(OBSERVER_NAMES)))
    for c, f in enumerate(stated):
        draws[:, c] = f if f is not None else hi[c] * (rng.permutation(n) + rng.random(n)) / n
    return [{**s, "observer": d.astype(np.float32)} for s, d in zip(out, draws)]
