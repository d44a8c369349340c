"""Simulation snapshots: Gadget/Arepo/GIZMO HDF5 I/O, halo centring and ``galmass ingest``."""

from galmass.snapshots.centring import (
    EnclosedMass,
    bulk_velocity,
    r200_from_particles,
    rho_crit,
    shrinking_sphere_centre,
)
from galmass.snapshots.gadget import Particles, Snapshot, SnapshotError, read_snapshot, snapshot_files, write_snapshot
from galmass.snapshots.ingest import ingest_rng, ingest_snapshot, parse_centre, prepare_snapshot
from galmass.snapshots.mock import galaxy_particles, sample_dm_positions

__all__ = [
    "EnclosedMass",
    "bulk_velocity",
    "r200_from_particles",
    "rho_crit",
    "shrinking_sphere_centre",
    "Particles",
    "Snapshot",
    "SnapshotError",
    "read_snapshot",
    "snapshot_files",
    "write_snapshot",
    "ingest_rng",
    "ingest_snapshot",
    "parse_centre",
    "prepare_snapshot",
    "galaxy_particles",
    "sample_dm_positions",
]
