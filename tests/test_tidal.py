"""Tidally truncated haloes (SuiteSpec.tidal_fraction): the exponential taper against quadrature, the seed-child
choice, and equilibrium-DF velocities in a truncated potential against the spherical Jeans equation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.integrate import quad
from test_losvd import N_SE, N_STARS, SIGMA_TOL, binned_kurtosis

from galmass.config import ConfigError
from galmass.mocks.galaxy import draw_galaxy, jeans_solution, sample_stars
from galmass.mocks.suites import load_feedback, load_suite
from galmass.physics.jeans import projected_dispersion
from galmass.physics.profiles import exp_tapered_mass, nfw_mass, zhao_mass
from galmass.physics.scaling import r200_from_m200

M200, C200 = 1e9, 15.0
R200 = float(r200_from_m200(M200))


@pytest.mark.parametrize("shape", ["nfw", "zhao_core"])
@pytest.mark.parametrize("r_t", [0.3, 3.0])
def test_exp_tapered_mass_against_quadrature(shape, r_t):
    r_s = R200 / C200
    if shape == "nfw":
        rho = lambda t: 1.0 / ((t / r_s) * (1.0 + t / r_s) ** 2)
        mass = lambda r: nfw_mass(r, M200, C200, R200)
    else:  # Zhao (alpha, beta, gamma) = (1, 3, 0): a flat core, r_-2 = 2 r_s'
        r_s = R200 / C200 / 2.0
        rho = lambda t: (1.0 + t / r_s) ** -3.0
        mass = lambda r: zhao_mass(r, M200, C200, R200, 1.0, 3.0, 0.0)
    norm = float(mass(np.array([1.0]))[0]) / quad(lambda t: 4 * np.pi * t * t * rho(t), 0, 1.0, epsrel=1e-12)[0]
    radii = np.array([1e-3, 0.05, 0.3, 1.0, 5.0, 300.0])
    expect = [quad(lambda t: norm * 4 * np.pi * t * t * rho(t) * np.exp(-t / r_t), 0, r, epsrel=1e-11, limit=400,
                   points=[r_t] if r > r_t else None)[0] for r in radii]
    got = exp_tapered_mass(radii, mass, r_t)
    # 3e-5: zhao_mass itself is good to ~1e-5 at r << r_s (the taper's own quadrature to < 1e-5, NFW case)
    np.testing.assert_allclose(got, expect, rtol=1e-5 if shape == "nfw" else 3e-5)
    # never more than the isolated halo, converged far out, untouched for a taper far outside
    assert np.all(got <= mass(radii)) and got[-1] == pytest.approx(exp_tapered_mass(3e3, mass, r_t), rel=1e-9)
    np.testing.assert_allclose(exp_tapered_mass(radii[:4], mass, 1e7), mass(radii[:4]), rtol=1e-5)
    with pytest.raises(ValueError, match="r_t"):
        exp_tapered_mass(radii, mass, 0.0)


def test_tidal_fraction_picks_galaxies_from_their_own_seed_child():
    base = dataclasses.replace(load_suite("median"), tidal_fraction=0.0)
    on = dataclasses.replace(base, tidal_fraction=0.5, tidal_rt_over_rh_range=(3.0, 10.0))
    fb = load_feedback("core")
    drawn = [(draw_galaxy(base, fb, s), draw_galaxy(on, fb, s)) for s in range(60)]
    tidal = [(a, b) for a, b in drawn if b.tidal]
    assert 15 <= len(tidal) <= 45
    assert all(3.0 <= b.tidal_rt / b.a <= 10.0 for _, b in tidal)
    # the others are exactly the galaxies drawn without the option; the chosen ones differ only in the taper
    assert all(a == b for a, b in drawn if not b.tidal)
    assert all(dataclasses.replace(b, tidal=False, tidal_rt=0.0, equilibrium_df=a.equilibrium_df) == a
               for a, b in tidal)
    # the label (total mass) is the tapered one: equal deep inside, less beyond R_h, converged far out
    for a, b in tidal:
        r = np.array([1e-3, 1.8, 30.0, 300.0]) * b.a
        ma, mb = a.mass(r), b.mass(r)
        assert mb[0] == pytest.approx(ma[0], rel=1e-3) and mb[1] < ma[1] and mb[3] == pytest.approx(mb[2], rel=0.05)
        assert np.all(np.diff(b.log_mass_profile()) >= 0)


@pytest.mark.parametrize("bad", [{"tidal_fraction": -0.1}, {"tidal_fraction": 1.5},
                                 {"tidal_rt_over_rh_range": (10.0, 3.0)}, {"tidal_rt_over_rh_range": (0.0, 3.0)}])
def test_bad_tidal_keys_are_refused(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        dataclasses.replace(load_suite("median"), **bad)


def test_equilibrium_df_in_a_truncated_halo_matches_jeans():
    # Isotropic stars in a strongly truncated core halo (r_t = 3 R_h): the Eddington DF is built from the tapered
    # potential, the Jeans second and fourth moments from the tapered M(r); two independent routes must agree.
    suite = dataclasses.replace(load_suite("median"), tidal_fraction=1.0, tidal_rt_over_rh_range=(3.0, 3.0),
                                df_fraction=1.0, om_fraction=0.0, beta_range=(0.0, 0.0), flattened_fraction=0.0)
    g = next(g for s in range(40) if (g := draw_galaxy(suite, load_feedback("core"), s)).equilibrium_df)
    assert g.tidal and g.tidal_rt == pytest.approx(3.0 * g.a)
    pos, vel = sample_stars(g, N_STARS, np.random.default_rng(5))
    for kappa, se, expect, sigma_ratio in binned_kurtosis(g, pos, vel, np.array([0.25, 1.0, 3.0])):
        assert abs(kappa - expect) < N_SE * se and abs(sigma_ratio - 1.0) < SIGMA_TOL, (kappa, se, expect, sigma_ratio)
    # and the taper matters at this level: the untruncated halo's σ_los is > 5 % higher at 2.5 R_h
    R = np.array([2.5 * g.a])
    untruncated = dataclasses.replace(g, tidal=False, tidal_rt=0.0, equilibrium_df=False)
    s2_t, _ = projected_dispersion(R, jeans_solution(g), g.tracer.density)
    s2_u, _ = projected_dispersion(R, jeans_solution(untruncated), g.tracer.density)
    assert np.sqrt(s2_u / s2_t)[0] > 1.05
