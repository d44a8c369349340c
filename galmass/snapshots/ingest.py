"""``galmass ingest``: a Gadget/Arepo/GIZMO or tipsy snapshot → the same sharded dataset (schema, manifest) as the
mocks.

Steps (Gadget-4 / Arepo / GIZMO HDF5 conventions, Springel et al. 2021; Weinberger et al. 2020; tipsy through
pynbody, :mod:`galmass.snapshots.tipsy`):

1. read all particle types in physical units (:func:`galmass.snapshots.formats.load_snapshot` detects the format:
   :func:`galmass.snapshots.gadget.read_snapshot` or :func:`galmass.snapshots.tipsy.read_tipsy`);
2. centre: the given halo centre (in the snapshot's own units: ckpc/h for Gadget, as halo catalogues give it; code
   lengths for tipsy), a centre in physical kpc (e.g. from an AHF catalogue, :mod:`galmass.snapshots.halos`),
   optionally refined by shrinking spheres started inside a given radius, or shrinking spheres (stopping at 1000
   particles) on the stars (on the dark matter when there are fewer than 100 stars); periodic boxes are unwrapped
   about the centre;
3. remove the bulk velocity: the mass-weighted mean velocity of the stars within 3 stellar half-mass radii;
4. R200 where the mean enclosed density (all types) is 200 rho_crit(a) of the snapshot's cosmology; stars and gas
   beyond R200 are dropped; stars with formation time <= 0 (wind particles) are not stars;
5. truth: M(<r) of all particle types (:class:`galmass.snapshots.centring.EnclosedMass`) on the shared log-r grid;
6. convergence radius r_conv of the high-resolution dark matter (Power et al. 2003,
   :func:`galmass.snapshots.convergence.power_radius`): labels at f R_h < r_conv are flagged in the shard's
   ``meta/label_valid`` (training and evaluation leave them out by default); r_conv is in the manifest's
   ``source.convergence_radius_kpc``;
7. observe with the mocks' own code (:func:`galmass.mocks.observe.observe_particles`, cfg.projections lines of
   sight, log-uniform in data.n_stars stars each drawn from the star particles, errors, contamination, gas beam) and
   write one shard (split 'test') plus a manifest that :func:`galmass.datasets.reader.load_manifest` validates.

Star particles are drawn with equal probability (number-weighted, like the equal-mass mock stars), not weighted by
mass or luminosity.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from galmass.config import DataConfig
from galmass.physics.constants import LOG_R_GRID
from galmass.snapshots.centring import (
    EnclosedMass,
    bulk_velocity,
    r200_from_particles,
    rho_crit,
    shrinking_sphere_centre,
)
from galmass.snapshots.convergence import power_radius
from galmass.snapshots.formats import LoadedSnapshot, load_snapshot
from galmass.snapshots.gadget import Snapshot, SnapshotError
from galmass.snapshots.tipsy import TipsyUnits

__all__ = ["ingest_snapshot", "parse_centre", "ingest_rng", "prepare_snapshot", "PreparedGalaxy", "INGEST_PARAMS",
           "label_validity"]

INGEST_PARAMS = ("centre_x_kpc", "centre_y_kpc", "centre_z_kpc", "bulk_vx_kms", "bulk_vy_kms", "bulk_vz_kms",
                 "r200_kpc", "m200_msun", "scale_factor", "hubble_h", "n_stars", "n_gas", "field_rh_kpc")
"""Names of the parameter vector stored for an ingested galaxy (``galaxies/params``)."""


def parse_centre(text: str) -> tuple[float, float, float]:
    """'x,y,z' → (x, y, z) floats (the snapshot's coordinate units: Gadget ckpc/h, tipsy code lengths)."""
    parts = [p for p in text.replace(" ", "").split(",") if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(np.isfinite(values)):
        raise ValueError(f"--centre must be three numbers x,y,z, got {text!r}. HINT: --centre 1234.5,2345.6,3456.7 "
                         "in the snapshot's units (Gadget: ckpc/h; tipsy: code lengths, box = 1)")
    return values  # type: ignore[return-value]


def ingest_rng(seed: int) -> np.random.Generator:
    """The generator of the observations of an ingested snapshot (depends on ``data.seed`` alone)."""
    return np.random.default_rng([seed, zlib.crc32(b"ingest")])


class PreparedGalaxy:
    """A centred, bulk-velocity-free snapshot galaxy: tracers inside R200 and the truth profile."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


def _periodic(d: np.ndarray, box_kpc: float) -> np.ndarray:
    """Separations d [kpc] to the nearest periodic image in a box of side ``box_kpc`` (0: not periodic)."""
    if box_kpc > 0:
        d = (d + 0.5 * box_kpc) % box_kpc - 0.5 * box_kpc
    return d


def _refine_centre(snap: Snapshot, is_star: np.ndarray, c: np.ndarray, radius_kpc: float) -> np.ndarray:
    """Shrinking spheres started at c [kpc] with radius [kpc] on the stars inside it (the dark matter when fewer
    than 100 stars are); c itself when fewer than 20 particles are inside."""
    stars = snap.types[4]
    bases = [(stars.pos[is_star], stars.mass[is_star])]
    if 1 in snap.types:
        bases.append((snap.types[1].pos, snap.types[1].mass))
    for k, (pos, mass) in enumerate(bases):
        d = _periodic(pos - c, snap.box_kpc)
        inside = np.sum(d * d, axis=1) <= radius_kpc * radius_kpc
        if np.count_nonzero(inside) >= 100 or (k == len(bases) - 1 and np.count_nonzero(inside) >= 20):
            d, m = d[inside], mass[inside]
            return c + shrinking_sphere_centre(d, m, start=np.zeros(3), r_start=radius_kpc,
                                               n_min=max(20, min(1000, len(m) // 5)))
    return c


def _find_centre(snap: Snapshot, is_star: np.ndarray, centre: tuple[float, float, float] | None,
                 centre_kpc: np.ndarray | None, refine_radius_kpc: float | None) -> np.ndarray:
    """The halo centre [physical kpc, box frame] (step 2 of the module docstring)."""
    stars = snap.types[4]
    if centre is not None:
        c = np.asarray(centre, dtype=np.float64) * snap.length_to_kpc
    elif centre_kpc is not None:
        c = np.asarray(centre_kpc, dtype=np.float64)
    else:
        base = (stars.pos[is_star], stars.mass[is_star])
        if np.count_nonzero(is_star) < 100 and 1 in snap.types:
            base = (snap.types[1].pos, snap.types[1].mass)
        # Stop at 1000 particles (or a fifth of them): the last sphere's centroid noise ~ r / sqrt(n) sets the
        # error, ~3 % of R_h for a Plummer sphere (measured in tests/test_snapshots.py).
        return shrinking_sphere_centre(*base, n_min=max(20, min(1000, len(base[1]) // 5)))
    return c if refine_radius_kpc is None else _refine_centre(snap, is_star, c, refine_radius_kpc)


def prepare_snapshot(
    path: str | Path,
    centre: tuple[float, float, float] | None = None,
    *,
    snapshot: Snapshot | None = None,
    centre_kpc: tuple[float, float, float] | None = None,
    refine_radius_kpc: float | None = None,
) -> PreparedGalaxy:
    """Steps 1–6 of the module docstring; returns a PreparedGalaxy (kpc, km/s, Msun; frame centred on the halo).

    ``snapshot`` reuses a snapshot already read (several haloes of one file); ``centre`` is in the file's units,
    ``centre_kpc`` in physical kpc (box frame); with ``refine_radius_kpc`` [kpc] either is the start of shrinking
    spheres of that radius. Attributes: ``pos_stars``, ``vel_stars``, ``gas`` ((pos, vel, mass) or None), ``mass``
    (EnclosedMass), ``centre_kpc``, ``bulk_kms``, ``r200``, ``m200``, ``r_conv`` (kpc, None without PartType1),
    ``snapshot`` (the Snapshot), ``field_rh_kpc``.
    """
    snap = load_snapshot(path).snapshot if snapshot is None else snapshot
    if 4 not in snap.types:
        raise SnapshotError(f"{path}: no stars (PartType4 is missing or empty). HINT: galmass needs a stellar "
                            "tracer")
    stars = snap.types[4]
    is_star = stars.formation_a > 0  # formation time <= 0 marks wind particles (Arepo/TNG), not stars
    if np.count_nonzero(is_star) < 3:
        raise SnapshotError(f"{path}: only {np.count_nonzero(is_star)} particles in PartType4 have "
                            "GFM_StellarFormationTime > 0 (the rest are wind particles); need >= 3 stars")
    c = _find_centre(snap, is_star, centre, centre_kpc, refine_radius_kpc)
    pos = {t: _periodic(p.pos - c, snap.box_kpc) for t, p in snap.types.items()}
    # Bulk velocity of the stars within 3 stellar half-mass radii.
    ps, ms = pos[4][is_star], stars.mass[is_star]
    rs = np.linalg.norm(ps, axis=1)
    order = np.argsort(rs)
    r_half = float(rs[order][np.searchsorted(np.cumsum(ms[order]), 0.5 * ms.sum())])
    bulk = bulk_velocity(ps, stars.vel[is_star], ms, 3.0 * r_half)
    radii = np.concatenate([np.linalg.norm(pos[t], axis=1) for t in snap.types])
    masses = np.concatenate([snap.types[t].mass for t in snap.types])
    rho_c = rho_crit(snap.a, snap.h, snap.omega_m, snap.omega_l)
    try:
        r200, m200 = r200_from_particles(radii, masses, rho_c)
    except ValueError as err:
        raise SnapshotError(f"{path}: {err}") from None
    in_s = is_star & (np.linalg.norm(pos[4], axis=1) < r200)
    pos_s, vel_s = pos[4][in_s], stars.vel[in_s] - bulk
    if len(pos_s) < 3:
        raise SnapshotError(f"{path}: fewer than 3 stars inside R200 = {r200:.3g} kpc of the centre {c} kpc. "
                            "HINT: check --centre (the snapshot's units: ckpc/h for Gadget, code lengths for tipsy)")
    gas = None
    if 0 in snap.types:
        in_g = np.linalg.norm(pos[0], axis=1) < r200
        if np.any(in_g):
            gas = (pos[0][in_g], snap.types[0].vel[in_g] - bulk, snap.types[0].mass[in_g])
    r_conv = power_radius(np.linalg.norm(pos[1], axis=1), snap.types[1].mass, rho_c) if 1 in snap.types else None
    return PreparedGalaxy(
        pos_stars=pos_s, vel_stars=vel_s, gas=gas, mass=EnclosedMass(radii, masses), centre_kpc=c, bulk_kms=bulk,
        r200=r200, m200=m200, r_conv=r_conv, snapshot=snap,
        field_rh_kpc=float(np.median(np.hypot(pos_s[:, 0], pos_s[:, 1]))),
    )


def label_validity(scalars: np.ndarray, r_conv_kpc: float | None) -> np.ndarray:
    """``meta/label_valid`` [P, 10] uint8: 1 where the label radius f R_h [kpc] (R_h of each projection, from the
    ``log10_rh_kpc`` scalar) is at or beyond the convergence radius; all 1 when r_conv is unknown (None)."""
    from galmass.datasets.schema import scalar_index
    from galmass.physics.constants import RADII_FACTORS

    rh = 10.0 ** np.asarray(scalars, dtype=np.float64)[:, scalar_index("log10_rh_kpc")]
    if r_conv_kpc is None:
        return np.ones((len(rh), len(RADII_FACTORS)), dtype=np.uint8)
    return (np.asarray(RADII_FACTORS)[None, :] * rh[:, None] >= r_conv_kpc).astype(np.uint8)


def _source(path: str | Path, loaded: LoadedSnapshot, g: PreparedGalaxy, centre_given: bool, n_flagged: int,
            extra: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest's ``source`` block: provenance, halo, convergence."""
    from galmass.datasets.integrity import sha256_file

    source = {
        "snapshot": str(Path(path).resolve()),
        "format": loaded.fmt,
        "units_from": loaded.units_from,
        "files": [{"file": str(f.resolve()), "sha256": sha256_file(f)} for f in loaded.files],
        "scale_factor": g.snapshot.a,
        "hubble_h": g.snapshot.h,
        "centre_kpc": [float(x) for x in g.centre_kpc],
        "centre_given": centre_given,
        "bulk_velocity_kms": [float(x) for x in g.bulk_kms],
        "r200_kpc": g.r200,
        "m200_msun": g.m200,
        "convergence_radius_kpc": None if g.r_conv is None else float(g.r_conv),
        "convergence": {"criterion": "Power et al. 2003 (MNRAS 338, 14) eq. 20, kappa = 1",
                        "particles": "PartType1 (high-resolution dark matter)",
                        "labels_flagged": n_flagged},
        "n_particles": {f"PartType{t}": int(len(p.mass)) for t, p in g.snapshot.types.items()},
        "n_stars_used": int(len(g.pos_stars)),
    }
    return {**source, **(extra or {})}


def ingest_snapshot(
    path: str | Path,
    out: str | Path,
    cfg: DataConfig,
    centre: tuple[float, float, float] | None = None,
    *,
    paramfile: str | Path | None = None,
    tipsy_units: TipsyUnits | None = None,
    loaded: LoadedSnapshot | None = None,
    centre_kpc: tuple[float, float, float] | None = None,
    refine_radius_kpc: float | None = None,
    source_extra: dict[str, Any] | None = None,
) -> Path:
    """Turn one snapshot into a one-galaxy dataset in ``out`` (one shard, split 'test'); returns the manifest path.

    Parameters
    ----------
    path : str or Path
        Snapshot file (HDF5 or tipsy, detected), ``snapdir_NNN`` directory, or its ``snap_NNN.0.hdf5``.
    out : str or Path
        Output dataset directory (must not hold a dataset yet).
    cfg : DataConfig
        Observation and map settings (projections, n_stars, v_err_kms, npix, extent_rh, vmax_sigma,
        contamination, gas beam, dtype, seed). Mock-population keys (suites, star_pool, ...) are ignored.
    centre : (x, y, z), optional
        Halo centre in the snapshot's coordinate units (Gadget: ckpc/h; tipsy: code lengths); default: shrinking
        spheres.
    paramfile, tipsy_units : optional
        A tipsy file's units: its run's ``.param`` file, or explicit :class:`TipsyUnits`.
    loaded : LoadedSnapshot, optional
        The snapshot already read (several haloes of one file); ``path`` then only names it.
    centre_kpc, refine_radius_kpc : optional
        Centre in physical kpc (box frame) and the radius [kpc] of shrinking spheres started there.
    source_extra : dict, optional
        More entries for the manifest's ``source`` (e.g. the halo catalogue entry).

    Raises
    ------
    SnapshotError
        A missing field, inconsistent units or counts (the message names the field), or no galaxy at the centre.
    FileExistsError
        ``out`` already holds a manifest.
    """
    from galmass.config import data_hash, data_identity
    from galmass.datasets.schema import MANIFEST, shard_name
    from galmass.datasets.writer import shard_entry, write_manifest, write_shard_file
    from galmass.mocks.observe import observe_particles

    out = Path(out)
    if (out / MANIFEST).exists():
        raise FileExistsError(f"{out / MANIFEST} exists. HINT: choose another --out, or delete that directory")
    loaded = load_snapshot(path, paramfile=paramfile, tipsy_units=tipsy_units) if loaded is None else loaded
    g = prepare_snapshot(path, centre, snapshot=loaded.snapshot, centre_kpc=centre_kpc,
                         refine_radius_kpc=refine_radius_kpc)
    obs = observe_particles(g.pos_stars, g.vel_stars, g.gas, g.mass, cfg, ingest_rng(cfg.seed),
                            field_rh_kpc=g.field_rh_kpc)
    obs["galaxy_id"] = np.zeros(len(obs["labels"]), dtype=np.int64)
    obs["label_valid"] = label_validity(obs["scalars"], g.r_conv)
    params = np.array([*g.centre_kpc, *g.bulk_kms, g.r200, g.m200, g.snapshot.a, g.snapshot.h, len(g.pos_stars),
                       0 if g.gas is None else len(g.gas[0]), g.field_rh_kpc], dtype=np.float64)
    log_mass = np.log10(g.mass(np.asarray(LOG_R_GRID)))
    out.mkdir(parents=True, exist_ok=True)
    shard, h = out / shard_name(0), data_hash(cfg)
    write_shard_file(shard, obs, [(0, log_mass, params)], list(INGEST_PARAMS), suite="snapshot", feedback="unknown",
                     split="test", config_hash=h, dtype=cfg.dtype)
    entry = shard_entry(shard, len(obs["labels"]), split="test", suite="snapshot", feedback="unknown",
                        galaxy_ids=[0], config_hash=h)
    source = _source(path, loaded, g, centre is not None or centre_kpc is not None,
                     int(obs["label_valid"].size - obs["label_valid"].sum()), source_extra)
    # Normalisation from this galaxy's own projections (a trained model uses the statistics of its training set).
    write_manifest(out, [entry], created_by="galmass ingest", config=data_identity(cfg), config_hash=h,
                   npix=cfg.npix, extent_rh=cfg.extent_rh, vmax_sigma=cfg.vmax_sigma, seed=cfg.seed,
                   normalise_split="test", suites=["snapshot"], feedbacks=["unknown"], source=source)
    json.loads((out / MANIFEST).read_text())  # written atomically; read back to fail here, not later
    return out / MANIFEST
