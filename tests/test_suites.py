"""The shipped suites together cover the dwarfs astronomers observe (σ★ ≈ 3-40 km/s, R_h ≈ 0.03-2 kpc,
M200 ≈ 1e8-1e11 Msun), with the classical dSphs inside the bulk, not the tail."""

from __future__ import annotations

import numpy as np
import pytest

from galmass.maps import dispersion_stars
from galmass.mocks.galaxy import draw_galaxy, sample_stars
from galmass.mocks.projection import project
from galmass.mocks.suites import load_feedback, load_suite

SUITES, N = ("compact", "median", "extended"), 150


@pytest.fixture(scope="module")
def population():
    rows = []
    for suite in SUITES:
        for feedback in ("cusp", "core"):
            for i in range(N):
                g = draw_galaxy(load_suite(suite), load_feedback(feedback), i)
                pos, vel = sample_stars(g, 1000, np.random.default_rng(i))
                x, y, v = project(pos, vel, np.array([0.0, 0.0, 1.0]))
                rows.append((g.m200, float(np.median(np.hypot(x, y))), dispersion_stars(v, 0.0)))
    return np.array(rows)


def test_union_of_suites_spans_the_observed_dwarfs(population):
    m200, rh, sigma = population.T
    assert np.log10(m200).min() < 8.1 and np.log10(m200).max() > 10.9
    lo, hi = np.percentile(rh, [1, 99])
    assert lo < 0.04 and hi > 2.0, (lo, hi)  # ultra-faints (~0.03 kpc) to field dwarfs (~2 kpc)
    lo, hi = np.percentile(sigma, [1, 99])
    assert lo < 3.5 and hi > 35.0, (lo, hi)  # ultra-faints (~3 km/s) to massive dwarfs (~40 km/s)


def test_classical_dsphs_are_in_the_bulk(population):
    _, rh, sigma = population.T
    # Classical Milky Way dSphs: σ 7-12 km/s and R_h 0.2-0.7 kpc (McConnachie 2012); previously < 5 % of mocks.
    classical = (sigma > 7) & (sigma < 12) & (rh > 0.2) & (rh < 0.7)
    assert classical.mean() > 0.1, classical.mean()
