"""Snapshot I/O and ingest: mock → Gadget/Arepo HDF5 → `galmass ingest` → the same maps as the direct mock."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest

from conftest import run_cmd
from galmass.config import load_config
from galmass.datasets.reader import ShardedDataset, load_manifest
from galmass.mocks.galaxy import draw_galaxy
from galmass.mocks.observe import observe_particles
from galmass.mocks.suites import load_feedback, load_suite
from galmass.physics.constants import LOG_R_GRID
from galmass.physics.profiles import plummer_surface_density
from galmass.snapshots import (
    SnapshotError,
    galaxy_particles,
    ingest_rng,
    ingest_snapshot,
    read_snapshot,
    write_snapshot,
)

H, A = 0.7, 0.8
OFFSET = np.array([5000.0, 3000.0, 7000.0])  # [physical kpc] where the galaxy sits in the box
BULK = np.array([100.0, -50.0, 30.0])  # [km/s]
# The observer's own centring and clipping are off so that ingest can be compared with the direct mock pixel by
# pixel (they act on star positions that differ by float32 rounding and the ingest centre).
# The footprint is made large and unbiased for the same reason (it is sized by each path's own R_h estimate).
OBSERVE = ["--data.projections=8", "--data.npix=32", "--data.seed=4", "--data.recentre=false",
           "--data.membership_clip=0", "--data.selection_fov_rh=[100,100]", "--data.selection_bias=[0,0]",
           "--data.n_stars=[100,100]"]
CFG = load_config(None, OBSERVE).data
MAP_KEYS = ("maps_stars", "maps_gas", "phase_stars", "phase_gas", "scalars")
MAP_ATOL = 1e-6
"""Round trip with the halo centre given and float64 coordinates: the maps must agree to float32 round-off. A
constant bulk velocity cancels exactly in every map (all velocities are relative to the stars' mean), and
positions go through x h / a + c and back, which moves them by ~1e-12 kpc."""
LABEL_TOL_DEX = 0.03
"""Labels of the direct mock use the analytic M(<r); those of the ingested snapshot count particles (2e5 dark
matter particles: ~1 % Poisson noise in M(<R_h)). 0.03 dex is ~5 standard errors."""


@pytest.fixture(scope="module")
def galaxy():
    return draw_galaxy(load_suite("median"), load_feedback("mild_core"), 5)


@pytest.fixture(scope="module")
def particles(galaxy):
    return galaxy_particles(galaxy, np.random.default_rng(1), n_stars=5000, n_gas=500, n_dm=200_000)


def _direct(galaxy, particles, cfg=CFG):
    s = particles[4]
    star = s.formation_a > 0
    gas = (particles[0].pos, particles[0].vel, particles[0].mass)
    return observe_particles(s.pos[star], s.vel[star], gas, galaxy.mass, cfg, ingest_rng(cfg.seed),
                             field_rh_kpc=galaxy.a)


def _write(tmp_path, particles, **kw):
    kw = {"a": A, "h": H, "offset_kpc": tuple(OFFSET), "bulk_kms": tuple(BULK), "box_ckpc_h": 20000.0, **kw}
    if kw.get("n_files", 1) > 1:
        return write_snapshot(tmp_path / "snapdir_005", particles, snapnum=5, **kw)
    return write_snapshot(tmp_path / "snap_005.hdf5", particles, **kw)


def _shard(out):
    with h5py.File(out / "shard-00000.h5", "r") as fh:
        return {k: fh[k][:] for k in MAP_KEYS + ("labels",)} | {"log_mass": fh["galaxies/log_mass"][0]}


def test_particles_match_analytic_profiles(galaxy):
    """M(<r) of the dark-matter particles and Sigma(R) of the star particles against the analytic profiles."""
    parts = galaxy_particles(galaxy, np.random.default_rng(2), n_stars=100_000, n_gas=100, n_dm=1_000_000, n_wind=0,
                             n_lowres=0)
    r = np.linalg.norm(parts[1].pos, axis=1)
    radii = np.array([1.0, 2.0, 4.0, 0.9 * galaxy.c200]) * galaxy.r200 / galaxy.c200  # r_s .. 0.9 R200: resolved
    m_particles = np.array([parts[1].mass[r < x].sum() for x in radii])
    counts = np.array([np.count_nonzero(r < x) for x in radii])
    assert counts.min() > 20_000
    # Tolerance 2 % or 3 Poisson standard errors (1/sqrt(N)), whichever is larger (2 % here: N > 22 500).
    tol = np.maximum(0.02, 3 / np.sqrt(counts))
    np.testing.assert_array_less(np.abs(m_particles / galaxy.dm_mass(radii) - 1), tol)
    assert m_particles.sum() > 0 and parts[1].mass.sum() == pytest.approx(galaxy.dm_mass(galaxy.r200), rel=1e-12)
    # 3-D star counts of the galaxy's own two-power light profile against its analytic enclosed fraction.
    r_star = np.linalg.norm(parts[4].pos, axis=1)
    r_test = galaxy.tracer.rh * np.array([0.3, 1.0, 3.0])
    got = np.array([np.count_nonzero(r_star < x) for x in r_test]) / len(r_star)
    np.testing.assert_allclose(got, galaxy.tracer.fraction(r_test), atol=4 / np.sqrt(len(r_star)))
    # Stellar surface density in annuli (projection along z) vs the Plummer formula integrated over each annulus,
    # on the same galaxy with Plummer light (an independent closed form).
    galaxy = dataclasses.replace(galaxy, light_beta=5.0, light_gamma=0.0)
    parts = galaxy_particles(galaxy, np.random.default_rng(3), n_stars=100_000, n_gas=100, n_dm=1000, n_wind=0,
                             n_lowres=0)
    pos = parts[4].pos
    R = np.hypot(pos[:, 0], pos[:, 1])
    edges = galaxy.a * np.array([0.1, 0.3, 0.6, 1.0, 1.5, 2.5])
    n_ann = np.histogram(R, edges)[0]
    frac = np.diff(edges**2 / (edges**2 + galaxy.a**2))  # analytic projected fraction per annulus
    expect = frac * len(R)
    assert n_ann.min() > 5000
    np.testing.assert_array_less(np.abs(n_ann / expect - 1), np.maximum(0.02, 4 / np.sqrt(n_ann)))
    # And the same via the surface density at the annulus mid-points (independent formula), coarser.
    mid = 0.5 * (edges[1:] + edges[:-1])
    sigma_est = n_ann / (np.pi * np.diff(edges**2)) / len(R)
    np.testing.assert_allclose(sigma_est, plummer_surface_density(mid, galaxy.a), rtol=0.1)


@pytest.mark.parametrize("n_files", [1, 3], ids=["single-file", "snapdir-3-files"])
def test_round_trip_maps_equal_direct_mock(tmp_path, galaxy, particles, n_files):
    files = _write(tmp_path, particles, n_files=n_files)
    assert len(files) == n_files
    with h5py.File(files[0], "r") as fh:  # Gadget layout and cosmological units
        hd = fh["Header"].attrs
        assert hd["Time"] == A and hd["HubbleParam"] == H and hd["NumFilesPerSnapshot"] == n_files
        assert hd["MassTable"][1] > 0 and "Masses" not in fh["PartType1"]
        assert {"PartType0", "PartType1", "PartType2", "PartType4"} <= set(fh)
        np.testing.assert_allclose(hd["MassTable"][1] * 1e10 / H, particles[1].mass[0], rtol=1e-12)
    total = sum(int(h5py.File(f, "r")["Header"].attrs["NumPart_ThisFile"][4]) for f in files)
    assert total == len(particles[4].pos)
    # The reader undoes the units: physical positions = file * a / h, velocities = file * sqrt(a).
    snap = read_snapshot(files[0] if n_files == 1 else tmp_path / "snapdir_005")
    np.testing.assert_allclose(snap.types[4].pos, particles[4].pos + OFFSET, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(snap.types[4].vel, particles[4].vel + BULK, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(snap.types[0].mass, particles[0].mass, rtol=1e-12)

    out = tmp_path / "ingested"
    centre = OFFSET * H / A  # halo catalogues give ckpc/h
    if n_files == 1:
        manifest_path = ingest_snapshot(files[0], out, CFG, centre=tuple(centre))
    else:  # through the command line, on the directory
        run_cmd(["galmass", "ingest", "--snapshot", str(tmp_path / "snapdir_005"), "--out", str(out),
                 "--centre", ",".join(f"{c:.17g}" for c in centre), *OBSERVE])
        manifest_path = out / "manifest.json"
    manifest = load_manifest(out)
    assert manifest["created_by"] == "galmass ingest" and manifest["counts"]["test"] == CFG.projections
    src = json.loads(manifest_path.read_text())["source"]
    assert src["n_particles"]["PartType2"] == 100 and src["n_stars_used"] == int((particles[4].formation_a > 0).sum())
    np.testing.assert_allclose(src["bulk_velocity_kms"], BULK, atol=1.0)  # mean of ~5000 stars: ~0.2 km/s noise
    ds = ShardedDataset(out, split="test", verify=True)
    assert len(ds) == CFG.projections

    got, ref = _shard(out), _direct(galaxy, particles)
    for key in MAP_KEYS:
        np.testing.assert_allclose(got[key], ref[key], atol=MAP_ATOL, rtol=0, err_msg=key)
    np.testing.assert_allclose(got["labels"], ref["labels"], atol=LABEL_TOL_DEX)
    # The stored truth profile matches the analytic one where particles resolve it (R_h .. R200/2).
    sel = (LOG_R_GRID > galaxy.a) & (LOG_R_GRID < 0.5 * galaxy.r200)
    np.testing.assert_allclose(got["log_mass"][sel], np.log10(galaxy.mass(LOG_R_GRID[sel])), atol=LABEL_TOL_DEX)


CENTRE_TOL_RH = 0.05
"""Shrinking spheres stop at 1000 stars (~0.3 R_h for a Plummer sphere of 5000): centroid noise ~0.3 R_h /
sqrt(1000) ~ 1 % of R_h per axis; 5 % of R_h allows for the (noisier) last steps."""


def test_shrinking_sphere_and_float32(tmp_path, galaxy, particles):
    files = _write(tmp_path, particles, dtype="float32", formation_key="StellarFormationTime")
    out = tmp_path / "ingested"
    ingest_snapshot(files[0], out, CFG)
    src = json.loads((out / "manifest.json").read_text())["source"]
    err = np.linalg.norm(np.array(src["centre_kpc"]) - OFFSET)
    assert err < CENTRE_TOL_RH * galaxy.a, err
    got, ref = _shard(out), _direct(galaxy, particles)
    # A centre off by ~1 % R_h moves a few stars across pixel edges: most pixels still agree exactly; the
    # scalars agree to a few per cent (the median radius of 100 stars jumps between neighbouring stars).
    same = np.mean(np.abs(got["maps_stars"][:, 0] - ref["maps_stars"][:, 0]) < 1e-6)
    assert same > 0.95, same
    np.testing.assert_allclose(got["scalars"][:, :2], ref["scalars"][:, :2], atol=0.02)


def _corrupt(path, action):
    with h5py.File(path, "r+") as fh:
        action(fh)


@pytest.mark.parametrize("action,field", [
    (lambda fh: (fh["Header"].attrs.__setitem__("MassTable", np.zeros(6))), "PartType1/Masses"),
    (lambda fh: fh["Header"].attrs.__setitem__("Redshift", 0.0), "Header/Redshift"),
    (lambda fh: fh["Header"].attrs.__delitem__("HubbleParam"), "Header/HubbleParam"),
    (lambda fh: fh["PartType4"].__delitem__("GFM_StellarFormationTime"), "PartType4/GFM_StellarFormationTime"),
    (lambda fh: fh["PartType0"].__delitem__("Velocities"), "PartType0/Velocities"),
    (lambda fh: fh["Header"].attrs.__setitem__("UnitLength_in_cm", -1.0), "Header/UnitLength_in_cm"),
    (lambda fh: fh["Header"].attrs.__setitem__("NumPart_Total", np.array([1, 2, 3, 4, 5, 6], np.uint32)),
     "Header/NumPart_Total"),
], ids=["no-dm-mass", "redshift-vs-time", "no-h", "no-formation-time", "no-gas-velocities", "bad-unit",
        "wrong-total"])
def test_bad_snapshot_names_the_field(tmp_path, particles, action, field):
    small = {t: type(p)(p.pos[:2000], p.vel[:2000], p.mass[:2000],
                        None if p.formation_a is None else p.formation_a[:2000]) for t, p in particles.items()}
    (f,) = _write(tmp_path, small)
    _corrupt(f, action)
    with pytest.raises(SnapshotError, match=field.replace("/", "/")):
        ingest_snapshot(f, tmp_path / "out", CFG)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_multi_file_missing_piece_and_cli_error(tmp_path, particles):
    small = {t: type(p)(p.pos[:900], p.vel[:900], p.mass[:900],
                        None if p.formation_a is None else p.formation_a[:900]) for t, p in particles.items()}
    files = _write(tmp_path, small, n_files=3)
    files[2].unlink()
    with pytest.raises(SnapshotError, match=r"snap_005\.2\.hdf5"):
        read_snapshot(files[0])
    proc = run_cmd(["galmass", "ingest", "--snapshot", str(files[0]), "--out", str(tmp_path / "o")], check=False)
    assert proc.returncode == 2 and "snap_005.2.hdf5" in proc.stderr and "Traceback" not in proc.stderr
