"""galmass.maps_batch: many catalogues' model inputs at once, bit for bit those of observation_to_sample."""

from __future__ import annotations

import numpy as np
import pytest

import galmass.maps_batch as maps_batch
from galmass.maps import observation_to_sample
from galmass.maps_batch import _prefix_sums, observations_to_samples

SHIPPED = dict(npix=32, extent_rh=4.0, vmax_sigma=4.0)
"""The shipped model's map settings (its data_config also has membership_clip 3 and recentre on)."""


def _dwarf(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A Plummer dwarf (R_h 0.1-1 kpc, σ 3-15 km/s) of n stars, off its catalogue origin, ~10 % foreground stars
    (wide velocities, spread over the field), velocity errors varying per star (0.5-10 km/s)."""
    rh, sigma = 10 ** rng.uniform(-1, 0), rng.uniform(3, 15)
    u = rng.uniform(0.01, 0.99, n)
    radius = rh * np.sqrt(u / (1 - u))
    phi = rng.uniform(0, 2 * np.pi, n)
    x, y = radius * np.cos(phi) + rng.normal(0, 0.2 * rh), radius * np.sin(phi) + rng.normal(0, 0.2 * rh)
    err = 10 ** rng.uniform(-0.3, 1.0, n)
    v = 40.0 + rng.normal(0, sigma, n) + rng.normal(0, 1, n) * err
    fg = rng.random(n) < rng.uniform(0, 0.2)
    v[fg] = rng.normal(40, 80, fg.sum())
    x[fg], y[fg] = rng.uniform(-4, 4, (2, fg.sum())) * rh
    return x, y, v, err


def _assert_same(got: dict, expected: dict) -> None:
    """Same keys in the same order, arrays equal bit for bit with the same dtype and shape, scalars of one type."""
    assert list(got) == list(expected)
    for key, want in expected.items():
        have = got[key]
        if isinstance(want, np.ndarray):
            assert have.dtype == want.dtype and have.shape == want.shape, key
            assert np.array_equal(have, want) and have.tobytes() == want.tobytes(), key
        else:
            assert type(have) is type(want) and have == want, (key, have, want)


def _counted(monkeypatch) -> list[int]:
    """Count the catalogues maps_batch leaves to the per-catalogue path."""
    calls = [0]
    alone = maps_batch.observation_to_sample

    def counting(*args, **kwargs):
        calls[0] += 1
        return alone(*args, **kwargs)

    monkeypatch.setattr(maps_batch, "observation_to_sample", counting)
    return calls


# star counts: below and at MIN_STARS, pairwise-sum block edges (8, 128, 256), a mixed table, N★ up to 1000
COUNTS = [7, 8, 9, 12, 20, 20, 20, 20] + [50] * 6 + [100] * 12 + [127, 128, 129, 129, 129, 129] + [257] * 4 \
    + [1000] * 4


@pytest.mark.parametrize("clip, recentre", [(3.0, True), (0.0, False), (2.0, False), (0.0, True)])
def test_batch_equals_one_catalogue_at_a_time(clip, recentre, monkeypatch):
    """Mixed star counts, foreground stars, per-star errors: every array and number equal to the single path's,
    with the shipped model's observer steps (membership clip 3, recentring) and without them."""
    rng = np.random.default_rng([int(10 * clip), recentre])
    stars = [_dwarf(rng, n) for n in COUNTS]
    kw = dict(SHIPPED, membership_clip=clip, recentre=recentre)
    expected = [observation_to_sample(*s, **kw) for s in stars]
    alone = _counted(monkeypatch)
    got = observations_to_samples(stars, **kw)
    for g, e in zip(got, expected):
        _assert_same(g, e)
    assert alone[0] <= len(stars) // 3, "most catalogues should take the batch path"


def test_batch_equals_one_catalogue_at_a_time_on_many_similar_catalogues(monkeypatch):
    """200 catalogues of 100 stars (the predict benchmark's shape), clipped and recentred: all batched, all equal."""
    rng = np.random.default_rng(7)
    stars = [_dwarf(rng, 100) for _ in range(200)]
    kw = dict(SHIPPED, membership_clip=3.0, recentre=True)
    alone = _counted(monkeypatch)
    got = observations_to_samples(stars, **kw)
    assert alone[0] < 20
    for s, g in zip(stars, got):
        _assert_same(g, observation_to_sample(*s, **kw))


def test_edge_cases_and_errors_are_the_single_paths():
    """Ties, a velocity spread of zero, a scalar error, refusals: the same result or the same ValueError message."""
    rng = np.random.default_rng(3)
    x, y, v, err = _dwarf(rng, 40)
    rows = [
        (x, y, v, 2.0),  # one error for all stars
        (x, y, np.round(v), np.full(40, 1.0)),  # tied velocities
        (x, y, np.full(40, 7.0), np.zeros(40)),  # no spread: σ from the floor, MAD 0
        (np.round(x, 1), np.round(y, 1), v, err),  # tied positions and radii
        (x, y, v, err), (x, y, v, err), (x, y, v, err), (x, y, v, err),  # a group of equal catalogues
        (np.where(np.arange(40) == 3, np.nan, x), y, v, err),  # non-finite position
        (x, y, v, -err),  # negative errors
        (np.zeros(40), np.zeros(40), v, err),  # R_h = 0
        (x, y, v, err[:5]),  # one error per star, but too few
        (x[:3], y[:3], v[:3], err[:3]),  # three stars
        (x[:0], y[:0], v[:0], err[:0]),  # none
        (x, y[:-1], v, err),  # lengths differ
    ]
    rows += [(x * 1e35, y, v, err)] * 4  # absurd scales: left to the per-catalogue path
    for clip, recentre in ((3.0, True), (0.0, False)):
        kw = dict(SHIPPED, membership_clip=clip, recentre=recentre)
        for s, got in zip(rows, observations_to_samples(rows, **kw)):
            try:
                expected = observation_to_sample(*s, **kw)
            except ValueError as e:
                assert isinstance(got, ValueError) and str(got) == str(e)
            else:
                _assert_same(got, expected)


def test_prefix_sums_equal_numpys_sum_of_each_slice():
    """Sums of the first k entries per row, k = 0 to past two pairwise-sum blocks: bit-identical to np.sum."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 300)) * 10 ** rng.uniform(-8, 8, (400, 1))
    k = rng.integers(0, 301, 400)
    k[:50] = 300
    got = _prefix_sums(a, k)
    assert np.array_equal(got, [np.sum(a[i, :k[i]].copy()) for i in range(400)])
    assert np.array_equal(_prefix_sums(a, np.full(400, 300)), [np.sum(row.copy()) for row in a])


def test_radial_medians_equal_numpys_median_of_each_slice():
    """Medians of the first k distances per row (ties, zeros, odd and even k): bit-identical to np.median."""
    from galmass.maps_batch import _radial_medians

    rng = np.random.default_rng(1)
    a = np.hypot(*np.round(rng.normal(size=(2, 500, 120)), 1))  # many ties
    a[:20, :60] = 0.0
    k = rng.integers(1, 121, 500)
    assert np.array_equal(_radial_medians(a, k), [np.median(a[i, :k[i]].copy()) for i in range(500)])
