"""The wider model families of the mocks, each against an independent calculation: Zhao haloes (closed-form NFW
limit and direct quadrature), two-power stellar light (Plummer limit, quadrature, sampling), and the Jeans
velocities of a non-Plummer tracer in a Zhao halo against the projection integral."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import kstest

from galmass.mocks.galaxy import draw_galaxy, jeans_solution, sample_stars
from galmass.mocks.suites import load_feedback, load_suite
from galmass.physics.jeans import projected_dispersion
from galmass.physics.profiles import nfw_mass, plummer_density, plummer_mass, zhao_mass
from galmass.physics.tracers import TwoPowerTracer, rh_over_rs

M200, C200, R200 = 1e10, 12.0, 45.0


def test_zhao_nfw_limit_and_quadrature():
    r = np.geomspace(1e-3, 2.0, 25) * R200
    np.testing.assert_allclose(zhao_mass(r, M200, C200, R200, 1.0, 3.0, 1.0), nfw_mass(r, M200, C200, R200),
                               rtol=1e-5)
    for alpha, beta, gamma in ((1.0, 3.0, 0.0), (2.0, 3.0, 1.5), (0.5, 4.0, 0.7)):
        r_s = R200 / C200 * ((beta - 2) / (2 - gamma)) ** (1 / alpha)
        rho = lambda x: x**2 * (x / r_s) ** -gamma * (1 + (x / r_s) ** alpha) ** (-(beta - gamma) / alpha)  # noqa
        norm = M200 / quad(rho, 0, R200, limit=200, epsrel=1e-10)[0]
        for x in (0.01 * R200, 0.1 * R200, 0.7 * R200):
            expect = norm * quad(rho, 0, x, limit=200, epsrel=1e-10)[0]
            assert float(zhao_mass(x, M200, C200, R200, alpha, beta, gamma)) == pytest.approx(expect, rel=1e-5)


def test_two_power_light_plummer_limit_and_sampling():
    assert rh_over_rs(2.0, 5.0, 0.0) == pytest.approx(1.0, rel=1e-5)
    t = TwoPowerTracer(2.0, 5.0, 0.0, 0.4)
    r = np.geomspace(0.01, 20, 9)
    np.testing.assert_allclose(t.density(r), plummer_density(r, 0.4), rtol=1e-5)
    np.testing.assert_allclose(t.fraction(r), plummer_mass(r, 0.4), rtol=1e-4)
    rng = np.random.default_rng(0)
    for shape in ((2.0, 7.0, 0.5), (2.0, 3.5, 0.0), (2.0, 5.0, 1.0)):
        tr = TwoPowerTracer(*shape, 0.4)
        radii = tr.sample_radii(rng.random(100_000))
        assert kstest(radii, lambda x: tr.fraction(x)).pvalue > 0.01  # sampled radii follow the 3-D profile
        cos_t = rng.uniform(-1, 1, radii.size)
        R = radii * np.sqrt(1 - cos_t**2)
        # The median projected radius is the requested R_h (its standard error ~1.25 R_h / sqrt(N) · (1 + ...)).
        assert np.median(R) == pytest.approx(0.4, rel=4 * 1.6 / np.sqrt(radii.size))


@pytest.mark.parametrize("light", [(7.0, 0.5), (3.8, 0.0)])
def test_jeans_velocities_of_a_two_power_tracer_in_a_zhao_halo(light):
    base = draw_galaxy(load_suite("median"), load_feedback("zhao"), 4)
    g = dataclasses.replace(base, light_beta=light[0], light_gamma=light[1])
    assert g.zhao and 0.0 <= g.halo_gamma <= 1.5
    pos, vel = sample_stars(g, 200_000, np.random.default_rng(1))
    R = np.concatenate([np.hypot(pos[:, 1], pos[:, 2]), np.hypot(pos[:, 0], pos[:, 2])])
    v2 = np.concatenate([vel[:, 0], vel[:, 1]]) ** 2
    edges = g.a * np.array([0.3, 0.6, 1.0, 1.6, 2.5])
    grid = np.sqrt(edges[1:] * edges[:-1])
    s2, _ = projected_dispersion(grid, jeans_solution(g), g.tracer.density)
    idx = np.digitize(R, edges) - 1
    ok = (idx >= 0) & (idx < len(grid))
    measured = np.sqrt(np.bincount(idx[ok], v2[ok]) / np.bincount(idx[ok]))
    # 2 % per bin: each bin holds > 2e4 star-projections (statistical error < 1 %); σ varies little across a bin.
    np.testing.assert_allclose(measured, np.sqrt(s2), rtol=0.02)
