"""Stellar kinematics from equilibrium distribution functions (galpy, closed-form beta = -1/2) against the
independent Jeans projection integral: the check of the fast Jeans-Gaussian default (the fast path must match the DF path within 2 %)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sigma_los import binned_sigma_ratio

from galmass.mocks.galaxy import Galaxy
from galmass.physics.df import galpy_available, sample_df
from galmass.physics.profiles import plummer_projected_fraction
from galmass.physics.scaling import r200_from_m200

M200, C200 = 1e10, 15.0
R200 = float(r200_from_m200(M200))
N_STARS = 100_000

SIGMA_TOL = 0.02
"""Tolerance on sigma_los per radial bin (the issue's 2 %). With 10^5 stars and three stacked orthogonal
projections each bin between 0.25 and 3 R_h holds >= 2 x 10^4 star-projections, so the statistical error on sigma
is <= 1/sqrt(2 x 2e4 / 3) ~ 0.9 % even if the three projections were fully correlated: 2 % is > 2 standard errors of
the worst case and ~5 of the realistic one, yet far below the anisotropy signal (checked: the same stars fail the
isotropic integral)."""


def _galaxy(n_core: float, om: bool, beta: float, r_a_over_a: float = 1.5) -> Galaxy:
    a = 0.5
    return Galaxy(m200=M200, c200=C200, r200=R200, mstar=1e7, a=a, om=om, beta=beta, r_a=r_a_over_a * a, n=n_core,
                  r_c=1.75 * a, m_gas=2e7, r_d=0.8, sigma_gas=10.0, v_rad_frac=0.0, m2_frac=0.0, m2_phase=0.0,
                  m1_frac=0.0, m1_phase=0.0, disc_nx=0.0, disc_ny=0.0, disc_nz=1.0)


CASES = [
    # (halo core strength n, Osipkov-Merritt?, constant beta, engine)
    pytest.param(0.0, False, 0.0, id="cusp-isotropic-eddingtondf"),
    pytest.param(1.0, True, 0.0, id="core-radialOM-osipkovmerrittdf"),
    pytest.param(1.0, False, -0.5, id="core-tangential-beta-0.5"),
    pytest.param(0.0, False, -0.5, id="cusp-tangential-beta-0.5"),
]


@pytest.mark.parametrize("n_core,om,beta", CASES)
def test_df_sigma_los_matches_jeans_projection(n_core, om, beta):
    if not galpy_available():
        pytest.skip("galpy is not installed (pip install galpy)")
    g = _galaxy(n_core, om, beta)
    pos, vel = sample_df(g.mass, g.a, N_STARS, np.random.default_rng(11), beta=beta, r_a=g.r_a if om else None)
    assert pos.shape == vel.shape == (N_STARS, 3)
    ratio = binned_sigma_ratio(g, pos, vel)
    np.testing.assert_allclose(ratio, 1.0, atol=SIGMA_TOL)
    # The DF stars are a Plummer sphere: projected fractions inside 0.5, 1, 2 R_h (analytic R^2/(R^2+a^2)).
    R = np.hypot(pos[:, 0], pos[:, 1])
    for f in (0.5, 1.0, 2.0):
        expect = float(plummer_projected_fraction(f * g.a, g.a))
        assert np.mean(R < f * g.a) == pytest.approx(expect, abs=4 * np.sqrt(expect * (1 - expect) / N_STARS))
    if om or beta != 0.0:
        # The check can fail: the same anisotropic stars against the isotropic integral are off by > 3 x tolerance.
        iso = dataclasses.replace(g, om=False, beta=0.0)
        wrong = binned_sigma_ratio(g, pos, vel, reference=iso)
        assert np.max(np.abs(wrong - 1.0)) > 3 * SIGMA_TOL


def test_df_seeded_and_bad_input():
    g = _galaxy(0.0, False, -0.5)
    a = sample_df(g.mass, g.a, 1000, np.random.default_rng(3), beta=-0.5)
    b = sample_df(g.mass, g.a, 1000, np.random.default_rng(3), beta=-0.5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="not both"):
        sample_df(g.mass, g.a, 10, np.random.default_rng(0), beta=-0.2, r_a=1.0)
    with pytest.raises(ValueError, match="a must be > 0"):
        sample_df(g.mass, -1.0, 10, np.random.default_rng(0))


def _constant_beta_galaxy(beta: float, light_gamma: float):
    from galmass.mocks.galaxy import draw_galaxy
    from galmass.mocks.suites import load_feedback, load_suite

    g = draw_galaxy(load_suite("median"), load_feedback("core"), 7)
    return dataclasses.replace(g, bvh=False, flattened=False, om=False, equilibrium_df=False, beta=beta,
                               light_gamma=light_gamma)


@pytest.mark.parametrize("beta, light_gamma", [(-0.3, 0.0), (0.2, 0.8)])
def test_constant_beta_df_reproduces_the_jeans_dispersions_and_anisotropy(beta, light_gamma):
    """Cuddeford DF f = L^(-2 beta) f_E(E), inverted numerically, against the independent spherical Jeans integral of
    the same galaxy: sigma_r^2 within 3 % and the measured beta within 0.04 in four radial bins (200k stars)."""
    from galmass.mocks.galaxy import _random_unit_vector, _spherical_density, jeans_solution
    from galmass.physics.df import eddington_df

    g = _constant_beta_galaxy(beta, light_gamma)
    df = eddington_df(g.mass, _spherical_density(g), g.a, beta=beta)
    rng = np.random.default_rng(1)
    r = g.tracer.sample_radii(rng.random(200_000))
    rhat = _random_unit_vector(rng, r.size)
    v = df.velocities(r, rhat, rng)
    v_r = np.einsum("ij,ij->i", v, rhat)
    sol = jeans_solution(g)
    for lo, hi in ((0.3, 0.6), (0.6, 1.2), (1.2, 2.4), (2.4, 5.0)):
        m = (r > lo * g.a) & (r < hi * g.a)
        s_r2, s_t2 = np.mean(v_r[m] ** 2), 0.5 * np.mean(np.sum(v[m] ** 2, axis=1) - v_r[m] ** 2)
        assert s_r2 / np.mean(sol.sigma_r(r[m]) ** 2) == pytest.approx(1.0, abs=0.03), (lo, hi)
        assert 1.0 - s_t2 / s_r2 == pytest.approx(beta, abs=0.04), (lo, hi)


def test_constant_beta_df_limits_and_the_isotropic_case():
    """beta -> 0 of the general inversion is Eddington's to round-off; a radial beta in a cored light profile has no
    non-negative DF (An & Evans 2006) and is refused; |beta| >= 1/2 and beta with r_a are refused."""
    from galmass.mocks.galaxy import _spherical_density
    from galmass.physics import df as df_module

    g = _constant_beta_galaxy(0.0, 0.0)
    lnr = np.linspace(np.log(1e-5 * g.a), np.log(1e5 * g.a), 3000)
    psi, gr = df_module._relative_potential(g.mass, lnr)
    nu = _spherical_density(g)(np.exp(lnr))
    h = np.gradient(nu * np.gradient(np.log(nu), lnr) / -gr, lnr) / -gr
    j = np.arange(300, 2990, 3)[::-1]
    np.testing.assert_allclose(df_module._cuddeford_integral(psi, h, j, 0.0), df_module._eddington_integral(psi, h, j),
                               rtol=1e-12, atol=0.0)
    radial_in_core = _constant_beta_galaxy(0.3, 0.0)
    with pytest.raises(ValueError, match="constant-beta"):
        df_module.eddington_df(radial_in_core.mass, _spherical_density(radial_in_core), g.a, beta=0.3)
    for kwargs in ({"beta": 0.5}, {"beta": -0.6}, {"beta": 0.1, "r_a": 1.0}):
        with pytest.raises(ValueError, match="beta must lie"):
            df_module.eddington_df(g.mass, _spherical_density(g), g.a, **kwargs)


def test_df_constant_beta_suites_keep_beta_and_default_suites_are_unchanged():
    """With df_fraction 1 and df_constant_beta, constant-beta galaxies that have a DF draw from it with their own
    beta (the tangential ones always do in a cored light profile); without the flag they keep Gaussian velocities
    and every field equals the default draw."""
    from galmass.mocks.galaxy import draw_galaxy
    from galmass.mocks.suites import load_feedback, load_suite

    base = dataclasses.replace(load_suite("extended"), df_fraction=1.0, bvh_fraction=0.0, flattened_fraction=0.0,
                               om_fraction=0.0)
    flagged = dataclasses.replace(base, df_constant_beta=True)
    core = load_feedback("core")
    with_df = 0
    for seed in range(10):
        g, g_df = draw_galaxy(base, core, seed), draw_galaxy(flagged, core, seed)
        assert not g.equilibrium_df and dataclasses.replace(g_df, equilibrium_df=False) == g
        with_df += g_df.equilibrium_df and g_df.beta < 0
    assert with_df >= 5
