"""Gadget / Arepo / GIZMO HDF5 snapshots: write (for mocks) and read (for ``galmass ingest``).

File layout (Springel 2005; Arepo, Weinberger et al. 2020; GIZMO, Hopkins 2015 all share it):

* ``Header`` attributes: ``NumPart_ThisFile``, ``NumPart_Total`` (+ ``NumPart_Total_HighWord``), ``MassTable``
  (6 masses; a non-zero entry replaces the ``Masses`` dataset of that type, as for dark matter ``MassTable[1]``),
  ``Time`` (scale factor a for cosmological runs), ``Redshift``, ``BoxSize``, ``HubbleParam`` (h), ``Omega0``,
  ``OmegaLambda``, ``NumFilesPerSnapshot``; optionally ``UnitLength_in_cm``, ``UnitMass_in_g``,
  ``UnitVelocity_in_cm_per_s`` (newer Arepo/TNG also under ``/Parameters``).
* ``PartType0`` gas, ``PartType1`` dark matter, ``PartType2`` low-resolution dark matter (zooms), ``PartType4``
  stars (``StellarFormationTime`` or Arepo's ``GFM_StellarFormationTime``; <= 0 marks wind particles, which are
  not stars), ``PartType5`` black holes; each with ``Coordinates``, ``Velocities``, ``Masses``, ``ParticleIDs``.
* Units (defaults when no unit attributes are present): ``Coordinates`` comoving kpc/h, ``Velocities`` km/s
  times sqrt(a) (the peculiar velocity is ``Velocities * sqrt(a)``), ``Masses`` 1e10 Msun/h.
* Multi-file snapshots: ``snapdir_NNN/snap_NNN.K.hdf5``, K = 0 .. NumFilesPerSnapshot - 1, each with its own
  ``NumPart_ThisFile``; ``NumPart_Total`` is the sum.

:func:`read_snapshot` converts everything to physical kpc, km/s (peculiar, no Hubble flow) and Msun and checks the
file: a missing required field or inconsistent units/counts raise :class:`SnapshotError` naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "SnapshotError",
    "Particles",
    "Snapshot",
    "write_snapshot",
    "read_snapshot",
    "snapshot_files",
    "KPC_CM",
    "MSUN_G",
    "PTYPE_NAMES",
]

KPC_CM = 3.085678e21
"""One kpc in cm (Gadget's default UnitLength_in_cm)."""
MSUN_G = 1.989e33
"""One solar mass in g (Gadget's default UnitMass_in_g is 1e10 of these)."""
PTYPE_NAMES = {0: "gas", 1: "dark matter", 2: "low-res dark matter", 3: "tracers/bulge", 4: "stars", 5: "black holes"}
_FORMATION_KEYS = ("GFM_StellarFormationTime", "StellarFormationTime")
_REQUIRED_HEADER = ("NumPart_ThisFile", "NumPart_Total", "MassTable", "Time", "HubbleParam", "NumFilesPerSnapshot")


class SnapshotError(ValueError):
    """A snapshot that lacks a required field or has inconsistent units or counts; the message names the field."""


@dataclass
class Particles:
    """One particle type in physical units."""

    pos: NDArray[np.float64]
    """Positions [kpc] (physical; still in the simulation frame, not centred)."""
    vel: NDArray[np.float64]
    """Peculiar velocities [km/s]."""
    mass: NDArray[np.float64]
    """Masses [Msun]."""
    formation_a: NDArray[np.float64] | None = None
    """Stars only: formation scale factor (<= 0: wind particle, not a star)."""


@dataclass
class Snapshot:
    """A whole snapshot in physical units, with the cosmology of its header."""

    a: float
    """Scale factor (``Header/Time``)."""
    h: float
    """Hubble parameter h (``Header/HubbleParam``)."""
    omega_m: float
    """Omega_matter (``Header/Omega0``)."""
    omega_l: float
    """Omega_Lambda (``Header/OmegaLambda``)."""
    box_kpc: float
    """Periodic box size [physical kpc] (0 when unknown or non-periodic)."""
    length_to_kpc: float
    """Factor turning the file's coordinates into physical kpc (a / h for ckpc/h)."""
    types: dict[int, Particles] = field(default_factory=dict)
    """Particle types present, by PartType number."""


def _unit_factor(name: str, value: float | None, default: float) -> float:
    if value is None:
        return 1.0
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise SnapshotError(f"Header/{name} = {value} is not a positive unit. HINT: Gadget's default is {default:g}")
    return value / default


def write_snapshot(
    path: str | Path,
    types: dict[int, Particles],
    *,
    a: float = 1.0,
    h: float = 0.7,
    omega_m: float = 0.3,
    omega_l: float = 0.7,
    box_ckpc_h: float = 0.0,
    offset_kpc: tuple[float, float, float] = (0.0, 0.0, 0.0),
    bulk_kms: tuple[float, float, float] = (0.0, 0.0, 0.0),
    n_files: int = 1,
    dm_in_masstable: bool = True,
    dtype: str = "float64",
    formation_key: str = "GFM_StellarFormationTime",
    snapnum: int = 0,
) -> list[Path]:
    """Write particles as a Gadget/Arepo-layout HDF5 snapshot in cosmological units.

    Parameters
    ----------
    path : str or Path
        For ``n_files == 1`` the file to write (e.g. ``snap_000.hdf5``); for ``n_files > 1`` the directory
        ``snapdir_NNN`` that receives ``snap_NNN.K.hdf5`` (NNN = ``snapnum``).
    types : dict {PartType: Particles}
        Physical positions [kpc] relative to the galaxy, velocities [km/s], masses [Msun]; stars may carry
        ``formation_a``. Dark matter (type 1) must be equal-mass when ``dm_in_masstable``.
    a, h, omega_m, omega_l : float
        Scale factor, Hubble parameter and density parameters written to the header.
    box_ckpc_h : float
        ``Header/BoxSize`` [ckpc/h] (0: non-periodic).
    offset_kpc, bulk_kms : 3-tuples
        The galaxy is placed at ``offset_kpc`` [physical kpc] moving with ``bulk_kms`` [km/s], so that a reader
        must find the centre and remove the bulk motion.
    n_files : int
        Number of files; particles of each type are split into contiguous, nearly equal chunks.
    dm_in_masstable : bool
        Store the dark-matter particle mass in ``MassTable[1]`` and omit ``PartType1/Masses`` (as Gadget does).
    dtype : 'float32' or 'float64'
        Storage type of coordinates and velocities (many simulations store float32).
    formation_key : str
        Name of the stellar formation-time dataset (Arepo: GFM_StellarFormationTime, Gadget/GIZMO:
        StellarFormationTime).
    snapnum : int
        Snapshot number used in the file names.

    Returns
    -------
    list of Path
        The files written.
    """
    if not 0 < a <= 1 or not h > 0:
        raise ValueError(f"need 0 < a <= 1 and h > 0, got a={a}, h={h}. HINT: a = 1/(1+z)")
    if n_files < 1:
        raise ValueError(f"n_files must be >= 1, got {n_files}")
    if formation_key not in _FORMATION_KEYS:
        raise ValueError(f"formation_key must be one of {_FORMATION_KEYS}, got {formation_key!r}")
    path = Path(path)
    counts = np.zeros(6, dtype=np.int64)
    mass_table = np.zeros(6, dtype=np.float64)
    for t, p in types.items():
        if not 0 <= t <= 5:
            raise ValueError(f"particle type must be 0..5, got {t}")
        counts[t] = len(p.pos)
    if dm_in_masstable and 1 in types and counts[1]:
        m1 = np.unique(types[1].mass)
        if m1.size != 1:
            raise ValueError("dm_in_masstable needs equal-mass dark matter (PartType1). HINT: use PartType2 for "
                             "particles of other masses, or dm_in_masstable=False")
        mass_table[1] = m1[0] * h / 1e10
    length = h / a  # physical kpc -> ckpc/h
    if n_files == 1:
        files = [path]
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        path.mkdir(parents=True, exist_ok=True)
        files = [path / f"snap_{snapnum:03d}.{k}.hdf5" for k in range(n_files)]
    bounds = {t: np.linspace(0, counts[t], n_files + 1).astype(np.int64) for t in types}
    next_id = 1
    ids = {}
    for t in sorted(types):
        ids[t] = np.arange(next_id, next_id + counts[t], dtype=np.uint64)
        next_id += counts[t]
    for k, fname in enumerate(files):
        this = np.zeros(6, dtype=np.int64)
        for t in types:
            this[t] = bounds[t][k + 1] - bounds[t][k]
        with h5py.File(fname, "w") as fh:
            hd = fh.create_group("Header")
            hd.attrs["NumPart_ThisFile"] = this.astype(np.uint32)
            hd.attrs["NumPart_Total"] = (counts & 0xFFFFFFFF).astype(np.uint32)
            hd.attrs["NumPart_Total_HighWord"] = (counts >> 32).astype(np.uint32)
            hd.attrs["MassTable"] = mass_table
            hd.attrs["Time"] = float(a)
            hd.attrs["Redshift"] = 1.0 / float(a) - 1.0
            hd.attrs["BoxSize"] = float(box_ckpc_h)
            hd.attrs["HubbleParam"] = float(h)
            hd.attrs["Omega0"] = float(omega_m)
            hd.attrs["OmegaLambda"] = float(omega_l)
            hd.attrs["NumFilesPerSnapshot"] = np.int32(n_files)
            hd.attrs["Flag_DoublePrecision"] = np.int32(dtype == "float64")
            for t, p in types.items():
                lo, hi = bounds[t][k], bounds[t][k + 1]
                g = fh.create_group(f"PartType{t}")
                pos = (np.asarray(p.pos[lo:hi]) + np.asarray(offset_kpc)) * length
                vel = (np.asarray(p.vel[lo:hi]) + np.asarray(bulk_kms)) / np.sqrt(a)
                g.create_dataset("Coordinates", data=pos.astype(dtype))
                g.create_dataset("Velocities", data=vel.astype(dtype))
                g.create_dataset("ParticleIDs", data=ids[t][lo:hi])
                if not (t == 1 and mass_table[1] > 0):
                    g.create_dataset("Masses", data=(np.asarray(p.mass[lo:hi]) * h / 1e10).astype(dtype))
                if t == 4 and p.formation_a is not None:
                    g.create_dataset(formation_key, data=np.asarray(p.formation_a[lo:hi]).astype(dtype))
    return files


def snapshot_files(path: str | Path) -> list[Path]:
    """The files of a snapshot given as one file, a ``snapdir_NNN`` directory or its ``snap_NNN.0.hdf5``."""
    path = Path(path)
    if path.is_dir():
        firsts = sorted(path.glob("*.0.hdf5"))
        if len(firsts) != 1:
            raise SnapshotError(f"{path}: expected exactly one '*.0.hdf5' file in the snapshot directory, found "
                                f"{[f.name for f in firsts]}. HINT: pass the file snap_NNN.0.hdf5 itself")
        path = firsts[0]
    if not path.is_file():
        raise SnapshotError(f"{path}: no such snapshot file")
    m = re.match(r"^(.*)\.(\d+)\.hdf5$", path.name)
    try:
        with h5py.File(path, "r") as fh:
            if "Header" not in fh:
                raise SnapshotError(f"{path}: missing group 'Header'. HINT: not a Gadget/Arepo/GIZMO snapshot?")
            n_files = fh["Header"].attrs.get("NumFilesPerSnapshot")
    except OSError as err:
        raise SnapshotError(f"{path}: not a readable HDF5 file ({err})") from None
    if n_files is None:
        raise SnapshotError(f"{path}: missing field 'Header/NumFilesPerSnapshot'")
    n_files = int(n_files)
    if n_files == 1:
        return [path]
    if m is None:
        raise SnapshotError(f"{path}: Header/NumFilesPerSnapshot = {n_files} but the name is not snap_NNN.K.hdf5. "
                            "HINT: keep the multi-file names as the simulation wrote them")
    files = [path.with_name(f"{m.group(1)}.{k}.hdf5") for k in range(n_files)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise SnapshotError(f"{path.parent}: Header/NumFilesPerSnapshot = {n_files} but files {missing} are missing")
    return files


def _header(fh: h5py.File, fname: Path) -> dict:
    if "Header" not in fh:
        raise SnapshotError(f"{fname}: missing group 'Header'")
    hd = dict(fh["Header"].attrs)
    for key in _REQUIRED_HEADER:
        if key not in hd:
            raise SnapshotError(f"{fname}: missing field 'Header/{key}'")
    if "Parameters" in fh:  # newer Arepo/TNG keep units and cosmology here
        for key, value in fh["Parameters"].attrs.items():
            hd.setdefault(key, value)
    return hd


def read_snapshot(path: str | Path, types: tuple[int, ...] = (0, 1, 2, 3, 4, 5)) -> Snapshot:
    """Read a (single- or multi-file) snapshot into physical units, checking fields, counts and units.

    Parameters
    ----------
    path : str or Path
        ``snap_NNN.hdf5``, a ``snapdir_NNN`` directory or ``snapdir_NNN/snap_NNN.0.hdf5``.
    types : tuple of int
        Particle types to read (absent ones are skipped).

    Returns
    -------
    Snapshot
        Physical kpc, km/s (peculiar), Msun; stars keep their formation scale factor.

    Raises
    ------
    SnapshotError
        Missing group/field/file, or counts, units or cosmology that contradict each other; the message names the
        field (e.g. ``PartType1/Masses``, ``Header/Redshift``).
    """
    files = snapshot_files(path)
    with h5py.File(files[0], "r") as fh:
        hd = _header(fh, files[0])
    a, h = float(hd["Time"]), float(hd["HubbleParam"])
    if not (np.isfinite(h) and h > 0):
        raise SnapshotError(f"{files[0]}: Header/HubbleParam = {h} must be > 0")
    if not (np.isfinite(a) and 0 < a <= 1.0 + 1e-9):
        raise SnapshotError(f"{files[0]}: Header/Time = {a} is not a scale factor in (0, 1]. HINT: non-cosmological "
                            "runs (Time = physical time) are not supported")
    if "Redshift" in hd and abs(float(hd["Redshift"]) - (1.0 / a - 1.0)) > 1e-4 * (1.0 + 1.0 / a):
        raise SnapshotError(f"{files[0]}: Header/Redshift = {float(hd['Redshift'])} contradicts Header/Time = {a} "
                            f"(expected z = 1/a - 1 = {1 / a - 1:.6g})")
    # Unit attributes, when present, rescale the defaults (kpc, km/s, 1e10 Msun, all in h-scaled comoving units).
    u_len = _unit_factor("UnitLength_in_cm", hd.get("UnitLength_in_cm"), KPC_CM)
    u_vel = _unit_factor("UnitVelocity_in_cm_per_s", hd.get("UnitVelocity_in_cm_per_s"), 1e5)
    u_mass = _unit_factor("UnitMass_in_g", hd.get("UnitMass_in_g"), 1e10 * MSUN_G)
    length = u_len * a / h
    velocity = u_vel * np.sqrt(a)
    mass_unit = u_mass * 1e10 / h
    mass_table = np.asarray(hd["MassTable"], dtype=np.float64)
    totals = np.asarray(hd["NumPart_Total"], dtype=np.int64)
    if "NumPart_Total_HighWord" in hd:
        totals = totals + (np.asarray(hd["NumPart_Total_HighWord"], dtype=np.int64) << 32)
    if mass_table.shape != (6,) or totals.shape != (6,):
        raise SnapshotError(f"{files[0]}: Header/MassTable and Header/NumPart_Total must have 6 entries")
    chunks: dict[int, dict[str, list]] = {t: {"pos": [], "vel": [], "mass": [], "form": []} for t in types}
    seen = np.zeros(6, dtype=np.int64)
    for fname in files:
        with h5py.File(fname, "r") as fh:
            this = np.asarray(_header(fh, fname)["NumPart_ThisFile"], dtype=np.int64)
            seen += this
            for t in types:
                n = int(this[t])
                grp_name = f"PartType{t}"
                if n == 0:
                    continue
                if grp_name not in fh:
                    raise SnapshotError(f"{fname}: Header/NumPart_ThisFile[{t}] = {n} but group '{grp_name}' is "
                                        "missing")
                g = fh[grp_name]
                for key in ("Coordinates", "Velocities"):
                    if key not in g:
                        raise SnapshotError(f"{fname}: missing field '{grp_name}/{key}' ({PTYPE_NAMES[t]})")
                    if g[key].shape != (n, 3):
                        raise SnapshotError(f"{fname}: '{grp_name}/{key}' has shape {g[key].shape}, but "
                                            f"Header/NumPart_ThisFile[{t}] = {n} (expected ({n}, 3))")
                chunks[t]["pos"].append(g["Coordinates"][:].astype(np.float64) * length)
                chunks[t]["vel"].append(g["Velocities"][:].astype(np.float64) * velocity)
                if "Masses" in g:
                    if g["Masses"].shape != (n,):
                        raise SnapshotError(f"{fname}: '{grp_name}/Masses' has shape {g['Masses'].shape}, expected "
                                            f"({n},)")
                    chunks[t]["mass"].append(g["Masses"][:].astype(np.float64) * mass_unit)
                elif mass_table[t] > 0:
                    chunks[t]["mass"].append(np.full(n, mass_table[t] * mass_unit))
                else:
                    raise SnapshotError(f"{fname}: missing field '{grp_name}/Masses' and Header/MassTable[{t}] = 0 "
                                        f"({PTYPE_NAMES[t]} need a mass)")
                if t == 4:
                    key = next((k for k in _FORMATION_KEYS if k in g), None)
                    if key is None:
                        raise SnapshotError(f"{fname}: missing field '{grp_name}/GFM_StellarFormationTime' (or "
                                            "StellarFormationTime): needed to tell stars from wind particles")
                    chunks[t]["form"].append(g[key][:].astype(np.float64))
    bad = [t for t in range(6) if seen[t] != totals[t]]
    if bad:
        t = bad[0]
        raise SnapshotError(f"{files[0]}: Header/NumPart_Total[{t}] = {totals[t]} but the files hold {seen[t]} "
                            f"particles of type {t} (sum of NumPart_ThisFile). HINT: a file of the snapshot is missing "
                            "or truncated")
    snap = Snapshot(a=a, h=h, omega_m=float(hd.get("Omega0", 0.3)), omega_l=float(hd.get("OmegaLambda", 0.7)),
                    box_kpc=float(hd.get("BoxSize", 0.0)) * length, length_to_kpc=length)
    for t in types:
        c = chunks[t]
        if not c["pos"]:
            continue
        mass = np.concatenate(c["mass"])
        pos, vel = np.concatenate(c["pos"]), np.concatenate(c["vel"])
        for name, arr in (("Coordinates", pos), ("Velocities", vel), ("Masses", mass)):
            if not np.all(np.isfinite(arr)):
                raise SnapshotError(f"{files[0]}: 'PartType{t}/{name}' holds non-finite values")
        if np.any(mass <= 0):
            raise SnapshotError(f"{files[0]}: 'PartType{t}/Masses' holds non-positive masses")
        snap.types[t] = Particles(pos=pos, vel=vel, mass=mass,
                                  formation_a=np.concatenate(c["form"]) if c["form"] else None)
    return snap
