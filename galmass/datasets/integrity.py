"""Integrity of a dataset: file checksums, the config hash of a manifest, and the advice for a damaged shard.

Every shard and manifest records the :func:`galmass.config.data_hash` of the data section that made it; readers,
training and evaluation compare it with what they expect, so artefacts of two configs are never mixed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from galmass.config import data_hash

__all__ = ["sha256_file", "manifest_hash", "repair_hint"]


def sha256_file(path: str | Path, block: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def manifest_hash(manifest: dict[str, Any]) -> str:
    """The data hash a manifest records (computed from its stored config for manifests that predate the field)."""
    return str(manifest.get("config_hash") or data_hash(manifest["config"]))


def repair_hint(directory: str | Path, manifest: dict[str, Any]) -> str:
    """What the user should do about a missing or damaged shard of this dataset (depends on how it was made)."""
    if manifest.get("created_by") == "galmass mock":
        return (f"HINT: rerun `galmass mock` with the config that made it (data.path={directory}): it checks every "
                "shard against the manifest and regenerates damaged ones bit-identically")
    return (f"HINT: this dataset was made by `{manifest.get('created_by', 'unknown')}`; recreate it in a new "
            "directory from its source (see the manifest's 'source')")
