"""What the observer states about a sample: its unresolved-binary and foreground fractions (the ``observer`` input).

Unresolved binaries seen at one epoch and foreground stars both inflate the measured σ★. A model trained on a
range of both learns to discount the inflation it expects. A model with ``model.observer_inputs`` is told the
fractions (``schema.OBSERVER_NAMES``), which every training catalogue records as drawn (uniform in
[0, ``data.binary_fraction``] and [0, ``data.contamination_fraction``]); each is hidden (NaN) for a share
``model.observer_hidden`` of the training catalogues, so the same network also learns the posterior without it.

At prediction a stated fraction is fed as is and an unstated one as NaN: the network's own marginal, which uses
what the data say about the fraction (e.g. binaries through the velocity tails). Averaging the conditional
posterior over the prior instead would ignore that (``benchmarks/results/observer_inputs.md``).
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
                f"0–{training_range(dc)[1]:g}). HINT: drop the option, or train a model with "
                "--model.observer_inputs=true (and data.vary_fractions)"]
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
    """What a posterior was conditioned on, for its JSON record: a stated value, or what was left out."""
    return {name: f if f is not None else f"not stated (the training range was [0, {hi:g}])"
            for name, f, hi in zip(OBSERVER_NAMES, stated, training_range(dc))}


def with_observer(samples: list[dict[str, Any]], stated: Sequence[float | None]) -> list[dict[str, Any]]:
    """The realisations ``samples`` of one catalogue, each with its ``observer`` input [2] (float32; NaN where
    the fraction is not stated). The maps are shared, not copied."""
    vec = np.array([np.nan if f is None else f for f in stated], dtype=np.float32)
    return [{**s, "observer": vec} for s in samples]
