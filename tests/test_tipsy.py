"""Tipsy (NIHAO) snapshots through pynbody, AHF multi-halo ingest and the Power et al. (2003) convergence radius.

mock galaxy → tipsy file + .param (pynbody) → `galmass ingest` → the same maps as the direct mock and as the HDF5
path.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

pytest.importorskip("pynbody", reason="tipsy support needs the 'sim' extra: pip install -e '.[sim]'")

from conftest import run_cmd  # noqa: E402
from galmass.datasets.reader import DatasetError, ShardedDataset, load_manifest  # noqa: E402
from galmass.mocks.galaxy import draw_galaxy  # noqa: E402
from galmass.mocks.suites import load_feedback, load_suite  # noqa: E402
from galmass.physics.constants import LOG_R_GRID, RADII_FACTORS  # noqa: E402
from galmass.snapshots import (  # noqa: E402
    SnapshotError,
    galaxy_particles,
    ingest_snapshot,
    read_tipsy,
    write_snapshot,
    write_tipsy,
)
from galmass.snapshots.gadget import Particles  # noqa: E402
from galmass.snapshots.halos import ingest_halos  # noqa: E402
from test_snapshots import (  # noqa: E402,F401  (galaxy, particles: the module-scoped fixtures, reused)
    A,
    BULK,
    CFG,
    H,
    LABEL_TOL_DEX,
    MAP_ATOL,
    MAP_KEYS,
    OBSERVE,
    OFFSET,
    _direct,
    _shard,
    galaxy,
    particles,
)

BOX_KPC = 20000.0 / H
"""dKpcUnit [comoving kpc]: the same box as tests/test_snapshots.py's HDF5 files (BoxSize 20000 ckpc/h)."""
FORM_A_TOL = 1e-4
"""tform is written as pynbody's age(a) [Gyr] and read back through a 600-point log-a table: 1e-5 measured."""
MASS_RTOL = 1e-7
"""Tipsy stores masses as float32 (relative rounding <= 6e-8); positions/velocities are float64 here."""


def _tipsy(tmp_path, parts, name="g5.00100", **kw):
    kw = {"a": A, "h": H, "length_kpc": BOX_KPC, "offset_kpc": tuple(OFFSET), "bulk_kms": tuple(BULK), **kw}
    return write_tipsy(tmp_path / "run" / name, parts, **kw)


def _small(parts, n=2000):
    return {t: Particles(p.pos[:n], p.vel[:n], p.mass[:n], None if p.formation_a is None else p.formation_a[:n])
            for t, p in parts.items()}


def test_tipsy_round_trip_equals_direct_mock_and_hdf5(tmp_path, galaxy, particles):
    snap_file, param = _tipsy(tmp_path, particles)
    snap = read_tipsy(snap_file)  # finds run/g5.param next to it
    assert snap.a == pytest.approx(A, rel=1e-12) and snap.h == pytest.approx(H, rel=1e-12)
    assert snap.length_to_kpc == pytest.approx(BOX_KPC * A, rel=1e-12) and snap.box_kpc == pytest.approx(BOX_KPC * A)
    assert {t: len(p.mass) for t, p in snap.types.items()} == {t: len(p.mass) for t, p in particles.items()}
    for t, p in particles.items():  # physical kpc, peculiar km/s, Msun; type 2 = the heavier dark matter
        np.testing.assert_allclose(snap.types[t].pos, p.pos + OFFSET, rtol=0, atol=1e-9)
        np.testing.assert_allclose(snap.types[t].vel, p.vel + BULK, rtol=0, atol=1e-9)
        np.testing.assert_allclose(snap.types[t].mass, p.mass, rtol=MASS_RTOL)
    form, got = particles[4].formation_a, snap.types[4].formation_a
    np.testing.assert_allclose(got[form > 0], form[form > 0], atol=FORM_A_TOL)
    assert np.all(got[form <= 0] <= 0)  # wind particles stay "not stars"

    centre = OFFSET / (BOX_KPC * A)  # tipsy code lengths (box = 1, origin at the box centre)
    out = tmp_path / "tipsy-ingested"
    run_cmd(["galmass", "ingest", "--snapshot", str(snap_file), "--out", str(out),
             "--centre", ",".join(f"{c:.17g}" for c in centre), *OBSERVE])
    manifest = load_manifest(out)
    src = manifest["source"]
    assert src["format"] == "tipsy" and src["units_from"] == str(param.resolve())
    assert [f["file"] for f in src["files"]] == [str(snap_file.resolve()), str(param.resolve())]
    np.testing.assert_allclose(src["centre_kpc"], OFFSET, rtol=1e-12)
    assert len(ShardedDataset(out, split="test", verify=True)) == CFG.projections

    hdf5 = write_snapshot(tmp_path / "snap_005.hdf5", particles, a=A, h=H, offset_kpc=tuple(OFFSET),
                          bulk_kms=tuple(BULK), box_ckpc_h=20000.0)[0]
    ingest_snapshot(hdf5, tmp_path / "hdf5-ingested", CFG, centre=tuple(OFFSET * H / A))
    got, ref, via_hdf5 = _shard(out), _direct(galaxy, particles), _shard(tmp_path / "hdf5-ingested")
    for key in MAP_KEYS:  # the same 1e-6 as the HDF5 round trip: float64 positions/velocities, float32 masses
        np.testing.assert_allclose(got[key], ref[key], atol=MAP_ATOL, rtol=0, err_msg=key)
        np.testing.assert_allclose(got[key], via_hdf5[key], atol=MAP_ATOL, rtol=0, err_msg=key)
    np.testing.assert_allclose(got["labels"], ref["labels"], atol=LABEL_TOL_DEX)  # particle noise of the DM
    np.testing.assert_allclose(got["labels"], via_hdf5["labels"], atol=1e-6)  # same particles: float32 masses only
    np.testing.assert_allclose(got["log_mass"], via_hdf5["log_mass"], atol=1e-6)
    with h5py.File(out / "shard-00000.h5") as a, h5py.File(tmp_path / "hdf5-ingested" / "shard-00000.h5") as b:
        np.testing.assert_array_equal(a["meta/label_valid"][:], b["meta/label_valid"][:])
    hsrc = json.loads((tmp_path / "hdf5-ingested" / "manifest.json").read_text())["source"]
    assert src["convergence_radius_kpc"] == pytest.approx(hsrc["convergence_radius_kpc"], rel=1e-6)


def test_float32_tipsy_as_simulations_write_it(tmp_path, particles):
    """Single-precision positions/velocities (most runs), with an explicit 'bDoublePos = 0' in the .param."""
    snap_file, param = _tipsy(tmp_path, _small(particles), double=False)
    param.write_text(param.read_text() + "bDoublePos = 0   # single precision\nbDoubleVel = 0\n")
    snap = read_tipsy(snap_file)
    # float32 in box units: |x| < L a / 2 = 11 400 kpc, so steps of 2^-24 x 11 400 kpc = 7e-4 kpc
    np.testing.assert_allclose(snap.types[4].pos, particles[4].pos[:2000] + OFFSET, rtol=0, atol=1e-3)
    np.testing.assert_allclose(snap.types[4].vel, particles[4].vel[:2000] + BULK, rtol=1e-6, atol=1e-4)


# -- several haloes: two mock galaxies in one tipsy snapshot and an AHF catalogue ---------------------------------

POS = {"A": np.array([-2000.0, 1000.0, 500.0]), "B": np.array([2500.0, -1500.0, -800.0])}  # [physical kpc]
AHF_ERR_KPC = np.array([0.3, -0.2, 0.1])
"""The catalogue centre of galaxy A is off by 0.37 kpc (~0.4 R_h): the shrinking spheres must remove it."""
CENTRE_TOL_RH = 0.1
"""3000 stars, spheres stop at 600 (~0.5 R_h): centroid noise ~0.5 R_h / sqrt(600) ~ 2 % R_h per axis."""
AHF_HEADER = ("#ID(1)\thostHalo(2)\tnumSubStruct(3)\tMvir(4)\tnpart(5)\tXc(6)\tYc(7)\tZc(8)\tVXc(9)\tVYc(10)\t"
              "VZc(11)\tRvir(12)\tRmax(13)\tr2(14)")


@pytest.fixture(scope="module")
def two_haloes(tmp_path_factory):
    """One tipsy snapshot with galaxies A (seed 5) and B (seed 6) of equal DM particle mass, and its AHF file."""
    gals = {"A": draw_galaxy(load_suite("median"), load_feedback("mild_core"), 5),
            "B": draw_galaxy(load_suite("median"), load_feedback("mild_core"), 6)}
    m_dm = float(gals["A"].dm_mass(gals["A"].r200)) / 20_000
    parts = {}
    for i, (key, g) in enumerate(gals.items()):
        n_dm = int(round(float(g.dm_mass(g.r200)) / m_dm))
        p = galaxy_particles(g, np.random.default_rng(10 + i), n_stars=3000, n_gas=300, n_dm=n_dm, n_lowres=0)
        p[1].mass[:] = m_dm  # one high-resolution particle mass, as in a zoom
        parts[key] = {t: Particles(q.pos + POS[key], q.vel, q.mass, q.formation_a) for t, q in p.items()}
    both = {t: Particles(*(np.concatenate([getattr(parts[k][t], f) for k in parts]) for f in ("pos", "vel", "mass")),
                         None if t != 4 else np.concatenate([parts[k][4].formation_a for k in parts]))
            for t in (0, 1, 4)}
    root = tmp_path_factory.mktemp("haloes")
    snap_file, _ = write_tipsy(root / "run" / "two.00100", both, a=A, h=H, length_kpc=BOX_KPC)
    rows = []
    for hid, (key, g) in enumerate(gals.items()):
        xc = (POS[key] + (AHF_ERR_KPC if key == "A" else 0) + 0.5 * BOX_KPC * A) * H / A  # AHF: [0, L) ckpc/h
        rows.append([hid, -1, 0, g.m200 * H, 10_000, *xc, 0, 0, 0, g.r200 * H / A, 10.0, 5.0])
    rows.append([2, -1, 0, 1e5, 20, *(np.full(3, 0.5 * BOX_KPC * H)), 0, 0, 0, 1.0, 0.5, 0.2])  # tiny, empty
    ahf = root / "two.z0.250.AHF_halos"
    ahf.write_text(AHF_HEADER + "\n" + "\n".join("\t".join(f"{v:.10g}" for v in r) for r in rows) + "\n")
    return {"snap": snap_file, "ahf": ahf, "gals": gals, "root": root}


def test_ahf_multi_halo_with_task_split(two_haloes):
    snap, ahf, gals, out = two_haloes["snap"], two_haloes["ahf"], two_haloes["gals"], two_haloes["root"] / "out"
    by_mass = sorted(gals, key=lambda k: -gals[k].m200)  # halo-0 is the more massive
    common = ["galmass", "ingest", "--snapshot", str(snap), "--halos", str(ahf), "--max-halos", "2", "--out",
              str(out), "--num-tasks", "2", *OBSERVE]
    run_cmd(common + ["--task-id", "0"])
    assert (out / "halo-0" / "manifest.json").exists() and not (out / "halo-1").exists()
    run_cmd(common + ["--task-id", "1"])
    assert (out / "halo-1" / "manifest.json").exists() and not (out / "halo-2").exists()  # --max-halos 2
    again = run_cmd(common + ["--task-id", "0"])
    assert "halo 0: skipped" in again.stdout
    for k, key in enumerate(by_mass):
        g, d = gals[key], out / f"halo-{k}"
        src = load_manifest(d)["source"]
        assert src["halo"]["k"] == k and src["halo"]["ahf_id"] == list(gals).index(key)
        err = np.linalg.norm(np.array(src["centre_kpc"]) - POS[key])
        assert err < CENTRE_TOL_RH * g.a, (key, err, g.a)
        assert len(ShardedDataset(d, split="test", verify=True)) == CFG.projections
        # The stored truth follows this galaxy's analytic profile where its particles resolve it.
        log_mass = _shard(d)["log_mass"]
        sel = (LOG_R_GRID > 5 * g.a) & (LOG_R_GRID < 0.5 * g.r200)
        np.testing.assert_allclose(log_mass[sel], np.log10(g.mass(LOG_R_GRID[sel])), atol=0.05, err_msg=key)


def test_centre_list_file(two_haloes):
    """A plain list of centres (tipsy code lengths) is used as given: the centre is exact."""
    halos = two_haloes["root"] / "centres.txt"
    halos.write_text("# x y z [box units]\n" + ", ".join(f"{c:.17g}" for c in POS["B"] / (BOX_KPC * A)) + "\n")
    out = two_haloes["root"] / "list-out"
    run_cmd(["galmass", "ingest", "--snapshot", str(two_haloes["snap"]), "--halos", str(halos), "--out", str(out),
             *OBSERVE])
    src = load_manifest(out / "halo-0")["source"]
    np.testing.assert_allclose(src["centre_kpc"], POS["B"], rtol=1e-12)
    assert src["halo"]["line"] == 2


def test_ahf_on_hdf5_snapshot(tmp_path, galaxy, particles):
    """Gadget coordinates are already in [0, L): the AHF centre (ckpc/h) is used without a shift."""
    (snap,) = write_snapshot(tmp_path / "snap_005.hdf5", _small(particles, 20_000), a=A, h=H,
                             offset_kpc=tuple(OFFSET), box_ckpc_h=20000.0)
    ahf = tmp_path / "snap_005.z0.250.AHF_halos"
    xc = (OFFSET + AHF_ERR_KPC) * H / A
    ahf.write_text(AHF_HEADER + "\n" + "\t".join(f"{v:.10g}" for v in [7, -1, 0, galaxy.m200 * H, 9000, *xc, 0, 0,
                                                                      0, galaxy.r200 * H / A, 10.0, 5.0]) + "\n")
    results = ingest_halos(snap, ahf, tmp_path / "out", CFG)
    assert [(k, status) for k, _, status in results] == [(0, "ingested")]
    src = load_manifest(tmp_path / "out" / "halo-0")["source"]
    assert src["format"] == "gadget" and src["halo"]["ahf_id"] == 7
    assert np.linalg.norm(np.array(src["centre_kpc"]) - OFFSET) < CENTRE_TOL_RH * galaxy.a


# -- errors name the file and the field ----------------------------------------------------------------------------

def _cli_error(args):
    proc = run_cmd(["galmass", "ingest", *args, *OBSERVE], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def test_missing_units_and_missing_stars(tmp_path, particles):
    small = _small(particles)
    (bare,) = _tipsy(tmp_path, small, paramfile=False)  # a snapshot whose .param file is lost
    err = _cli_error(["--snapshot", str(bare), "--out", str(tmp_path / "o")])
    assert str(bare) in err and ".param" in err and "dKpcUnit" in err and "--tipsy-units" in err
    # Explicit units make it readable.
    units = f"length_kpc={BOX_KPC!r},mass_msun=1e16,h={H},omega_m=0.3,omega_l=0.7"
    run_cmd(["galmass", "ingest", "--snapshot", str(bare), "--out", str(tmp_path / "o"), "--tipsy-units", units,
             "--centre", ",".join(f"{c:.17g}" for c in OFFSET / (BOX_KPC * A)), *OBSERVE])
    assert load_manifest(tmp_path / "o")["source"]["units_from"] == "explicit"
    # A .param file without the mass unit names it.
    param = tmp_path / "run" / "g5.param"
    param.write_text(f"dKpcUnit = {BOX_KPC}\ndHubble0 = 1.0\ndOmega0 = 0.3\ndLambda = 0.7\nbComove = 1\n")
    with pytest.raises(SnapshotError, match="'dMsolUnit'"):
        read_tipsy(bare)
    # No star family.
    (no_stars, _) = _tipsy(tmp_path / "dm", {t: p for t, p in small.items() if t != 4})
    err = _cli_error(["--snapshot", str(no_stars), "--out", str(tmp_path / "o2")])
    assert str(no_stars) in err and "no star family" in err and "nstar = 0" in err
    # A truncated file.
    cut = tmp_path / "run" / "g5.00200"
    cut.write_bytes(bare.read_bytes()[:-40])
    with pytest.raises(SnapshotError, match="truncated"):
        read_tipsy(cut)
    # Neither HDF5 nor tipsy.
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a snapshot at all, just some bytes")
    assert "neither an HDF5 file" in _cli_error(["--snapshot", str(junk), "--out", str(tmp_path / "o3")])


# -- convergence radius -------------------------------------------------------------------------------------------

def _power_radius_on_grid(radii, m_particle, rho_crit):
    """Independent evaluation: kappa(r) on a fine log grid (counting particles), r_conv = the first grid radius
    beyond which kappa >= 1 at every grid point (Power et al. 2003, eq. 20)."""
    r = np.geomspace(0.05, 50.0, 400_001)  # 7e-6 dex steps
    n = np.searchsorted(np.sort(radii), r, side="right").astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho_bar = n * m_particle / (4.0 / 3.0 * np.pi * r**3)
        kappa = np.where(n > 1, np.sqrt(200.0) / 8.0 * n / np.log(n) * np.sqrt(rho_crit / rho_bar), 0.0)
    bad = np.nonzero(kappa < 1.0)[0]
    return r[bad[-1] + 1]


def test_convergence_radius_flags_inner_labels(tmp_path, galaxy):
    parts = galaxy_particles(galaxy, np.random.default_rng(7), n_stars=3000, n_gas=300, n_dm=100_000, n_lowres=0)
    (snap,) = write_snapshot(tmp_path / "snap_lowres.hdf5", parts, a=A, h=H, offset_kpc=tuple(OFFSET),
                             box_ckpc_h=20000.0)
    out = tmp_path / "lowres"
    ingest_snapshot(snap, out, CFG, centre=tuple(OFFSET * H / A))
    src = load_manifest(out)["source"]
    # rho_crit(a) = 3 H(a)^2 / (8 pi G), H = 0.1 h E(a) km/s/kpc, G = 4.3009e-6 kpc (km/s)^2 / Msun.
    hubble = 0.1 * H * np.sqrt(0.3 / A**3 + 0.7)
    rho_c = 3.0 * hubble**2 / (8.0 * np.pi * 4.3009e-6)
    expect = _power_radius_on_grid(np.linalg.norm(parts[1].pos, axis=1), parts[1].mass[0], rho_c)
    assert src["convergence_radius_kpc"] == pytest.approx(expect, rel=1e-4)  # grid step 1.6e-5, G to 5e-6
    r_conv = src["convergence_radius_kpc"]
    with h5py.File(out / "shard-00000.h5") as fh:
        valid, rh = fh["meta/label_valid"][:], 10.0 ** fh["scalars"][:, 0].astype(np.float64)
    np.testing.assert_array_equal(valid, (RADII_FACTORS[None, :] * rh[:, None] >= r_conv).astype(np.uint8))
    assert valid[:, 0].sum() == 0 and valid[:, -1].sum() > 0, (r_conv, rh)  # inner flagged, outer kept
    assert src["convergence"]["labels_flagged"] == valid.size - valid.sum()
    # Training and evaluation read with valid_only=True: every sample here has a flagged label.
    with pytest.raises(DatasetError, match="label_valid"):
        ShardedDataset(out, split="test", valid_only=True)
    assert len(ShardedDataset(out, split="test")) == CFG.projections
