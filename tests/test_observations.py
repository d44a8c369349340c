"""The observer's side of a mock: binaries (Kepler), membership clipping, centring on the stars."""

from __future__ import annotations

import numpy as np
import pytest

from galmass.maps import estimate_centre, membership, observation_to_sample
from galmass.mocks.binaries import binary_velocities, semi_amplitude_kms, true_anomaly


def test_semi_amplitudes_of_the_solar_system():
    # Independent values: the Sun's reflex amplitude is 12.5 m/s from Jupiter and 0.089 m/s from the Earth.
    jupiter = semi_amplitude_kms(np.array([11.862]), 1.0, np.array([9.546e-4]), np.array([0.0489]), np.array([1.0]))
    earth = semi_amplitude_kms(np.array([1.0]), 1.0, np.array([3.003e-6]), np.array([0.0167]), np.array([1.0]))
    assert jupiter[0] * 1e3 == pytest.approx(12.5, rel=0.01)
    assert earth[0] * 1e3 == pytest.approx(0.0894, rel=0.01)


def test_kepler_solution():
    M = np.linspace(0, 2 * np.pi, 50, endpoint=False)
    np.testing.assert_allclose(true_anomaly(M, np.zeros_like(M)) % (2 * np.pi), M, atol=1e-12)  # circular: ν = M
    e = np.full_like(M, 0.7)
    nu = true_anomaly(M, e)
    E = 2 * np.arctan(np.sqrt((1 - e) / (1 + e)) * np.tan(nu / 2))
    np.testing.assert_allclose(np.mod(E - e * np.sin(E), 2 * np.pi), np.mod(M, 2 * np.pi), atol=1e-9)


def test_binary_velocity_population():
    v = binary_velocities(200_000, np.random.default_rng(0))
    assert abs(np.median(v)) < 0.05  # symmetric
    # Most binaries are wide (log P ~ 4.8 d): sub-km/s; a tail of close ones reaches tens of km/s.
    assert 0.5 < np.mean(np.abs(v) < 1.0) < 0.9 and 0.005 < np.mean(np.abs(v) > 10.0) < 0.1
    assert np.all(np.isfinite(v))


def test_membership_removes_a_hot_foreground_and_keeps_a_clean_sample():
    rng = np.random.default_rng(1)
    members = rng.normal(0.0, 10.0, 900)
    clean = membership(members, 1.0, clip=3.0)
    assert clean.mean() > 0.99  # a Gaussian loses only its 0.3 % tail
    v = np.concatenate([members, rng.uniform(-300, 300, 100)])
    keep = membership(v, 1.0, clip=3.0)
    assert keep[:900].mean() > 0.99 and keep[900:].mean() < 0.15  # outside ±30 km/s of 600 km/s: 90 % gone
    assert membership(v, 1.0, clip=0.0).all()


def test_centre_from_the_stars_and_observation_recentres():
    rng = np.random.default_rng(2)
    x, y = rng.normal(0.4, 1.0, 4000), rng.normal(-0.3, 1.0, 4000)
    cx, cy = estimate_centre(x, y)
    # The clipped centroid uses the inner ~3/4 of the stars: its noise is ~1.2 / sqrt(N) per axis (measured over
    # 200 seeds), ~1.7 / sqrt(N) in radius; 5 / sqrt(N) is a ~3-sigma bound.
    assert np.hypot(cx - 0.4, cy + 0.3) < 5 * 1.0 / np.sqrt(4000)
    v = rng.normal(0, 10, 4000)
    off = observation_to_sample(x, y, v, 1.0, npix=16, extent_rh=4.0, vmax_sigma=4.0, recentre=False)
    on = observation_to_sample(x, y, v, 1.0, npix=16, extent_rh=4.0, vmax_sigma=4.0, recentre=True)
    assert on["centre_x_kpc"] == pytest.approx(cx) and on["centre_y_kpc"] == pytest.approx(cy)
    assert on["rh_kpc"] < off["rh_kpc"]  # about the right centre the stars are more concentrated
    assert on["summary_stars"].shape == off["summary_stars"].shape == (10,)
