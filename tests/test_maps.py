"""Maps from hand-made catalogues and against numpy's own 2-D histograms."""

from __future__ import annotations

import numpy as np
import pytest

from galmass.maps import dispersion_stars, observation_to_sample

KW = {"npix": 4, "extent_rh": 2.0, "vmax_sigma": 2.0}

# Five stars; the median projected radius is star 3's R = 1 kpc, so positions below are also in units of R_h.
# Pixels are 1 R_h wide with edges at -2, -1, 0, 1, 2 (row = y, column = x).
X = np.array([0.3, 0.4, -0.6, 1.2, 0.0])
Y = np.array([0.4, 0.3, -0.8, 1.5, 3.5])  # star 5 is outside the map (y = 3.5 R_h)
V = np.array([10.0, 20.0, -5.0, 0.0, 25.0]) + 100.0  # systemic 110 km/s
# After removing the mean (110): dv = [0, 10, -15, -10, 15].


def test_hand_made_catalogue():
    out = observation_to_sample(X, Y, V, 0.0, **KW)
    assert out["rh_kpc"] == pytest.approx(1.0)
    assert out["v_sys_kms"] == pytest.approx(110.0)
    # sigma with ddof = 1: (0 + 100 + 225 + 100 + 225) / 4 = 162.5
    assert out["sigma_kms"] == pytest.approx(np.sqrt(162.5))
    m = out["maps_stars"]
    assert m.shape == (4, 4, 4) and m.dtype == np.float32
    expected_w = np.zeros((4, 4))
    expected_w[2, 2], expected_w[1, 1], expected_w[3, 3] = 0.5, 0.25, 0.25  # 4 stars inside, 2 share a pixel
    np.testing.assert_allclose(m[0], expected_w)
    assert m[1, 2, 2] == pytest.approx(5.0) and m[1, 1, 1] == pytest.approx(-15.0) and m[1, 3, 3] == pytest.approx(-10)
    assert m[2, 2, 2] == pytest.approx(5.0)  # std of (0, 10)
    assert m[2, 1, 1] == 0.0 and m[2, 3, 3] == 0.0  # single tracer: no dispersion
    np.testing.assert_array_equal(m[3], expected_w > 0)
    assert np.all(m[1:3][:, expected_w == 0] == 0)  # empty pixels carry nothing
    # Phase map: columns R/R_h in [0, 2) (width 0.5), rows v/sigma in [-2, 2) (width 1).
    s = np.sqrt(162.5)
    ph = out["phase_stars"][0]
    expected_ph = np.zeros((4, 4))
    # star 1: R=0.5, v=0 -> (row 2, col 1); star 2: R=0.5, v=10/s=0.78 -> (2, 1); star 3: R=1, v=-15/s=-1.18 -> (0, 2)
    # star 4: R=1.92, v=-10/s=-0.78 -> (1, 3); star 5: R=3.5 outside.
    assert -2 < -15 / s < -1 and -1 < -10 / s < 0 and 0 < 10 / s < 1
    expected_ph[2, 1], expected_ph[0, 2], expected_ph[1, 3] = 2 / 4, 1 / 4, 1 / 4
    np.testing.assert_allclose(ph, expected_ph)
    # No gas: zero maps and log10 v_rms = 0.
    assert not out["maps_gas"].any() and not out["phase_gas"].any() and out["vrms_gas_kms"] == 0.0
    np.testing.assert_allclose(out["scalars"], [0.0, np.log10(s), 0.0, np.log10(5)], rtol=1e-6, atol=1e-7)


def test_gas_mass_weighting():
    gx, gy = np.array([0.5, 0.5, -1.5]), np.array([0.5, 0.5, 0.5])
    gv = np.array([0.0, 4.0, -20.0]) + 110.0  # same systemic as the stars
    gm = np.array([1.0, 3.0, 4.0])
    out = observation_to_sample(X, Y, V, 2.0, (gx, gy, gv, gm), **KW)
    m = out["maps_gas"]
    assert m[0, 2, 2] == pytest.approx(0.5) and m[0, 2, 0] == pytest.approx(0.5)
    assert m[1, 2, 2] == pytest.approx(3.0)  # (0*1 + 4*3) / 4
    assert m[2, 2, 2] == pytest.approx(np.sqrt(3.0))  # (1*9 + 3*1) / 4
    assert m[1, 2, 0] == pytest.approx(-20.0) and m[2, 2, 0] == 0.0
    vrms = np.sqrt((3 * 16 + 4 * 400) / 8)
    assert out["vrms_gas_kms"] == pytest.approx(vrms)
    assert out["scalars"][2] == pytest.approx(np.log10(vrms))
    assert out["phase_gas"].sum() == pytest.approx(1.0)


def test_random_catalogue_matches_histogram2d():
    rng = np.random.default_rng(3)
    n = 5000
    x, y = rng.normal(size=n) * 2, rng.normal(size=n) * 2
    v = rng.normal(size=n) * 15 + x * 3
    kw = {"npix": 16, "extent_rh": 3.0, "vmax_sigma": 3.0}
    out = observation_to_sample(x, y, v, 1.0, **kw)
    rh = np.median(np.hypot(x, y))
    dv = v - v.mean()
    edges = np.linspace(-3, 3, 17)
    counts, _, _ = np.histogram2d(y / rh, x / rh, bins=[edges, edges])
    sums, _, _ = np.histogram2d(y / rh, x / rh, bins=[edges, edges], weights=dv)
    sq, _, _ = np.histogram2d(y / rh, x / rh, bins=[edges, edges], weights=dv**2)
    m = out["maps_stars"].astype(np.float64)
    np.testing.assert_allclose(m[0], counts / counts.sum(), atol=1e-7)
    filled = counts > 0
    np.testing.assert_allclose(m[1][filled], sums[filled] / counts[filled], rtol=1e-5, atol=1e-4)
    two = counts >= 2
    var = sq[two] / counts[two] - (sums[two] / counts[two]) ** 2
    np.testing.assert_allclose(m[2][two], np.sqrt(np.clip(var, 0, None)), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(m[3], filled)
    s = np.sqrt(np.var(dv, ddof=1) - 1.0)
    assert out["sigma_kms"] == pytest.approx(s)
    ph, _, _ = np.histogram2d(dv / s, np.hypot(x, y) / rh, bins=[np.linspace(-3, 3, 17), np.linspace(0, 3, 17)])
    np.testing.assert_allclose(out["phase_stars"][0], ph / ph.sum(), atol=1e-7)


def test_degenerate_inputs_stay_finite():
    # Identical velocities: sigma hits the floor (not 0, not NaN).
    out = observation_to_sample([1.0, -1.0, 0.5], [0.0, 0.5, -2.0], [3.0, 3.0, 3.0], 2.0, **KW)
    assert out["sigma_kms"] == pytest.approx(np.sqrt(0.2**2 + 1e-6))
    for key in ("maps_stars", "phase_stars", "maps_gas", "phase_gas", "scalars"):
        assert np.all(np.isfinite(out[key]))
    assert dispersion_stars([5.0], 0.0) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="non-finite"):
        observation_to_sample([1.0, np.nan], [0.0, 1.0], [1.0, 2.0], 1.0, **KW)
    with pytest.raises(ValueError, match="median projected radius"):
        observation_to_sample([0.0, 0.0], [0.0, 0.0], [1.0, 2.0], 1.0, **KW)


def test_gas_beam_smoothing_against_direct_convolution():
    """Beam maps: the weight, weight*v and weight*v^2 images convolved with a Gaussian (checked by an explicit
    sum over pixel pairs, independent of scipy.ndimage), then the moments; no beam leaves maps unchanged."""
    from galmass.maps import BEAM_MASK_FRACTION, sky_maps

    rng = np.random.default_rng(5)
    u, w = rng.normal(0, 0.8, 400), rng.normal(0, 0.8, 400)
    v = 20.0 * u + rng.normal(0, 5.0, 400)  # a velocity gradient: the beam smears it into dispersion
    m = rng.uniform(0.5, 1.5, 400)
    npix, extent, fwhm = 16, 2.0, 0.6
    plain = sky_maps(u, w, v, m, npix=npix, extent=extent)
    assert np.array_equal(plain, sky_maps(u, w, v, m, npix=npix, extent=extent, beam_fwhm=0.0))
    beam = sky_maps(u, w, v, m, npix=npix, extent=extent, beam_fwhm=fwhm)
    # Independent: pixel sums, then an explicit Gaussian-weighted sum over all pixel pairs.
    edges = np.linspace(-extent, extent, npix + 1)
    s0 = np.histogram2d(w, u, [edges, edges], weights=m)[0]
    s1 = np.histogram2d(w, u, [edges, edges], weights=m * v)[0]
    s2 = np.histogram2d(w, u, [edges, edges], weights=m * v * v)[0]
    sig_pix = fwhm / (2 * np.sqrt(2 * np.log(2))) / (2 * extent / npix)
    yy, xx = np.meshgrid(np.arange(npix), np.arange(npix), indexing="ij")
    d2 = (yy.ravel()[:, None] - yy.ravel()[None]) ** 2 + (xx.ravel()[:, None] - xx.ravel()[None]) ** 2
    kern = np.exp(-0.5 * d2 / sig_pix**2) / (2 * np.pi * sig_pix**2)
    kern[d2 > (4 * sig_pix) ** 2 + 2] = 0.0  # scipy truncates at 4 sigma (per axis); edge pixels matter little
    c0, c1, c2 = (kern @ s.ravel() for s in (s0, s1, s2))
    det = c0 > BEAM_MASK_FRACTION * s0.sum()
    mean = np.where(det, c1 / np.where(det, c0, 1), 0)
    sig = np.where(det, np.sqrt(np.clip(c2 / np.where(det, c0, 1) - mean**2, 0, None)), 0)
    inner = (c0 > 0.01 * c0.max()).reshape(npix, npix)
    np.testing.assert_allclose(beam[1][inner], mean.reshape(npix, npix)[inner], atol=0.3)
    np.testing.assert_allclose(beam[2][inner], sig.reshape(npix, npix)[inner], rtol=0.03, atol=0.3)
    np.testing.assert_allclose(beam[0].sum(), 1.0, rtol=1e-5)
    # Beam smearing: the dispersion map rises where the gradient is resolved out, and the mask grows.
    both = (plain[3] > 0) & inner
    assert np.median(beam[2][both]) > np.median(plain[2][both]) and beam[3].sum() > plain[3].sum()
    with pytest.raises(ValueError, match="beam_fwhm"):
        sky_maps(u, w, v, m, npix=npix, extent=extent, beam_fwhm=-1.0)
