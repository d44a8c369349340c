"""Non-Gaussian line-of-sight velocity distributions: the 4th-order Jeans kurtosis (galmass.physics.kurtosis), the
numpy Eddington DF sampler (galmass.physics.df.eddington_df) and the mock option SuiteSpec.df_fraction."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import roots_legendre
from sigma_los import EDGES_RH, binned_sigma_ratio

from galmass.mocks.galaxy import Galaxy, draw_galaxy, jeans_solution, sample_stars
from galmass.mocks.suites import load_feedback, load_suite
from galmass.physics.constants import G
from galmass.physics.df import galpy_available, sample_df
from galmass.physics.jeans import projected_dispersion
from galmass.physics.kurtosis import los_kurtosis, projected_moments, solve_fourth_moment
from galmass.physics.profiles import plummer_density, plummer_mass
from galmass.physics.scaling import r200_from_m200

PLUMMER_KAPPA = 18.0 / 7.0 * 4096.0 / (405.0 * np.pi**2)
"""LOS kurtosis of the self-consistent isotropic Plummer sphere, the same at every R (galmass.physics.kurtosis):
local <v_r^4>/sigma_r^4 = 18/7, times the projection factor [Gamma(3) Gamma(2) / Gamma(7/2) Gamma(5/2)] /
[Gamma(5/2) / Gamma(3)]^2 of nu <v^4> ∝ Psi^7, nu ∝ Psi^5 and nu sigma^2 ∝ Psi^6: 2.63499."""

N_STARS = 100_000
N_SE = 4.0
"""Kurtosis tolerance in standard errors per bin (the brief's 4). The standard error is the delta-method one of
m4/m2^2 from the sample's own 2nd-8th moments (sqrt(24/N) for a Gaussian, 1.2-3 times that for kappa 3.2-3.8), with
N the number of STARS in the bin although three orthogonal projections are stacked: conservative, as if the three
were fully correlated."""

SIGMA_TOL = 0.02
"""sigma_los per bin against the Jeans projection, as in tests/test_df.py (see its SIGMA_TOL for the statistics)."""


def _galaxy(n_core: float, light_gamma: float = 0.0, m_gas: float = 2e7) -> Galaxy:
    """An isotropic (alpha, beta, gamma) = (2, 5, light_gamma) tracer with R_h = 0.5 kpc (Plummer for gamma = 0) in
    a 1e10 Msun NFW (n = 0) or fully cored (n = 1) halo, with stars of 1e7 Msun and a gas disc of m_gas."""
    m200, a = 1e10, 0.5
    return Galaxy(m200=m200, c200=15.0, r200=float(r200_from_m200(m200)), mstar=1e7, a=a, om=False, beta=0.0,
                  r_a=a, n=n_core, r_c=1.75 * a, m_gas=m_gas, r_d=0.8, sigma_gas=10.0, v_rad_frac=0.0, m2_frac=0.0,
                  m2_phase=0.0, m1_frac=0.0, m1_phase=0.0, disc_nx=0.0, disc_ny=0.0, disc_nz=1.0,
                  light_gamma=light_gamma)


# --- (a) kurtosis.py against the polytrope DF of the self-consistent Plummer sphere ------------------------------


def _plummer_df_reference(R: float, a: float, mass: float) -> float:
    """kappa_los(R) from f(E) ∝ E^(7/2) alone: velocity moments at r by Gauss-Legendre quadrature over v, then the
    line-of-sight integrals over z by scipy quad. Shares no code with galmass.physics.kurtosis."""
    v_nodes, v_weights = roots_legendre(64)

    def moments(r: float) -> np.ndarray:
        psi = G * mass / np.sqrt(r * r + a * a)  # relative potential of the Plummer sphere [km^2/s^2]
        v_esc = np.sqrt(2.0 * psi)
        v = 0.5 * v_esc * (v_nodes + 1.0)
        f = np.clip(psi - 0.5 * v * v, 0.0, None) ** 3.5
        w = 0.5 * v_esc * v_weights * 4.0 * np.pi * v * v * f
        # isotropic: <v_los^2> = <v^2>/3, <v_los^4> = <v^4> <cos^4> = <v^4>/5
        return np.array([np.sum(w), np.sum(w * v**2) / 3.0, np.sum(w * v**4) / 5.0])

    los = [quad(lambda z, k=k: moments(np.hypot(R, z))[k], 0.0, np.inf, epsrel=1e-10, limit=200)[0] for k in range(3)]
    return los[2] * los[0] / los[1] ** 2


def test_kurtosis_matches_plummer_polytrope_df():
    a, mass = 0.3, 1e8
    m = solve_fourth_moment(lambda r: plummer_mass(r, a, mass), lambda r: plummer_density(r, a), scale=a)
    R = np.array([0.05, 0.5, 1.0, 3.0]) * a
    kappa = los_kurtosis(R, m)
    reference = np.array([_plummer_df_reference(float(Ri), a, mass) for Ri in R])
    np.testing.assert_allclose(reference, PLUMMER_KAPPA, rtol=1e-6)  # the direct DF integration is right
    np.testing.assert_allclose(kappa, reference, rtol=1e-5)
    # sigma_los^2 = 3 pi G M / (64 sqrt(R^2 + a^2)) (Dejonghe 1987), and the local kurtosis 18/7 < 3
    _, s2, _ = projected_moments(R, m)
    np.testing.assert_allclose(s2, 3 * np.pi * G * mass / (64 * np.sqrt(R**2 + a**2)), rtol=1e-4)
    np.testing.assert_allclose(m.kurtosis_3d(R), 18.0 / 7.0, rtol=1e-4)


# --- (b) DF-sampled stars against kurtosis.py and the Jeans projection -------------------------------------------


def _kurtosis_se(v: np.ndarray, n_eff: float) -> tuple[float, float]:
    """Sample kurtosis m4/m2^2 of zero-mean velocities and its delta-method standard error for n_eff samples."""
    m2, m4, m6, m8 = (float(np.mean(v**k)) for k in (2, 4, 6, 8))
    var = ((m8 - m4**2) / m2**4 - 4 * m4 * (m6 - m2 * m4) / m2**5 + 4 * m4**2 * (m4 - m2**2) / m2**6) / n_eff
    return m4 / m2**2, float(np.sqrt(var))


def binned_kurtosis(g: Galaxy, pos: np.ndarray, vel: np.ndarray, edges: np.ndarray = EDGES_RH, *,
                    gaussian: bool = False) -> list[tuple[float, float, float, float]]:
    """(sampled kappa, its standard error, predicted kappa, sigma_los sampled / Jeans) per bin of R/R_h, three
    orthogonal projections stacked.

    Predicted kappa: the LOSVD mixture over the bin, mean <v_los^4>(R_i) / (mean sigma_los^2(R_i))^2 over the
    stars' R_i, from galmass.physics.kurtosis on a grid. The sigma_los reference is the independent quadrature of
    galmass.physics.jeans.projected_dispersion with the galaxy's own tracer density. ``gaussian``: predict the
    kurtosis of Gaussian Jeans velocities instead (a mixture of Gaussians along the line of sight)."""
    R = np.concatenate([np.hypot(pos[:, 1], pos[:, 2]), np.hypot(pos[:, 0], pos[:, 2]), np.hypot(pos[:, 0], pos[:, 1])])
    v = np.concatenate([vel[:, 0], vel[:, 1], vel[:, 2]])
    grid = np.geomspace(0.2, 3.3, 24) * g.a
    density = g.tracer.density
    _, s2, s4 = projected_moments(grid, solve_fourth_moment(g.mass, density, scale=g.a), gaussian=gaussian)
    jeans_s2, _ = projected_dispersion(grid, jeans_solution(g), density)
    s2_i, s4_i, j2_i = (np.exp(np.interp(np.log(R), np.log(grid), np.log(q))) for q in (s2, s4, jeans_s2))
    idx = np.digitize(R, g.a * edges) - 1
    out = []
    for b in range(len(edges) - 1):
        sel = idx == b
        # >= 15,000 star-projections: the sigma error is <= 1.1 % even if the three projections were one
        assert sel.sum() > 15_000, f"bin {b} has {sel.sum()} star-projections"
        kappa, se = _kurtosis_se(v[sel], sel.sum() / 3.0)
        out.append((kappa, se, float(np.mean(s4_i[sel]) / np.mean(s2_i[sel]) ** 2),
                    float(np.sqrt(np.mean(v[sel] ** 2) / np.mean(j2_i[sel])))))
    return out


DF_CASES = [
    # A cored (Plummer) light profile has no non-negative isotropic DF in a central cusp (f(E) < 0 for E bound
    # inside ~0.2 R_h: checked below). So the cusp case has steep (outer slope 6, as compact.yaml allows), mildly
    # cuspy (0.2) light, kappa_los 2.7-3.1 (platykurtic inside); the core case Plummer light and no gas disc (whose
    # spherically averaged M ∝ r^2 is itself a cusp), kappa_los 3.2-3.9 (leptokurtic).
    pytest.param(0.0, 0.2, 6.0, 2e7, id="cusp-NFW-light-2-6-0.2"),
    pytest.param(1.0, 0.0, 5.0, 0.0, id="core-n1-Plummer-light"),
]


@pytest.mark.parametrize("n_core,light_gamma,light_beta,m_gas", DF_CASES)
def test_df_sampled_losvd_matches_fourth_order_jeans(n_core, light_gamma, light_beta, m_gas):
    g = dataclasses.replace(_galaxy(n_core, light_gamma, m_gas), light_beta=light_beta, equilibrium_df=True)
    pos, vel = sample_stars(g, N_STARS, np.random.default_rng(21))
    rows = binned_kurtosis(g, pos, vel)
    for (kappa, se, expect, sigma_ratio), lo in zip(rows, EDGES_RH):
        assert abs(sigma_ratio - 1.0) < SIGMA_TOL, f"R/R_h >= {lo}: sigma_los / Jeans = {sigma_ratio:.4f}"
        assert abs(kappa - expect) < N_SE * se, f"R/R_h >= {lo}: kappa {kappa:.3f} +- {se:.3f}, theory {expect:.3f}"
    # The check can fail: Gaussian velocities with the same sigma_r(r) are predicted to miss the DF's kurtosis by
    # more than the tolerance in some bin (cusp: 3.0 vs 2.75 at 0.25 R_h; core: ~3.1 vs 3.7).
    gauss = binned_kurtosis(g, pos, vel, gaussian=True)
    assert max(abs(row[2] - row_g[2]) / row[1] for row, row_g in zip(rows, gauss)) > N_SE


def test_eddington_engine_plummer_sigma_seeded_and_rejects_what_it_lacks():
    g = _galaxy(1.0, 0.0, 0.0)  # Plummer light in a core: sample_df's Plummer tracer
    pos, vel = sample_df(g.mass, g.a, N_STARS, np.random.default_rng(5), engine="eddington", r_a=2 * g.a)
    np.testing.assert_allclose(binned_sigma_ratio(dataclasses.replace(g, om=True, r_a=2 * g.a), pos, vel), 1.0,
                               atol=SIGMA_TOL)  # Osipkov–Merritt against its own Jeans projection
    again = sample_df(g.mass, g.a, N_STARS, np.random.default_rng(5), engine="eddington", r_a=2 * g.a)
    assert np.array_equal(again[0], pos) and np.array_equal(again[1], vel)
    with pytest.raises(ValueError, match="isotropic and Osipkov"):
        sample_df(g.mass, g.a, 10, np.random.default_rng(0), engine="eddington", beta=-0.2)
    with pytest.raises(ValueError, match="negative"):  # r_a far inside the Plummer core: no positive f(Q)
        sample_df(g.mass, g.a, 10, np.random.default_rng(0), engine="eddington", r_a=0.2 * g.a)
    with pytest.raises(ValueError, match="negative"):  # cored light in a cusp, or with the gas disc's M ∝ r^2
        sample_df(_galaxy(0.0, 0.0, 0.0).mass, g.a, 10, np.random.default_rng(0), engine="eddington")
    with pytest.raises(ValueError, match="negative"):
        sample_df(_galaxy(1.0, 0.0, 2e7).mass, g.a, 10, np.random.default_rng(0), engine="eddington")


def test_eddington_f_matches_galpy_eddingtondf():
    """The numpy inversion against galpy's (an independent implementation of the same formula): f at the binding
    energy of a star at rest at r, for r = 0.05-10 R_h, up to one normalisation constant. The two potentials'
    zero-points differ by ~0.7 % (galpy's is truncated at 1000 a, eddington_df's at 1e5 a), hence 'at rest at r'."""
    if not galpy_available():
        pytest.skip("galpy is not installed")
    import warnings

    from galpy.df import eddingtondf
    from galpy.potential import PlummerPotential, evaluatePotentials

    from galmass.physics import df as df_module

    g = _galaxy(1.0, 0.0, 0.0)
    x = np.array([0.05, 0.3, 1.0, 3.0, 10.0])  # r / a
    mine = df_module.eddington_df(g.mass, lambda r: plummer_density(r, g.a), g.a)
    f_mine = np.interp(mine.psi_at(x * g.a), mine.q, mine.f)
    v_unit = float(np.sqrt(G * float(g.mass(np.asarray(g.a))) / g.a))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pot = df_module._potential(g.mass, g.a, v_unit, df_module.DF_RMAX_SCALES, 2001)
        ref = eddingtondf(pot=pot, denspot=PlummerPotential(amp=1.0, b=1.0), rmax=df_module.DF_RMAX_SCALES)
        f_galpy = np.array([ref.fE(evaluatePotentials(pot, xi, 0)) for xi in x])
    ratio = f_mine / f_galpy
    np.testing.assert_allclose(ratio / ratio[2], 1.0, atol=3e-3)


# --- (c) the mock path: SuiteSpec.df_fraction ---------------------------------------------------------------------


def _isotropic_suite(df_fraction: float):
    return dataclasses.replace(load_suite("median"), df_fraction=df_fraction, om_fraction=0.0, beta_range=(0.0, 0.0))


def test_mock_df_fraction_one_gives_non_gaussian_losvds():
    # median suite, isotropic, core: seed 3 has a mildly cuspy light profile (gamma 0.31) whose theory kappa is
    # ~3.4-3.9 inside 3 R_h (galmass.physics.kurtosis): the Gaussian default would give 3.
    g = draw_galaxy(_isotropic_suite(1.0), load_feedback("core"), 3)
    assert g.equilibrium_df
    aperture = np.array([0.25, 3.0])  # one aperture, 0.25-3 R_h: the mixture LOSVD an observer would stack
    pos, vel = sample_stars(g, N_STARS, np.random.default_rng(3))
    [(kappa, se, expect, sigma_ratio)] = binned_kurtosis(g, pos, vel, aperture)
    assert abs(kappa - expect) < N_SE * se and abs(sigma_ratio - 1.0) < SIGMA_TOL, (kappa, se, expect, sigma_ratio)
    assert abs(expect - 3.0) > 0.4 and abs(kappa - 3.0) > 5 * se, (kappa, se, expect)
    # The same galaxy with Gaussian velocities: not exactly 3 either in an aperture (Gaussians of different widths
    # along and across lines of sight mix), but as predicted for Gaussians, and far below the DF's kurtosis.
    gauss = sample_stars(dataclasses.replace(g, equilibrium_df=False), N_STARS, np.random.default_rng(3))
    [(kappa_g, se_g, expect_g, _)] = binned_kurtosis(g, *gauss, aperture, gaussian=True)
    assert abs(kappa_g - expect_g) < N_SE * se_g, (kappa_g, se_g, expect_g)
    assert kappa - kappa_g > 5 * np.hypot(se, se_g), (kappa, kappa_g)


GOLDEN = {
    # (suite, feedback, seed): sample_stars(draw_galaxy(...), 2000, default_rng(seed)) before df_fraction existed:
    # pos[0, 0], pos[1999, 2], vel[0, 0], vel[1999, 2], sum(pos), sum(vel^2)
    ("compact", "cusp", 3): [0.031803074206021034, 0.037056969528189536, -4.666740190880943, -3.3239969567338195,
                             4.968012939956515, 51441.657405731086],
    ("compact", "core", 8): [0.05747977380609651, -0.24507097905386668, -4.016156850046523, 3.837118705238813,
                             -10.655561396063332, 120071.79017990406],
}


@pytest.mark.parametrize("key", list(GOLDEN))
def test_df_fraction_zero_leaves_galaxies_and_stars_unchanged(key):
    suite, feedback, seed = key
    # flattened_fraction = 0 too: the golden stars predate that option (its own test: tests/test_flattened.py)
    spec = dataclasses.replace(load_suite(suite), df_fraction=0.0, flattened_fraction=0.0)
    g0 = draw_galaxy(spec, load_feedback(feedback), seed)
    pos, vel = sample_stars(g0, 2000, np.random.default_rng(seed))
    got = [pos[0, 0], pos[1999, 2], vel[0, 0], vel[1999, 2], np.sum(pos), np.sum(vel**2)]
    # rtol 1e-13 rather than ==: the golden numbers must survive a libm that rounds one ulp differently
    np.testing.assert_allclose(got, GOLDEN[key], rtol=1e-13, atol=0)
    # The flag is drawn outside the main stream: with df_fraction = 1 every other parameter is unchanged, and an
    # unflagged galaxy's stars are bit-identical.
    g1 = draw_galaxy(dataclasses.replace(spec, df_fraction=1.0), load_feedback(feedback), seed)
    assert dataclasses.replace(g1, equilibrium_df=False) == g0 and not g0.equilibrium_df
    pos1, vel1 = sample_stars(dataclasses.replace(g1, equilibrium_df=False), 2000, np.random.default_rng(seed))
    assert np.array_equal(pos1, pos) and np.array_equal(vel1, vel)
    if g1.equilibrium_df:  # same positions, other velocities
        pos2, vel2 = sample_stars(g1, 2000, np.random.default_rng(seed))
        assert np.array_equal(pos2, pos) and not np.array_equal(vel2, vel)


def test_df_flag_fraction_eligibility_and_seed_types():
    spec = dataclasses.replace(load_suite("compact"), df_fraction=0.5)
    gals = [draw_galaxy(spec, load_feedback("cusp"), i) for i in range(60)]
    assert not any(g.equilibrium_df and not g.om and g.beta != 0.0 for g in gals)  # constant beta != 0: no DF
    om = [g for g in gals if g.om]
    assert 0.2 < np.mean([g.equilibrium_df for g in om]) < 0.7  # ~0.5 of those with a non-negative DF
    seq = np.random.SeedSequence([1, 2, 3])  # generate.py passes a spawned SeedSequence; an int works the same
    assert draw_galaxy(spec, load_feedback("cusp"), seq) == draw_galaxy(spec, load_feedback("cusp"),
                                                                      np.random.SeedSequence([1, 2, 3]))
    assert seq.n_children_spawned == 0  # the caller's sequence is not advanced
    with pytest.raises(Exception, match="df_fraction"):
        dataclasses.replace(spec, df_fraction=1.5)


def test_df_isotropise_gives_constant_beta_galaxies_the_isotropic_df():
    """SuiteSpec.df_isotropise: a constant-beta galaxy drawn for DF velocities becomes beta = 0 with the isotropic
    Eddington DF; every other parameter, the Osipkov–Merritt galaxies and the data identity at the default are
    unchanged."""
    from galmass.config import recipe_contents

    spec = dataclasses.replace(load_suite("compact"), df_fraction=1.0, flattened_fraction=0.0, bvh_fraction=0.0)
    iso = dataclasses.replace(spec, df_isotropise=True)
    plain = [draw_galaxy(spec, load_feedback("core"), i) for i in range(40)]
    made = [draw_galaxy(iso, load_feedback("core"), i) for i in range(40)]
    changed = [(p, m) for p, m in zip(plain, made) if p != m]
    assert len(changed) >= 5  # constant-beta galaxies with a non-negative isotropic DF
    for p, m in changed:
        assert not p.om and p.beta != 0.0 and not p.equilibrium_df  # before: Gaussians, no DF for beta != 0
        assert m.equilibrium_df and m.beta == 0.0
        assert dataclasses.replace(m, beta=p.beta, equilibrium_df=False) == p  # nothing else moves
    assert all(p == m for p, m in zip(plain, made) if p.om or p.beta == 0.0)
    g = changed[0][1]
    pos, vel = sample_stars(g, 3000, np.random.default_rng(0))
    v_r = np.einsum("ij,ij->i", vel, pos) / np.linalg.norm(pos, axis=1)
    v_t2 = np.sum(vel**2, axis=1) - v_r**2
    assert abs(1 - np.mean(v_t2) / (2 * np.mean(v_r**2))) < 0.1  # isotropic: beta = 1 - σ_t² / (2 σ_r²) ≈ 0
    # The default is left out of the recipe contents, so datasets made before the key existed keep their hash.
    assert "df_isotropise" not in recipe_contents(["compact"], [])["suites"]["compact"]
