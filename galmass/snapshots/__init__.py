"""Simulation snapshots: Gadget/Arepo/GIZMO HDF5 and tipsy (pynbody) I/O, halo centring, convergence radius and
``galmass ingest`` (one halo, or many from a halo list)."""

from galmass.snapshots.centring import (
    EnclosedMass,
    bulk_velocity,
    r200_from_particles,
    rho_crit,
    shrinking_sphere_centre,
)
from galmass.snapshots.gadget import Particles, Snapshot, SnapshotError, read_snapshot, snapshot_files, write_snapshot
from galmass.snapshots.convergence import power_kappa, power_radius
from galmass.snapshots.formats import LoadedSnapshot, load_snapshot, snapshot_format
from galmass.snapshots.halos import ingest_halos, read_halo_list
from galmass.snapshots.ingest import ingest_rng, ingest_snapshot, parse_centre, prepare_snapshot
from galmass.snapshots.mock import galaxy_particles, sample_dm_positions
from galmass.snapshots.tipsy import TipsyUnits, parse_tipsy_units, read_tipsy, write_tipsy

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
    "power_kappa",
    "power_radius",
    "LoadedSnapshot",
    "load_snapshot",
    "snapshot_format",
    "ingest_halos",
    "read_halo_list",
    "TipsyUnits",
    "parse_tipsy_units",
    "read_tipsy",
    "write_tipsy",
]
