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
