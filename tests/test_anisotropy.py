"""Baes & van Hese (2007, A&A 471, 419) anisotropy, beta(r) = (beta_0 + beta_inf x^delta) / (1 + x^delta),
x = r / r_a: its integrating factor, its constant-beta and Osipkov–Merritt limits, sigma_r against an independent
ODE solution of the Jeans equation, sampled stars against the projection integral, and how suites draw it.

The expected numbers come from this file's own formulae and scipy (quad, solve_ivp), never from the module.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.integrate import quad, solve_ivp
from sigma_los import binned_sigma_ratio

from galmass.config import ConfigError
from galmass.mocks.galaxy import Galaxy, draw_galaxy, jeans_solution, sample_stars
from galmass.mocks.suites import load_feedback, load_suite
from galmass.physics.constants import G
from galmass.physics.jeans import anisotropy, bvh_log_integrating_factor, projected_dispersion, solve_jeans
from galmass.physics.profiles import corenfw_mass, plummer_density, plummer_mass
from galmass.physics.scaling import r200_from_m200

M200, C200, A = 1e10, 15.0, 0.5
R200 = float(r200_from_m200(M200))
BVH = {"beta": -0.2, "beta_inf": 0.6, "r_a": 1.0 * A, "delta": 2.5}
"""The test galaxy's anisotropy: tangential centre, radial outskirts, turning over at R_h (r_a [kpc])."""


def beta_bvh(r: np.ndarray | float, beta0: float, beta_inf: float, r_a: float, delta: float) -> np.ndarray:
    """Baes & van Hese beta(r), written out as in the paper (r, r_a in kpc)."""
    x = (np.asarray(r, dtype=float) / r_a) ** delta
    return (beta0 + beta_inf * x) / (1.0 + x)


def mass(r: np.ndarray | float) -> np.ndarray:
    """coreNFW (n = 0.7) + Plummer stars [Msun], r [kpc]: the potential of the Jeans tests."""
    return corenfw_mass(r, M200, C200, R200, 1.75 * A, 0.7) + plummer_mass(r, A, 1e7)


def nu(r: np.ndarray | float) -> np.ndarray:
    return plummer_density(r, A)


def bvh_galaxy(**aniso: float) -> Galaxy:
    """A Plummer galaxy in a cored halo with a gas disc, Baes & van Hese anisotropy ``aniso`` (default BVH)."""
    p = {**BVH, **aniso}
    return Galaxy(m200=M200, c200=C200, r200=R200, mstar=1e7, a=A, om=False, beta=0.0, r_a=0.8 * A, n=1.0,
                  r_c=1.75 * A, m_gas=2e7, r_d=0.8, sigma_gas=10.0, v_rad_frac=0.0, m2_frac=0.0, m2_phase=0.0,
                  m1_frac=0.0, m1_phase=0.0, disc_nx=0.0, disc_ny=0.0, disc_nz=1.0, bvh=True,
                  bvh_beta0=p["beta"], bvh_beta_inf=p["beta_inf"], bvh_r_a=p["r_a"], bvh_delta=p["delta"])


# ------------------------------------------------------------------------------------------- (a) beta and ln f
@pytest.mark.parametrize("b0,binf,ra,delta", [(-0.2, 0.6, 0.5, 2.5), (0.3, -0.4, 2.0, 1.0), (0.0, 1.0, 0.1, 4.0)])
def test_integrating_factor_against_quadrature(b0, binf, ra, delta):
    """ln f(r) - ln f(r0) = int_r0^r 2 beta(s) / s ds, by scipy quad in ln s, over nine decades of r."""
    r = np.geomspace(1e-4, 1e5, 19) * ra
    r0 = ra
    np.testing.assert_allclose(anisotropy(r, b0, ra, binf, delta), beta_bvh(r, b0, binf, ra, delta),
                               rtol=0, atol=1e-13)
    ln_f = bvh_log_integrating_factor(r, b0, binf, ra, delta) - bvh_log_integrating_factor(r0, b0, binf, ra, delta)
    expect = [quad(lambda u: 2.0 * beta_bvh(np.exp(u), b0, binf, ra, delta), np.log(r0), np.log(ri),
                   epsabs=1e-12, epsrel=1e-12, limit=200)[0] for ri in r]
    np.testing.assert_allclose(ln_f, expect, rtol=1e-10, atol=1e-10)
    # Ends and middle: beta_0 at r = 0, beta_inf far out, the mean at r = r_a.
    assert anisotropy(0.0, b0, ra, binf, delta) == b0
    assert anisotropy(1e30 * ra, b0, ra, binf, delta) == pytest.approx(binf, abs=1e-14)
    assert anisotropy(ra, b0, ra, binf, delta) == pytest.approx(0.5 * (b0 + binf), abs=1e-14)


# ------------------------------------------------------------------------------------------------- (b) limits
def _sigma_pair(aniso_a: dict, aniso_b: dict) -> tuple[np.ndarray, ...]:
    """sigma_r^2 on r and sigma_los^2 on R for two anisotropies in the same potential."""
    r = np.geomspace(0.01, 20.0, 40) * A
    R = np.array([0.1, 0.5, 1.0, 2.0, 4.0]) * A
    out = []
    for aniso in (aniso_a, aniso_b):
        sol = solve_jeans(mass, nu, scale=A, **aniso)
        out += [sol.sigma_r2(r), projected_dispersion(R, sol, nu, epsrel=1e-8)[0]]
    return tuple(out)


@pytest.mark.parametrize("beta", [-0.4, 0.0, 0.3])
def test_equal_betas_is_constant_beta(beta):
    s_bvh, p_bvh, s_c, p_c = _sigma_pair({"beta": beta, "beta_inf": beta, "r_a": 0.7 * A, "delta": 1.7},
                                         {"beta": beta})
    np.testing.assert_allclose(s_bvh, s_c, rtol=1e-3)
    np.testing.assert_allclose(p_bvh, p_c, rtol=1e-3)


@pytest.mark.parametrize("r_a", [0.3 * A, 1.0 * A, 4.0 * A])
def test_zero_one_two_is_osipkov_merritt(r_a):
    s_bvh, p_bvh, s_om, p_om = _sigma_pair({"beta": 0.0, "beta_inf": 1.0, "r_a": r_a, "delta": 2.0},
                                           {"beta": 0.0, "r_a": r_a})
    np.testing.assert_allclose(s_bvh, s_om, rtol=1e-3)
    np.testing.assert_allclose(p_bvh, p_om, rtol=1e-3)


def test_bad_bvh_input():
    with pytest.raises(ValueError, match="beta_inf <= 1"):
        solve_jeans(mass, nu, scale=A, beta=0.0, beta_inf=1.2, r_a=A)
    with pytest.raises(ValueError, match="beta0 < 1"):
        solve_jeans(mass, nu, scale=A, beta=1.0, beta_inf=0.5, r_a=A)
    with pytest.raises(ValueError, match="r_a must be"):
        solve_jeans(mass, nu, scale=A, beta=0.0, beta_inf=0.5)
    with pytest.raises(ValueError, match="delta must be"):
        solve_jeans(mass, nu, scale=A, beta=0.0, beta_inf=0.5, r_a=A, delta=0.0)


# ------------------------------------------------------------------------------------- (c) independent sigma_r
def test_sigma_r_against_jeans_ode():
    """d(nu sigma_r^2)/dr + 2 beta nu sigma_r^2 / r = -nu G M / r^2, integrated inwards with solve_ivp.

    In u = ln r, y = nu sigma_r^2 obeys dy/du = -2 beta y - nu G M / r. Started at y = 0 at r = 10^3 R_h: the true
    y there is > 10 orders of magnitude below its value inside 8 R_h (nu ~ r^-5), and the error it seeds, ~1/f,
    grows inwards only as r^-2 beta_inf, so it is negligible at the radii compared.
    """
    g = bvh_galaxy()

    def rhs(u: float, y: np.ndarray) -> np.ndarray:
        r = np.exp(u)
        b = beta_bvh(r, BVH["beta"], BVH["beta_inf"], BVH["r_a"], BVH["delta"])
        return -2.0 * b * y - plummer_density(r, g.a) * G * g.mass(r) / r

    r_eval = np.array([8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.03]) * g.a
    ode = solve_ivp(rhs, (np.log(1e3 * g.a), np.log(r_eval[-1])), [0.0], t_eval=np.log(r_eval), method="DOP853",
                    rtol=1e-10, atol=1e-30)
    assert ode.success
    expect = ode.y[0] / plummer_density(r_eval, g.a)
    ratio = jeans_solution(g).sigma_r2(r_eval) / expect
    np.testing.assert_allclose(ratio, 1.0, rtol=1e-2)
    assert np.max(np.abs(ratio - 1)) < 1e-4  # the measured agreement is far inside the required 1 %


# ---------------------------------------------------------------------------------------- (d) sampled stars
SIGMA_TOL = 0.02
"""sigma_los tolerance per bin of R (as tests/test_physics.py): >= 2e4 stacked stars per bin give ~0.5-0.8 %."""
BETA_TOL = 0.05
"""Tolerance on the measured beta per 3-D bin: >= 1.1e4 stars per bin give sqrt(3/N)(1 - beta) <= 0.02."""


@pytest.fixture(scope="module")
def sampled():
    g = bvh_galaxy()
    pos, vel = sample_stars(g, 100_000, np.random.default_rng(11))
    return g, pos, vel


def test_sampled_sigma_los_matches_projection(sampled):
    g, pos, vel = sampled
    ratio = binned_sigma_ratio(g, pos, vel, min_count=20_000)
    np.testing.assert_allclose(ratio, 1.0, atol=SIGMA_TOL)
    # The check can fail: the same stars against the constant beta = beta_0 projection are off by far more.
    wrong = binned_sigma_ratio(g, pos, vel, reference=dataclasses.replace(g, bvh=False, beta=BVH["beta"]),
                               min_count=20_000)
    assert np.max(np.abs(wrong - 1)) > 3 * SIGMA_TOL


def test_sampled_beta_profile(sampled):
    """1 - <v_t^2> / (2 <v_r^2>) in 3-D bins of r against the sigma_r^2-weighted mean of beta(r) in the bin."""
    g, pos, vel = sampled
    r = np.linalg.norm(pos, axis=1)
    v_r = np.einsum("ij,ij->i", vel, pos) / r
    v_t2 = np.einsum("ij,ij->i", vel, vel) - v_r**2
    edges = np.array([0.25, 0.6, 1.0, 1.6, 3.0]) * g.a
    idx = np.digitize(r, edges) - 1
    ok = (idx >= 0) & (idx < len(edges) - 1)
    counts = np.bincount(idx[ok], minlength=len(edges) - 1)
    assert counts.min() > 10_000
    measured = 1.0 - np.bincount(idx[ok], v_t2[ok]) / (2.0 * np.bincount(idx[ok], v_r[ok] ** 2))
    s2 = jeans_solution(g).sigma_r2(r[ok])
    b = beta_bvh(r[ok], BVH["beta"], BVH["beta_inf"], BVH["r_a"], BVH["delta"])
    expect = np.bincount(idx[ok], b * s2) / np.bincount(idx[ok], s2)
    np.testing.assert_allclose(measured, expect, atol=BETA_TOL)
    assert measured[-1] - measured[0] > 0.3  # beta really turns over (0.6 - (-0.2) at the extremes)


# ------------------------------------------------------------------------------------------- suites / drawing
def test_draws_keep_other_galaxies_bit_identical():
    base, cusp = load_suite("compact"), load_feedback("cusp")
    assert base.bvh_fraction == 0.0 and load_suite("median").bvh_fraction == 0.2
    assert load_suite("extended").bvh_fraction == 0.2
    off = dataclasses.replace(base, bvh_fraction=0.0, df_fraction=0.0, flattened_fraction=0.0)
    on = dataclasses.replace(base, bvh_fraction=0.5, df_fraction=0.0, flattened_fraction=0.0)
    chosen = 0
    for seed in range(200):
        g0, g1 = draw_galaxy(off, cusp, seed), draw_galaxy(on, cusp, np.random.SeedSequence(seed))
        assert not g0.bvh
        reset = dataclasses.replace(g1, bvh=False, bvh_beta0=0.0, bvh_beta_inf=0.0, bvh_r_a=0.0, bvh_delta=2.0)
        assert reset == g0  # the main stream is untouched
        if g1.bvh:
            chosen += 1
            assert on.bvh_beta0_range[0] <= g1.bvh_beta0 <= on.bvh_beta0_range[1]
            assert on.bvh_beta_inf_range[0] <= g1.bvh_beta_inf <= on.bvh_beta_inf_range[1]
            lo, hi = on.bvh_ra_over_rh_range
            assert lo * g1.a <= g1.bvh_r_a <= hi * g1.a
            assert on.bvh_delta_range[0] <= g1.bvh_delta <= on.bvh_delta_range[1]
            assert g1.anisotropy_kwargs()["beta_inf"] == g1.bvh_beta_inf
    assert 70 <= chosen <= 130  # Binomial(200, 0.5): +-4.2 sigma


def test_bvh_galaxies_get_no_equilibrium_df():
    suite = dataclasses.replace(load_suite("compact"), bvh_fraction=0.5, df_fraction=1.0, om_fraction=1.0)
    gals = [draw_galaxy(suite, load_feedback("core"), seed) for seed in range(12)]
    assert any(g.bvh for g in gals) and not any(g.bvh and g.equilibrium_df for g in gals)


def test_bad_bvh_suite_values():
    base = load_suite("median")
    for bad in ({"bvh_fraction": 1.5}, {"bvh_beta0_range": (0.0, 1.0)}, {"bvh_beta_inf_range": (0.0, 1.1)},
                {"bvh_ra_over_rh_range": (0.0, 1.0)}, {"bvh_delta_range": (2.0, 1.0)}):
        with pytest.raises(ConfigError):
            dataclasses.replace(base, **bad)
