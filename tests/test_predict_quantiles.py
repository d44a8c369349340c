"""galmass.predict's batched posterior summaries: the same numbers as numpy's percentiles, one sort per batch."""

from __future__ import annotations

import numpy as np
import pytest

from galmass.predict import _quantiles


@pytest.mark.parametrize("n", [1, 2, 7, 200, 1000])
def test_quantiles_equal_numpys_percentiles(n):
    """16/50/84 % of float32 draws, galaxy by galaxy: bit-identical to np.percentile (linear) in float64."""
    rng = np.random.default_rng(n)
    draws = [rng.normal(7.0, 0.3, (n, 10)).astype(np.float32) for _ in range(13)]
    expected = np.stack([np.percentile(d.astype(np.float64), [16, 50, 84], axis=0) for d in draws], axis=1)
    got = _quantiles(draws)
    assert got.shape == (3, 13, 10) and got.dtype == np.float64
    assert np.array_equal(got, expected)
