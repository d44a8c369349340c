"""Sharded HDF5 datasets: writer (``galmass mock``), reader with checksum validation, schema."""

from galmass.datasets.reader import DatasetError, ShardedDataset, TruthProfiles, load_manifest, verify_shards
from galmass.datasets.schema import MAP_KEYS, SAMPLE_KEYS, SCALAR_NAMES, tracer_keys

__all__ = [
    "DatasetError",
    "ShardedDataset",
    "TruthProfiles",
    "load_manifest",
    "verify_shards",
    "MAP_KEYS",
    "SAMPLE_KEYS",
    "SCALAR_NAMES",
    "tracer_keys",
]
