"""The one rule for file names galmass derives from values (sweep cells and datasets, report figures)."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["slug"]


def slug(value: Any, empty: str = "x") -> str:
    """A file-name-safe form of a value: lists joined by ``,``; every run of characters other than letters, digits
    and ``. , = -`` becomes one ``_`` (so ``gas+stars`` → ``gas_stars``); ``empty`` when nothing is left."""
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return re.sub(r"[^A-Za-z0-9.,=-]+", "_", text).strip("_") or empty
