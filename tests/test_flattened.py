"""Flattened (oblate) stellar systems: galmass's axisymmetric Jeans solution and sampled stars against jampy.

jampy (Cappellari's JAM; Cappellari 2008, 2020) solves the same cylindrically aligned Jeans equations by a
different method: Multi-Gaussian Expansions (fitted here with mgefit) of the tracer and of the total mass, and
analytic/quadrature integrals over them. galmass solves them on a (ln R, ln z) grid. Checks: the intrinsic
sigma_R^2, sigma_z^2, <v_phi^2> within 1 %; the sampled stars' sigma_los along the projected major and minor axes at
two inclinations within 2 % of jampy's projected second moment; the projected shape; the recipe flags.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from galmass.config import ConfigError
from galmass.mocks.galaxy import _spherical_density, axisymmetric_solution, draw_galaxy, sample_stars
from galmass.mocks.projection import project
from galmass.mocks.suites import load_feedback, load_suite

jam = pytest.importorskip("jampy", reason="the 'jam' extra (jampy, mgefit) is installed by .ci/run")
mge_fit_1d = pytest.importorskip("mgefit.mge_fit_1d").mge_fit_1d

PC_PER_ARCSEC_DISTANCE_MPC = 648000.0 / np.pi / 1e6
"""Distance [Mpc] at which 1 arcsec is 1 pc: jampy's angular inputs are then in pc."""


def _galaxy(suite: str, feedback: str, seed: int, q: float, beta_z: float, **shape):
    g = draw_galaxy(load_suite(suite), load_feedback(feedback), seed)
    return dataclasses.replace(g, flattened=True, flat_q=q, flat_beta_z=beta_z, bvh=False, equilibrium_df=False,
                               **shape)


def _mge(profile, lo_kpc: float, hi_kpc: float) -> tuple[np.ndarray, np.ndarray]:
    """Spherical MGE of a 3-D density: peak densities [per pc^3] and dispersions [pc]."""
    r = np.geomspace(lo_kpc, hi_kpc, 300)
    fit = mge_fit_1d(r * 1e3, profile(r), ngauss=20, quiet=True, plot=False)
    total, sigma = fit.sol
    return total / (np.sqrt(2.0 * np.pi) * sigma), sigma


def _jam_inputs(g):
    """MGEs of the galaxy's spherical tracer profile and of its total mass density [Msun/pc^3]."""
    a = g.a
    dens_lum, sig_lum = _mge(lambda r: _spherical_density(g)(r) * 1e-9, 1e-3 * a, 1e2 * a)

    def rho(r):  # dM/dr / (4 pi r^2), in Msun / pc^3
        h = 1e-4
        return (g.mass(r * (1 + h)) - g.mass(r * (1 - h))) / (2 * h * r * 1e3) / (4 * np.pi * (r * 1e3) ** 2)

    dens_pot, sig_pot = _mge(rho, 1e-3 * a, 1e2 * a)
    return dens_lum, sig_lum, dens_pot, sig_pot


CASES = [("compact", "cusp", 3, 0.5, 0.0, {}), ("median", "core", 5, 0.7, 0.25, {}),
         ("extended", "zhao", 7, 0.6, 0.1, {"light_beta": 4.0, "light_gamma": 0.3})]


@pytest.mark.parametrize("suite,feedback,seed,q,beta_z,shape", CASES)
def test_intrinsic_moments_match_jampy(suite, feedback, seed, q, beta_z, shape):
    g = _galaxy(suite, feedback, seed, q, beta_z, **shape)
    sol = axisymmetric_solution(g)
    dens_lum, sig_lum, dens_pot, sig_pot = _jam_inputs(g)
    rng = np.random.default_rng(0)
    R = g.a * np.exp(rng.uniform(np.log(0.05), np.log(4.0), 40))
    z = g.a * np.exp(rng.uniform(np.log(0.01), np.log(3.0), 40))
    ref = jam.axi.intr(dens_lum / q, sig_lum, np.full_like(sig_lum, q), dens_pot, sig_pot, np.ones_like(sig_pot),
                       0.0, R * 1e3, z * 1e3, align="cyl", beta=np.full_like(sig_lum, beta_z), ml=1, plot=False,
                       quiet=True, epsrel=1e-4, interp=False)
    s2R, s2z, _, v2phi = ref.model
    np.testing.assert_allclose(sol.sigma_z2(R, z), s2z, rtol=0.01)
    np.testing.assert_allclose(sol.sigma_R2(R, z), s2R, rtol=0.01)
    np.testing.assert_allclose(sol.v_phi2(R, z), v2phi, rtol=0.01)


@pytest.mark.parametrize("inc_deg", [90.0, 55.0])
def test_sampled_sigma_los_matches_jampy_projection(inc_deg):
    q, beta_z = 0.55, 0.2
    g = _galaxy("median", "core", 11, q, beta_z)
    pos, vel = sample_stars(g, 1_000_000, np.random.default_rng(1))  # ~0.4 % noise on sigma_los per bin
    inc = np.radians(inc_deg)
    # los at angle inc from the symmetry axis: the sky x axis is then the projected major axis and y the projected
    # symmetry axis (projection_basis), jampy's convention.
    x, y, v = project(pos, vel, np.array([np.sin(inc), 0.0, np.cos(inc)]))
    qobs = np.sqrt((q * np.sin(inc)) ** 2 + np.cos(inc) ** 2)
    dens_lum, sig_lum, dens_pot, sig_pot = _jam_inputs(g)
    surf_lum = dens_lum * np.sqrt(2 * np.pi) * sig_lum * q / qobs  # Cappellari 2020, eq. 38
    surf_pot = dens_pot * np.sqrt(2 * np.pi) * sig_pot
    a, half, rng = g.a, 0.2 * g.a, np.random.default_rng(2)
    ratios = []
    for axis in ("major", "minor"):
        along, across = (np.abs(x), np.abs(y) / qobs) if axis == "major" else (np.abs(y) / qobs, np.abs(x))
        for lo, hi in ((0.15, 0.45), (0.45, 0.9), (0.9, 1.8)):
            sel = np.flatnonzero((across < half) & (along >= lo * a) & (along < hi * a))
            assert len(sel) > 30_000
            # jampy at 300 of the bin's stars, without its polar-grid interpolation (worth ~1 % at 55 deg): the
            # bin mean of V_rms^2 over a random subset is good to ~0.1 % (V_rms^2 varies by a few % in a bin).
            sub = rng.choice(sel, 300, replace=False)
            ref = jam.axi.proj(surf_lum, sig_lum, np.full_like(sig_lum, qobs), surf_pot, sig_pot,
                               np.ones_like(sig_pot), inc_deg, 0.0, PC_PER_ARCSEC_DISTANCE_MPC, x[sub] * 1e3,
                               y[sub] * 1e3, align="cyl", beta=np.full_like(sig_lum, beta_z), ml=1, plot=False,
                               quiet=True, moment="zz", epsrel=1e-3, interp=False)
            ratios.append(np.sqrt(np.mean(v[sel] ** 2) / np.mean(ref.model**2)))
    np.testing.assert_allclose(ratios, 1.0, atol=0.02)
    # And the flattening matters here: edge-on, sigma_los differs between the axes by more than the tolerance.
    if inc_deg == 90.0:
        sph = dataclasses.replace(g, flattened=False, om=False, beta=0.0)
        _, vel_s = sample_stars(sph, 400_000, np.random.default_rng(1))
        assert abs(np.std(v) / np.std(vel_s[:, 0]) - 1.0) > 0.02


def test_projected_shape_is_the_intrinsic_axis_ratio_edge_on():
    g = _galaxy("compact", "core", 2, 0.6, 0.0)
    pos, vel = sample_stars(g, 200_000, np.random.default_rng(3))
    x, y, _ = project(pos, vel, np.array([1.0, 0.0, 0.0]))
    assert np.median(np.abs(y)) / np.median(np.abs(x)) == pytest.approx(0.6, abs=0.01)


def test_flattened_fraction_picks_galaxies_from_their_own_seed_child():
    # df_fraction = 1: a flattened galaxy never takes DF velocities (no spherical DF for it), the others still can
    base = dataclasses.replace(load_suite("median"), flattened_fraction=0.0, df_fraction=1.0)
    on = dataclasses.replace(base, flattened_fraction=0.5, flattening_q_range=(0.5, 0.9))
    fb = load_feedback("cusp")
    drawn = [(draw_galaxy(base, fb, s), draw_galaxy(on, fb, s)) for s in range(60)]
    flat = [b for _, b in drawn if b.flattened]
    assert 15 <= len(flat) <= 45
    assert all(0.5 <= b.flat_q <= 0.9 and 0.0 <= b.flat_beta_z <= 0.3 for b in flat)
    assert not any(b.bvh or b.equilibrium_df for b in flat)
    # the others are exactly the galaxies drawn without the option
    assert all(a == b for a, b in drawn if not b.flattened)
    assert all(dataclasses.replace(b, flattened=False, flat_q=1.0, flat_beta_z=0.0, equilibrium_df=a.equilibrium_df)
               == a for a, b in drawn if b.flattened)
    assert any(a.equilibrium_df for a, b in drawn if b.flattened)  # the DF flag was really dropped for those


@pytest.mark.parametrize("bad", [{"flattened_fraction": 1.2}, {"flattening_q_range": (0.5, 1.2)},
                                 {"flattening_q_range": (0.0, 0.5)}, {"flattening_beta_z_range": (0.0, 1.0)}])
def test_bad_flattening_keys_are_refused(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        dataclasses.replace(load_suite("median"), **bad)


def test_recipes_flatten_a_fraction_and_flattened_galaxies_observe():
    from galmass.config import DataConfig
    from galmass.mocks.observe import observe_galaxy

    assert all(load_suite(name).flattened_fraction == 0.3 for name in ("compact", "median", "extended"))
    g = next(g for s in range(40) if (g := draw_galaxy(load_suite("median"), load_feedback("core"), s)).flattened)
    obs = observe_galaxy(g, DataConfig(projections=2, star_pool=3000, gas_cells=200), np.random.default_rng(0))
    assert obs["labels"].shape[0] == 2 and np.all(np.isfinite(obs["labels"]))
