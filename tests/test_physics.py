"""Physics checks against analytic formulae and independent quadratures (no numbers produced by the code itself)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.integrate import quad
from sigma_los import binned_sigma_ratio

from galmass.mocks.galaxy import Galaxy, sample_stars
from galmass.physics.constants import G, LOG_R_GRID, RADII_FACTORS, RHO_CRIT
from galmass.physics.jeans import projected_dispersion, solve_jeans
from galmass.physics.profiles import (
    corenfw_mass,
    exponential_disc_mass,
    nfw_mass,
    plummer_density,
    plummer_mass,
    plummer_projected_fraction,
    plummer_radius_from_fraction,
    plummer_surface_density,
)
from galmass.physics.scaling import c200_dutton_maccio, r200_from_m200, smhm_moster

M200, C200 = 1e10, 15.0
R200 = float(r200_from_m200(M200))


# ---------------------------------------------------------------------------------------------- constants / scaling
def test_constants():
    assert RADII_FACTORS.shape == (10,)
    np.testing.assert_allclose(RADII_FACTORS, 0.6 + 0.2 * np.arange(10), atol=1e-12)
    assert LOG_R_GRID[0] == pytest.approx(1e-3) and LOG_R_GRID[-1] == pytest.approx(300.0)
    assert np.all(np.diff(np.log(LOG_R_GRID)) > 0)
    # 277.5 h^2 Msun/kpc^3 is the textbook critical density.
    assert RHO_CRIT == pytest.approx(277.5 * 0.7**2, rel=2e-3)


def test_scaling_relations():
    # Mean density inside R200 is 200 rho_crit.
    m = np.array([1e9, 1e10, 1e11])
    r = r200_from_m200(m)
    np.testing.assert_allclose(m / (4 / 3 * np.pi * r**3), 200 * RHO_CRIT, rtol=1e-12)
    # Dutton & Maccio: at 1e12/h Msun, log10 c = 0.905; slope -0.101 per dex.
    assert np.log10(c200_dutton_maccio(1e12 / 0.7)) == pytest.approx(0.905, abs=1e-12)
    assert np.log10(c200_dutton_maccio(1e11) / c200_dutton_maccio(1e10)) == pytest.approx(-0.101, abs=1e-12)
    # Moster+13: at M = M1 the ratio M*/M equals N; the low-mass slope is 1 + beta.
    assert smhm_moster(10**11.59) / 10**11.59 == pytest.approx(0.0351, rel=1e-12)
    slope = np.log10(smhm_moster(1e8) / smhm_moster(1e7))
    assert slope == pytest.approx(1 + 1.376, abs=0.01)
    with pytest.raises(ValueError, match="HINT"):
        r200_from_m200(-1.0)


# ---------------------------------------------------------------------------------------------------- profiles
def test_nfw_mass():
    assert nfw_mass(R200, M200, C200, R200) == pytest.approx(M200, rel=1e-12)
    assert nfw_mass(0.0, M200, C200, R200) == 0.0
    # Independent: integrate rho = rho_s / (x (1+x)^2) with rho_s from M200.
    rs = R200 / C200
    rho_s = M200 / (4 * np.pi * rs**3 * (np.log(1 + C200) - C200 / (1 + C200)))
    for r in (1e-4, 0.05, 1.0, 10.0, 100.0):
        num, _ = quad(lambda x: 4 * np.pi * x**2 * rho_s / ((x / rs) * (1 + x / rs) ** 2), 0, r, epsrel=1e-11)
        assert nfw_mass(r, M200, C200, R200) == pytest.approx(num, rel=1e-8)


def test_corenfw():
    r = np.logspace(-3, 2, 50)
    nfw = nfw_mass(r, M200, C200, R200)
    np.testing.assert_array_equal(corenfw_mass(r, M200, C200, R200, 1.0, 0.0), nfw)
    cored = corenfw_mass(r, M200, C200, R200, 1.0, 0.8)
    assert np.all(cored <= nfw) and np.all(cored[r < 5.0] < nfw[r < 5.0])
    # At r << r_c the suppression is tanh(r/r_c)^n ~ (r/r_c)^n; at r >> r_c it vanishes.
    assert cored[0] / nfw[0] == pytest.approx(1e-3**0.8, rel=1e-3)
    assert cored[-1] / nfw[-1] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="n must be in"):
        corenfw_mass(r, M200, C200, R200, 1.0, 1.5)


def test_plummer_analytic_consistency():
    a, m = 0.7, 3e6
    tot, _ = quad(lambda r: 4 * np.pi * r**2 * plummer_density(r, a, m), 0, np.inf)
    assert tot == pytest.approx(m, rel=1e-9)
    for r in (0.1, 0.7, 3.0):
        mr, _ = quad(lambda x: 4 * np.pi * x**2 * plummer_density(x, a, m), 0, r)
        assert plummer_mass(r, a, m) == pytest.approx(mr, rel=1e-9)
        # Sigma(R) = 2 int nu dz
        sr, _ = quad(lambda z: 2 * plummer_density(np.hypot(r, z), a, m), 0, np.inf)
        assert plummer_surface_density(r, a, m) == pytest.approx(sr, rel=1e-8)
    assert plummer_projected_fraction(a, a) == pytest.approx(0.5)


def test_plummer_inverse_cdf_and_samples():
    a = 0.5
    u = np.linspace(0.0, 0.999, 101)
    r = plummer_radius_from_fraction(u, a)
    np.testing.assert_allclose(plummer_mass(r, a), u, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError):
        plummer_radius_from_fraction(1.0, a)
    # Sampled particles: M(<r) and Sigma(R) in bins with >= 20k particles (Poisson noise <= 0.7 %); tolerance 2 %.
    rng = np.random.default_rng(1)
    n = 400_000
    r = plummer_radius_from_fraction(rng.random(n), a)
    cos_t = 2 * rng.random(n) - 1
    R = r * np.sqrt(1 - cos_t**2)  # projected radius (isotropic directions)
    for q in (0.2, 0.5, 1.0, 2.0, 5.0):
        assert np.mean(r < q * a) == pytest.approx(plummer_mass(q * a, a), rel=0.02)
    edges = a * np.array([0.1, 0.3, 0.5, 0.8, 1.2, 1.8, 3.0, 6.0])
    counts, _ = np.histogram(R, edges)
    assert counts.min() > 20_000
    expected = n * np.diff(plummer_projected_fraction(edges, a))
    np.testing.assert_allclose(counts / expected, 1.0, atol=0.02)
    # Sigma(R) itself: mean density in each annulus vs the annulus average of the analytic Sigma.
    area = np.pi * np.diff(edges**2)
    sigma_mean = np.array([quad(lambda x: 2 * np.pi * x * plummer_surface_density(x, a, n), lo, hi)[0]
                           for lo, hi in zip(edges[:-1], edges[1:])]) / area
    np.testing.assert_allclose(counts / area / sigma_mean, 1.0, atol=0.02)


def test_exponential_disc_mass():
    md, rd = 2e7, 0.8
    for r in (1e-4, 0.3, 0.8, 5.0):
        num, _ = quad(lambda x: 2 * np.pi * x * md / (2 * np.pi * rd**2) * np.exp(-x / rd), 0, r, epsrel=1e-12)
        assert exponential_disc_mass(r, md, rd) == pytest.approx(num, rel=1e-8)
    assert exponential_disc_mass(0.0, md, rd) == 0.0
    assert exponential_disc_mass(1e4, md, rd) == pytest.approx(md)


# ------------------------------------------------------------------------------------------------------ Jeans
def test_jeans_isotropic_plummer_analytic():
    """Self-consistent isotropic Plummer: sigma_r^2 = G M / (6 sqrt(r^2 + a^2))."""
    a, m = 0.5, 1e7
    sol = solve_jeans(lambda r: plummer_mass(r, a, m), lambda r: plummer_density(r, a, m), scale=a)
    r = np.logspace(-3, 2.5, 60) * a
    np.testing.assert_allclose(sol.sigma_r2(r), G * m / (6 * np.sqrt(r**2 + a**2)), rtol=1e-4)
    # And its projection (Dejonghe 1987): sigma_los^2 = 3 pi G M / (64 sqrt(R^2 + a^2)).
    R = np.array([0.05, 0.5, 1.0, 3.0]) * a
    s2, surface = projected_dispersion(R, sol, lambda r: plummer_density(r, a, m))
    np.testing.assert_allclose(s2, 3 * np.pi * G * m / (64 * np.sqrt(R**2 + a**2)), rtol=1e-4)
    np.testing.assert_allclose(surface, plummer_surface_density(R, a, m), rtol=1e-6)


@pytest.mark.parametrize("aniso", [{"beta": -0.4, "r_a": None}, {"beta": 0.3, "r_a": None},
                                   {"beta": 0.0, "r_a": 0.6}])
def test_jeans_matches_direct_quadrature(aniso):
    """Grid solution vs scipy quad of (1/f) int_r^inf f nu G M / r'^2 dr' in a coreNFW + Plummer potential."""
    a = 0.5

    def mass(r):
        return corenfw_mass(r, M200, C200, R200, 1.75 * a, 0.7) + plummer_mass(r, a, 1e7)

    def nu(r):
        return plummer_density(r, a)

    def lnf(r):
        return 2 * aniso["beta"] * np.log(r) if aniso["r_a"] is None else np.log(r**2 + aniso["r_a"] ** 2)

    sol = solve_jeans(mass, nu, scale=a, **aniso)
    for r in (0.01, 0.2, 0.5, 1.0, 2.5, 8.0):
        integral, _ = quad(lambda x: np.exp(lnf(x) - lnf(r)) * nu(x) * G * mass(x) / x**2, r, np.inf,
                           epsrel=1e-10, limit=400)
        assert sol.sigma_r2(r) == pytest.approx(integral / nu(r), rel=1e-4)


def test_jeans_bad_input():
    with pytest.raises(ValueError, match="beta must be < 1"):
        solve_jeans(lambda r: r, lambda r: plummer_density(r, 1.0), scale=1.0, beta=1.0)
    with pytest.raises(ValueError, match="not both"):
        solve_jeans(lambda r: r, lambda r: plummer_density(r, 1.0), scale=1.0, beta=0.2, r_a=1.0)


def _galaxy(n_core: float, om: bool, beta: float) -> Galaxy:
    a = 0.5
    return Galaxy(m200=M200, c200=C200, r200=R200, mstar=1e7, a=a, om=om, beta=beta, r_a=0.8 * a, n=n_core,
                  r_c=1.75 * a, m_gas=2e7, r_d=0.8, sigma_gas=10.0, v_rad_frac=0.0, m2_frac=0.0, m2_phase=0.0,
                  m1_frac=0.0, m1_phase=0.0, disc_nx=0.0, disc_ny=0.0, disc_nz=1.0)


SIGMA_TOL = 0.02
"""Tolerance on sigma_los per radial bin. Each bin holds >= 10^4 stars per axis and three axes are stacked, so the
statistical error on sigma is ~ 1/sqrt(2 N_eff) <= 0.4 %: 2 % is ~5 standard errors of noise, yet small against the
differences between anisotropy models (checked below: isotropic stars fail the Osipkov–Merritt integral)."""


@pytest.mark.parametrize("n_core", [0.0, 1.0], ids=["nfw", "corenfw"])
@pytest.mark.parametrize("om,beta", [(False, 0.0), (True, 0.0), (False, -0.4)], ids=["iso", "om", "beta-0.4"])
def test_sampled_sigma_los_matches_projection_integral(n_core, om, beta):
    g = _galaxy(n_core, om, beta)
    pos, vel = sample_stars(g, 200_000, np.random.default_rng(7))
    ratio = binned_sigma_ratio(g, pos, vel, min_count=30_000)
    np.testing.assert_allclose(ratio, 1.0, atol=SIGMA_TOL)
    if om:
        # The check can fail: the same stars against the isotropic integral are off by far more than SIGMA_TOL.
        iso = _galaxy(n_core, False, 0.0)
        wrong = binned_sigma_ratio(g, pos, vel, reference=iso, min_count=30_000)
        assert np.max(np.abs(wrong - 1)) > 3 * SIGMA_TOL


def test_feedback_matters_at_fixed_sigma_and_rh():
    """At the same stellar R_h and aperture sigma_los, a cored halo holds less mass inside 0.6 R_h than a cusp.

    The cored halo's M200 is solved for (scipy brentq) so that its Sigma-weighted sigma_los inside 3 R_h equals the
    cusp's. The Jeans equation then pins the total mass near the 3-D half-light radius (Wolf et al. 2010), so the
    flatter cored profile must have less mass inside and more outside: the ratio M_core/M_cusp rises through 1
    between 1 and 2.4 R_h.
    """
    from scipy.optimize import brentq

    from galmass.physics.profiles import plummer_surface_density

    def aperture_sigma(g: Galaxy) -> float:
        R = np.geomspace(0.02, 3.0, 40) * g.a
        sol = solve_jeans(g.mass, lambda r: plummer_density(r, g.a), scale=g.a, **g.anisotropy_kwargs())
        s2, _ = projected_dispersion(R, sol, lambda r: plummer_density(r, g.a), epsrel=1e-6)
        w = plummer_surface_density(R, g.a) * R * R  # 2 pi R dR with dR = R d ln R
        return float(np.sqrt(np.trapezoid(w * s2, np.log(R)) / np.trapezoid(w, np.log(R))))

    cusp = _galaxy(0.0, False, 0.0)
    target = aperture_sigma(cusp)

    def cored(log_m: float) -> Galaxy:
        m = 10.0**log_m
        return dataclasses.replace(_galaxy(1.0, False, 0.0), m200=m, r200=float(r200_from_m200(m)))

    log_m = brentq(lambda lm: aperture_sigma(cored(lm)) - target, 9.0, 12.0, xtol=1e-7)
    core = cored(log_m)
    assert aperture_sigma(core) == pytest.approx(target, rel=1e-5) and core.a == cusp.a
    assert core.m200 > cusp.m200  # a cored halo needs more total mass for the same dispersion
    f = np.array([0.6, 1.0, 1.4, 1.8, 2.4])
    ratio = core.mass(f * cusp.a) / cusp.mass(f * cusp.a)
    assert ratio[0] < 0.8  # measurably lower M(<0.6 R_h)
    assert np.all(np.diff(ratio) > 0) and ratio[1] < 1.0 < ratio[-1]


def test_dc14_profile_against_quadrature():
    """DC14 M(<r) against scipy quad of its density, and the shape's dependence on X = log10(M*/M200)."""
    from galmass.physics.profiles import dc14_mass, dc14_shape

    # Shape (Di Cintio et al. 2014a, eq. 3) evaluated by hand at X = -2.7: alpha 2.52, beta 2.51, gamma 0.23.
    alpha, beta, gamma = dc14_shape(-2.7)
    x = -2.7
    assert alpha == pytest.approx(2.94 - np.log10(10 ** (-1.08 * (x + 2.33)) + 10 ** (2.29 * (x + 2.33))))
    assert beta == pytest.approx(4.23 + 1.34 * x + 0.26 * x * x) and gamma < 0.3
    assert dc14_shape(-4.1)[2] > 0.9 and dc14_shape(-1.3)[2] > 1.0  # cusps at both ends of the range
    c_dc14 = C200 * (1 + 1e-5 * np.exp(3.4 * (x + 4.5)))
    r_s = R200 / c_dc14 * ((beta - 2) / (2 - gamma)) ** (1 / alpha)

    def m_quad(r):
        f = lambda t: t**2 / ((t / r_s) ** gamma * (1 + (t / r_s) ** alpha) ** ((beta - gamma) / alpha))
        return quad(f, 0, r, epsrel=1e-10, limit=200)[0]

    radii = np.array([0.05, 0.5, 2.0, 10.0, 40.0])
    expect = M200 * np.array([m_quad(r) for r in radii]) / m_quad(R200)
    np.testing.assert_allclose(dc14_mass(radii, M200, C200, R200, x), expect, rtol=1e-4)
    # At X = -2.7 the DC14 halo has far less mass than NFW in the inner kpc.
    assert dc14_mass(0.5, M200, C200, R200, x) < 0.5 * nfw_mass(0.5, M200, C200, R200)
