"""Which reader a snapshot needs: Gadget/Arepo/GIZMO HDF5 (:mod:`galmass.snapshots.gadget`) or tipsy
(:mod:`galmass.snapshots.tipsy`, through pynbody), detected from the file itself, never from its name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py

from galmass.snapshots.gadget import Snapshot, SnapshotError, read_snapshot, snapshot_files
from galmass.snapshots.tipsy import TipsyUnits, is_tipsy, read_tipsy, tipsy_paramfile

__all__ = ["snapshot_format", "load_snapshot", "LoadedSnapshot", "FORMATS"]

FORMATS = ("gadget", "tipsy")


@dataclass
class LoadedSnapshot:
    """A snapshot in physical units with where it came from."""

    snapshot: Snapshot
    files: list[Path]
    """Every file read (the snapshot's HDF5 files; a tipsy file and its ``.param``), for the manifest's sha256."""
    fmt: str
    """'gadget' (HDF5) or 'tipsy'."""
    units_from: str
    """Where the units came from: 'header' (HDF5), the ``.param`` path, or 'explicit' (--tipsy-units)."""


def snapshot_format(path: str | Path) -> str:
    """'gadget' for an HDF5 file or a ``snapdir_NNN`` directory, 'tipsy' for a file with a tipsy header.

    Raises SnapshotError for a missing path or a file that is neither.
    """
    path = Path(path)
    if path.is_dir():
        return "gadget"
    if not path.is_file():
        raise SnapshotError(f"{path}: no such snapshot file")
    if h5py.is_hdf5(path):
        return "gadget"
    if is_tipsy(path):
        return "tipsy"
    raise SnapshotError(f"{path}: neither an HDF5 file (Gadget/Arepo/GIZMO) nor a tipsy file (32-byte header with "
                        "ndim = 3 and nbodies = nsph + ndark + nstar). HINT: other formats can be converted with "
                        "pynbody, e.g. snap.write(fmt=pynbody.snapshot.tipsy.TipsySnap, filename=...)")


def load_snapshot(path: str | Path, *, paramfile: str | Path | None = None,
                  tipsy_units: TipsyUnits | None = None) -> LoadedSnapshot:
    """Detect the format and read the whole snapshot in physical kpc, km/s (peculiar), Msun.

    ``paramfile`` and ``tipsy_units`` give a tipsy file's units (its run's ``.param``; or explicit values); they
    are refused for HDF5 snapshots, whose units are in the header.
    """
    fmt = snapshot_format(path)
    if fmt == "gadget":
        if paramfile is not None or tipsy_units is not None:
            raise SnapshotError(f"{path}: --paramfile / --tipsy-units apply to tipsy files only; an HDF5 snapshot "
                                "carries its units in its header")
        files = snapshot_files(path)
        return LoadedSnapshot(read_snapshot(path), files, fmt, "header")
    snap = read_tipsy(path, paramfile=paramfile, units=tipsy_units)
    if tipsy_units is not None:
        return LoadedSnapshot(snap, [Path(path)], fmt, "explicit")
    param = tipsy_paramfile(path, paramfile)
    return LoadedSnapshot(snap, [Path(path), param], fmt, str(param.resolve()))
