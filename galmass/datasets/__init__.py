"""Sharded HDF5 datasets: shard writer, reader with checksum validation, schema, integrity checks.

The dataset layer only reads and writes shards; what goes into them (mock generation) lives in
``galmass.mocks.generate`` and ``galmass.snapshots.ingest``. Attributes are imported lazily so that
``galmass.datasets.schema`` (names only) stays cheap to import from the config module.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DatasetError": "reader",
    "ShardedDataset": "reader",
    "TruthProfiles": "reader",
    "load_manifest": "reader",
    "verify_shards": "reader",
    "MAP_KEYS": "schema",
    "SAMPLE_KEYS": "schema",
    "SCALAR_NAMES": "schema",
    "OBSERVER_NAMES": "schema",
    "TRACER_MODES": "schema",
    "tracer_keys": "schema",
    "scalar_index": "schema",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'galmass.datasets' has no attribute {name!r}")
    return getattr(importlib.import_module(f"galmass.datasets.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
