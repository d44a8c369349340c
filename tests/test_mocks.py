"""Mock suites: recipes, galaxies, gas, projections and observations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import galmass.mocks.observe as observe_mod
from galmass.config import ConfigError, DataConfig, config_diffs, config_to_dict, data_identity
from galmass.maps import estimate_centre, membership
from galmass.mocks.galaxy import PARAM_NAMES, draw_galaxy, sample_gas
from galmass.mocks.observe import draw_catalogue, observe_galaxy
from galmass.mocks.projection import fibonacci_los, project, projection_basis
from galmass.mocks.suites import available, load_feedback, load_suite
from galmass.physics.constants import G, LOG_R_GRID, RADII_FACTORS

SMALL = DataConfig(projections=6, npix=32, star_pool=3000, gas_cells=400, n_stars=[100, 100], v_err_kms=[2.0, 2.0],
                   selection_fov_rh=[8.0, 8.0], selection_bias=[0.0, 0.0], membership_clip=0.0)


@pytest.fixture(scope="module")
def specs():
    return load_suite("compact"), load_suite("extended"), load_feedback("cusp"), load_feedback("core")


# ---------------------------------------------------------------------------------------------------- recipes
def test_shipped_recipes_load(specs):
    compact, extended, cusp, core = specs
    assert {"compact", "extended"} <= set(available("suites"))
    assert {"cusp", "core"} <= set(available("feedback"))
    assert compact.name == "compact" and core.name == "core"
    # The two suites differ physically in the stated directions.
    assert compact.size_k < extended.size_k and compact.c200_offset_dex > extended.c200_offset_dex
    assert compact.om_fraction > extended.om_fraction and max(compact.beta_range) > max(extended.beta_range)
    assert max(extended.gas_to_stellar_range) > max(compact.gas_to_stellar_range)
    assert cusp.profile == "nfw" and core.profile == "corenfw" and min(core.n_range) >= 0.6
    # No gas shortcut: every feedback model draws its gas disturbances from the same distributions.
    for key in ("radial_flow_range", "m2_range", "lopsided_range"):
        assert getattr(core, key) == getattr(cusp, key), key
    assert cusp.gas_core_link == core.gas_core_link == 0.0


def test_misspelled_key_names_file_and_suggestion(tmp_path):
    bad = tmp_path / "mysuite.yaml"
    bad.write_text("size_kk: 0.02\n")
    with pytest.raises(ConfigError) as err:
        load_suite(bad)
    msg = str(err.value)
    assert str(bad) in msg and "size_kk" in msg and "Did you mean 'size_k'" in msg
    bad_fb = tmp_path / "fb.yaml"
    bad_fb.write_text("profile: corenfw\nn_rang: [0.2, 0.5]\n")
    with pytest.raises(ConfigError, match=r"fb\.yaml.*Did you mean 'n_range'"):
        load_feedback(str(bad_fb))


def test_a_recipe_extends_another_with_only_what_it_changes(tmp_path):
    """``extends: compact`` plus two keys: compact with those two replaced (its own name and description); a key
    misspelled in the variant names the variant's file; a loop of extends and a non-name are errors naming files."""
    variant = tmp_path / "compact_variant.yaml"
    variant.write_text("description: compact with DF velocities\nextends: compact\ndf_fraction: 1.0\n"
                       "light_transition_range: [1.0, 2.0]\n")
    expected = dataclasses.replace(load_suite("compact"), name="compact_variant", description="compact with DF "
                                   "velocities", df_fraction=1.0, light_transition_range=(1.0, 2.0))
    assert load_suite(variant) == expected
    variant.write_text("extends: compact\ndf_fractoin: 1.0\n")
    with pytest.raises(ConfigError, match=r"compact_variant\.yaml.*Did you mean 'df_fraction'"):
        load_suite(variant)
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(f"extends: {b}\n")
    b.write_text(f"extends: {a}\n")
    with pytest.raises(ConfigError, match=r"b\.yaml: 'extends' loops back through .*b\.yaml -> .*a\.yaml"):
        load_suite(b)
    a.write_text("extends: [compact, median]\n")
    with pytest.raises(ConfigError, match=r"a\.yaml: 'extends' must name one recipe"):
        load_suite(a)


def test_unknown_name_lists_available_and_bad_values(tmp_path):
    with pytest.raises(ConfigError, match=r"Did you mean 'compact'.*extended"):
        load_suite("compat")
    bad = tmp_path / "nfwcore.yaml"
    bad.write_text("profile: nfw\nn_range: [0.5, 1.0]\n")
    with pytest.raises(ConfigError, match="nfwcore.yaml.*no core"):
        load_feedback(bad)
    bad.write_text("beta_range: [0.0, 1.2]\n")
    with pytest.raises(ConfigError, match="beta must stay < 1"):
        load_suite(bad)


def test_population_follows_recipe(specs):
    compact, extended, cusp, _ = specs
    gals_c = [draw_galaxy(compact, cusp, i) for i in range(300)]
    gals_e = [draw_galaxy(extended, cusp, i) for i in range(300)]
    m200 = np.array([g.m200 for g in gals_c])
    lo, hi = compact.log10_m200_range
    assert np.all((m200 >= 10**lo) & (m200 <= 10**hi))
    # Median R_h / R200 is the suite's k (the scatter is symmetric in log).
    for gals, spec in ((gals_c, compact), (gals_e, extended)):
        k = np.median([g.a / g.r200 for g in gals])
        assert k == pytest.approx(spec.size_k, rel=0.08)
        om = np.mean([g.om for g in gals])
        assert om == pytest.approx(spec.om_fraction, abs=0.1)
        sig = np.array([g.sigma_gas for g in gals])
        assert sig.min() >= spec.gas_sigma_kms_range[0] and sig.max() <= spec.gas_sigma_kms_range[1]
    assert len(PARAM_NAMES) == gals_c[0].params_vector().size


def test_galaxy_mass_profile(specs):
    compact, _, _, core = specs
    g = draw_galaxy(compact, core, 3)
    r = np.array([0.0, 0.1, 1.0, 10.0])
    np.testing.assert_allclose(g.mass(r), g.dm_mass(r) + g.star_mass(r) + g.gas_mass(r))
    assert g.mass(0.0) == 0.0
    prof = g.log_mass_profile()
    assert prof.shape == LOG_R_GRID.shape and np.all(np.diff(prof) > 0)
    np.testing.assert_allclose(10**prof, g.mass(LOG_R_GRID), rtol=1e-12)


# --------------------------------------------------------------------------------------------------------- gas
def test_gas_disc_kinematics(specs):
    compact, _, cusp, _ = specs
    g = dataclasses.replace(draw_galaxy(compact, cusp, 11), v_rad_frac=0.1, m2_frac=0.0, m1_frac=0.0)
    pos, vel, mass = sample_gas(g, 40_000, np.random.default_rng(0))
    n = g.disc_normal
    assert np.max(np.abs(pos @ n)) < 1e-10 * g.r_d  # razor-thin, in the disc plane
    assert mass.sum() == pytest.approx(g.m_gas)
    R = np.linalg.norm(pos, axis=1)
    assert np.median(R) == pytest.approx(1.678 * g.r_d, rel=0.03)  # median of Gamma(2, R_d)
    rhat = pos / R[:, None]
    phihat = np.cross(n, rhat)
    v_phi, v_R, v_z = np.einsum("ij,ij->i", vel, phihat), np.einsum("ij,ij->i", vel, rhat), vel @ n
    vc = np.sqrt(G * g.mass(R) / R)
    sel = (R > 0.5 * g.r_d) & (R < 3 * g.r_d)
    expect = np.sqrt(np.clip(vc**2 - g.sigma_gas**2 * R / g.r_d, 0, None))
    # Mean residuals: turbulence sigma/sqrt(N) ~ 0.07 km/s, so 0.5 km/s is a clear test of the model.
    assert np.mean(v_phi[sel] - expect[sel]) == pytest.approx(0.0, abs=0.5)
    assert np.mean(v_R[sel] - 0.1 * vc[sel]) == pytest.approx(0.0, abs=0.5)
    assert np.std(v_z) == pytest.approx(g.sigma_gas, rel=0.03)


# --------------------------------------------------------------------------------------------------- projection
def test_projection_geometry():
    los = fibonacci_los(200)
    np.testing.assert_allclose(np.linalg.norm(los, axis=1), 1.0)
    assert np.linalg.norm(los.mean(axis=0)) < 0.02  # evenly spread
    rng = np.random.default_rng(0)
    for l in (los[0], los[57], np.array([0.0, 0.0, -1.0])):
        ex, ey = projection_basis(l, rng.uniform(0, 2 * np.pi))
        np.testing.assert_allclose([ex @ ex, ey @ ey, ex @ ey, ex @ l, ey @ l], [1, 1, 0, 0, 0], atol=1e-12)
        np.testing.assert_allclose(np.cross(ex, ey), l, atol=1e-12)
    pos, vel = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    x, y, v = project(pos, vel, los[3], 0.3)
    ex, ey = projection_basis(los[3], 0.3)
    np.testing.assert_allclose(v, vel @ los[3])
    # Projection keeps distances perpendicular to the line of sight.
    perp = pos - np.outer(pos @ los[3], los[3])
    np.testing.assert_allclose(np.hypot(x, y), np.linalg.norm(perp, axis=1))


# ---------------------------------------------------------------------------------------------------- observe
def _observe(galaxy, seed, cfg=SMALL):
    return observe_galaxy(galaxy, cfg, np.random.default_rng(seed))


def test_observe_shapes_and_determinism(specs):
    compact, _, _, core = specs
    g = draw_galaxy(compact, core, np.random.SeedSequence([0, 5]))
    assert g == draw_galaxy(compact, core, np.random.SeedSequence([0, 5]))
    a, b, c = _observe(g, 1), _observe(g, 1), _observe(g, 2)
    P, H = SMALL.projections, SMALL.npix
    shapes = {"maps_stars": (P, 4, H, H), "maps_gas": (P, 4, H, H), "phase_stars": (P, 1, H, H),
              "phase_gas": (P, 1, H, H), "scalars": (P, 4), "labels": (P, 10), "los": (P, 3), "projection": (P,),
              "n_stars": (P,)}
    for key, shape in shapes.items():
        assert a[key].shape == shape, key
        assert np.array_equal(a[key], b[key]), key  # bit-for-bit
        assert np.all(np.isfinite(a[key]))
    assert a["projection"].dtype == np.int32 and a["n_stars"].dtype == np.int32 and a["labels"].dtype == np.float32
    assert not np.array_equal(a["maps_stars"], c["maps_stars"])
    assert not np.array_equal(a["labels"], c["labels"])
    assert np.all(a["n_stars"] >= 3)
    np.testing.assert_allclose(a["scalars"][:, 3], np.log10(a["n_stars"]), rtol=1e-6)
    np.testing.assert_allclose(a["phase_stars"].sum(axis=(1, 2, 3)), 1.0, rtol=1e-5)


def test_labels_at_f_times_median_projected_radius(specs, monkeypatch):
    compact, _, cusp, _ = specs
    g = draw_galaxy(compact, cusp, 21)
    seen = []
    real = observe_mod.observation_to_sample

    def spy(x, y, v, err, gas, **kw):
        # The observer's R_h: median distance of the velocity members from their own estimated centre.
        m = membership(v, err, kw["membership_clip"])
        cx, cy = estimate_centre(x[m], y[m]) if kw["recentre"] else (0.0, 0.0)
        seen.append(np.median(np.hypot(x[m] - cx, y[m] - cy)))
        return real(x, y, v, err, gas, **kw)

    monkeypatch.setattr(observe_mod, "observation_to_sample", spy)
    out = _observe(g, 4)
    rh = np.array(seen)
    assert len(rh) == SMALL.projections and np.ptp(rh) > 0  # R_h differs per projection
    expect = np.log10(g.mass(RADII_FACTORS[None, :] * rh[:, None]))
    np.testing.assert_allclose(out["labels"], expect, rtol=1e-6)
    np.testing.assert_allclose(out["scalars"][:, 0], np.log10(rh), rtol=1e-6)


def test_core_has_less_inner_mass_than_cusp(specs):
    compact, _, cusp, core = specs
    seed = np.random.SeedSequence([3, 1])
    g_cusp, g_core = draw_galaxy(compact, cusp, seed), draw_galaxy(compact, core, seed)
    same = ("m200", "c200", "a", "mstar", "beta", "r_a", "m_gas", "r_d", "sigma_gas")
    assert all(getattr(g_cusp, k) == getattr(g_core, k) for k in same)
    assert g_cusp.n == 0.0 and g_core.n >= 0.6
    cusp_obs, core_obs = _observe(g_cusp, 9), _observe(g_core, 9)
    # Same observation seed: same star positions, hence the same R_h per projection.
    np.testing.assert_array_equal(cusp_obs["scalars"][:, 0], core_obs["scalars"][:, 0])
    assert np.all(core_obs["labels"][:, 0] < cusp_obs["labels"][:, 0])
    # Independent check of the size of the effect: the DM mass ratio is tanh(r/r_c)^n.
    r = 0.6 * 10.0 ** cusp_obs["scalars"][:, 0].astype(np.float64)
    dm_ratio = g_core.dm_mass(r) / g_cusp.dm_mass(r)
    np.testing.assert_allclose(dm_ratio, np.tanh(r / g_core.r_c) ** g_core.n, rtol=1e-10)


# ------------------------------------------------------------------------------------ suites × feedback, realism
FEEDBACK_ORDER = ("cusp", "mild_core", "core")
"""Feedback models from none to strong: NFW cusp, partial core, full core."""


def test_three_suites_by_three_feedback_models():
    suites = [load_suite(s) for s in ("compact", "median", "extended")]
    fbs = [load_feedback(f) for f in FEEDBACK_ORDER]
    assert {"compact", "median", "extended"} <= set(available("suites"))
    assert set(FEEDBACK_ORDER) <= set(available("feedback"))
    # Suites: size, concentration and gas richness ordered compact < median < extended (c200: reversed).
    assert suites[0].size_k < suites[1].size_k < suites[2].size_k
    assert suites[0].c200_offset_dex > suites[1].c200_offset_dex > suites[2].c200_offset_dex
    assert max(suites[0].gas_to_stellar_range) <= max(suites[1].gas_to_stellar_range) <= \
        max(suites[2].gas_to_stellar_range)
    # Feedback: core strength grows from none to strong; the gas disturbances do not depend on it (no shortcut).
    assert fbs[0].profile == "nfw" and fbs[1].profile == fbs[2].profile == "corenfw"
    lo, hi = [f.n_range[0] for f in fbs], [f.n_range[1] for f in fbs]
    assert lo == sorted(lo) and hi == sorted(hi) and hi[0] < hi[2]
    for key in ("radial_flow_range", "m2_range", "lopsided_range"):
        assert len({getattr(f, key) for f in fbs}) == 1, key
    # Each cell draws galaxies; the same seed gives the same halo in every feedback model, with n in range.
    for suite in suites:
        gals = [draw_galaxy(suite, fb, 17) for fb in fbs]
        assert len({g.m200 for g in gals}) == 1
        for g, fb in zip(gals, fbs):
            assert fb.n_range[0] <= g.n <= fb.n_range[1]
        r = 0.6 * gals[0].a
        inner = [float(g.dm_mass(r)) for g in gals]
        assert inner[0] >= inner[1] >= inner[2]


def test_contamination_membership_and_catalogue_sizes(specs):
    compact, _, cusp, _ = specs
    g = draw_galaxy(compact, cusp, 8)
    base = dataclasses.replace(SMALL, projections=20, membership_clip=0.0)
    clean = observe_galaxy(g, base, np.random.default_rng(1))
    hot = dataclasses.replace(base, contamination_fraction=0.3, contamination_sigma_kms=80.0)
    dirty = observe_galaxy(g, hot, np.random.default_rng(1))
    # Without the membership step the foreground stays in: hotter and more extended samples.
    assert np.median(dirty["scalars"][:, 1] - clean["scalars"][:, 1]) > 0.1  # sigma* up by > 25 %
    assert np.median(dirty["scalars"][:, 0] - clean["scalars"][:, 0]) > 0.0  # R_h up (uniform foreground)
    # Independent expectation for the dispersion: a mixture of members (sigma_m) and 30 % foreground (80 km/s).
    s_m = 10.0 ** clean["scalars"][:, 1].astype(np.float64)
    mix = np.sqrt(0.7 * s_m**2 + 0.3 * 80.0**2)
    ratio = 10.0 ** dirty["scalars"][:, 1].astype(np.float64) / mix
    assert 0.75 < np.median(ratio) < 1.25
    # The observer's 3-sigma clipping removes the foreground outside the velocity window, not the ~40 % of it that
    # falls inside ±3σ (a known limit of clipping): σ* ends much closer to the clean value than without it.
    clipped = observe_galaxy(g, dataclasses.replace(hot, membership_clip=3.0), np.random.default_rng(1))
    dirty_excess = np.median(dirty["scalars"][:, 1] - clean["scalars"][:, 1])
    assert 0 < np.median(clipped["scalars"][:, 1] - clean["scalars"][:, 1]) < 0.5 * dirty_excess
    assert np.all(clipped["n_stars"] < 100) and np.all(clipped["n_stars"] > 60)
    wide = observe_galaxy(g, dataclasses.replace(SMALL, projections=40, n_stars=[20, 2000]), np.random.default_rng(2))
    n = wide["n_stars"].astype(float)
    assert n.min() >= 15 and n.max() <= 2000 and n.max() / n.min() > 10  # log-uniform over two decades
    with pytest.raises(ConfigError, match="contamination_fraction"):
        DataConfig(contamination_fraction=1.0)


def test_vary_fractions_draws_each_catalogue_its_own_contamination_and_binary_fractions():
    """vary_fractions: fractions uniform in [0, max] per catalogue (some nearly clean, some near the maximum);
    off: the same fraction in every catalogue, and no extra random draws (older datasets stay bit-identical)."""
    rng0 = np.random.default_rng(0)
    x, y = rng0.normal(0, 0.2, 5000), rng0.normal(0, 0.2, 5000)
    v = rng0.normal(0, 1.0, 5000)  # cold members (1 km/s); contaminants are 50 km/s wide
    base = dataclasses.replace(SMALL, n_stars=[400, 400], v_err_kms=[0.1, 0.1], contamination_fraction=0.5)

    def hot_fractions(cfg: DataConfig, n: int = 120) -> np.ndarray:
        rng = np.random.default_rng(1)
        return np.array([np.mean(np.abs(draw_catalogue(x, y, v, cfg, rng, 0.2)[2]) > 8.0) for _ in range(n)])

    # A contaminant lands beyond 8 km/s with probability 2 Φ(−8/50) = 0.873.
    fixed = hot_fractions(base) / 0.873
    varied = hot_fractions(dataclasses.replace(base, vary_fractions=True)) / 0.873
    assert abs(fixed.mean() - 0.5) < 0.02 and fixed.std() < 0.05
    assert abs(varied.mean() - 0.25) < 0.04 and varied.min() < 0.05 and varied.max() > 0.42
    assert abs(varied.std() - 0.5 / np.sqrt(12)) < 0.03  # uniform on [0, 0.5]
    # Binaries alone (no contamination): the catalogue's velocity spread varies with its own binary fraction.
    binaries = dataclasses.replace(base, contamination_fraction=0.0, binary_fraction=1.0, vary_fractions=True)
    rng = np.random.default_rng(2)
    wide = [np.mean(np.abs(draw_catalogue(x, y, v, binaries, rng, 0.2)[2]) > 4.0) for _ in range(80)]
    assert min(wide) < 0.5 * max(wide)
    # Off by default and then absent from the data identity: hashes of datasets made before the key existed hold.
    assert "vary_fractions" not in data_identity(base) and "vary_fractions" in data_identity(binaries)
    old = {"data": {k: val for k, val in config_to_dict(base).items() if k != "vary_fractions"}}
    assert config_diffs(old, {"data": config_to_dict(base)}) == []
    assert config_diffs(old, {"data": config_to_dict(binaries)})
    with pytest.raises(ConfigError, match="vary_fractions"):
        DataConfig(vary_fractions=True)


def test_dc14_feedback_galaxies_observe():
    dc14 = load_feedback("dc14")
    assert dc14.profile == "dc14"
    g = draw_galaxy(dataclasses.replace(load_suite("median"), tidal_fraction=0.0), dc14, 12)  # untruncated: M200
    cusp = draw_galaxy(load_suite("median"), load_feedback("cusp"), 12)
    assert g.dc14 and not cusp.dc14 and g.m200 == cusp.m200
    x = np.log10(g.mstar / g.m200)
    r = np.geomspace(0.05, 1.0, 5) * g.r200
    # M(<R200) is M200 for both; the inner mass differs as the DC14 shape dictates (less for a shallow inner slope).
    assert g.dm_mass(g.r200) == pytest.approx(g.m200, rel=1e-6)
    from galmass.physics.profiles import dc14_shape

    if dc14_shape(x)[2] < 0.8:
        assert g.dm_mass(r[0]) < cusp.dm_mass(r[0])
    out = observe_galaxy(g, SMALL, np.random.default_rng(0))
    assert all(np.all(np.isfinite(out[k])) for k in ("maps_stars", "labels", "scalars"))
    with pytest.raises(ConfigError, match="no coreNFW n"):
        from galmass.mocks.suites import FeedbackSpec

        FeedbackSpec(profile="dc14", n_range=(0.1, 0.2))


def test_light_transition_draws_alpha_from_its_own_stream_and_samples_that_profile():
    """``light_transition_range`` [1, 2]: every other field of every galaxy is what the default suite draws from the
    same seed (its own child stream), alpha lies in the range; an alpha = 1 galaxy's stars have their projected
    half-number radius at ``a`` (the tracer, not Plummer, is sampled) and its equilibrium DF exists in a cored halo.
    The default [2, 2] leaves galaxies bit-identical (and the recipe out of the data hash)."""
    from galmass.mocks.galaxy import _stellar_df, sample_stars

    base, core = load_suite("median"), load_feedback("core")
    wide = dataclasses.replace(base, light_transition_range=(1.0, 2.0))
    alphas = []
    for seed in range(12):
        g, g_wide = draw_galaxy(base, core, seed), draw_galaxy(wide, core, seed)
        assert g.light_alpha == 2.0 and dataclasses.replace(g_wide, light_alpha=2.0) == g
        alphas.append(g_wide.light_alpha)
    assert 1.0 <= min(alphas) < max(alphas) <= 2.0
    g = dataclasses.replace(draw_galaxy(dataclasses.replace(base, light_transition_range=(1.0, 1.0)), core, 3),
                            light_beta=4.0, light_gamma=0.0, bvh=False, flattened=False, om=False, beta=0.0)
    assert g.light_alpha == 1.0 and not g.plummer and g.tracer.alpha == 1.0
    pos, _ = sample_stars(g, 40_000, np.random.default_rng(0))
    assert abs(np.median(np.hypot(pos[:, 0], pos[:, 1])) / g.a - 1.0) < 0.02
    plummer_like = dataclasses.replace(g, light_alpha=2.0)
    assert abs(np.median(np.hypot(*sample_stars(plummer_like, 40_000, np.random.default_rng(0))[0][:, :2].T))
               / g.a - 1.0) < 0.02  # both at a, but different profiles: the radii differ
    assert not np.allclose(pos, sample_stars(plummer_like, 40_000, np.random.default_rng(0))[0])
    assert _stellar_df(g).f.max() > 0
    assert "light_transition_range" not in data_identity(DataConfig(suites=["median"]))["recipes"]["suites"]["median"]
