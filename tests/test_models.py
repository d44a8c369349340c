"""Model: shapes, normalisation round trip, tracer branches, geometry errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from galmass.config import ModelConfig
from galmass.models import MapEncoder, MassPosterior
from galmass.physics.constants import G

NORM = {
    "scalars": {"mean": [-0.3, 1.0, 1.3, 2.0], "std": [0.2, 0.1, 0.2, 0.05]},
    "y_stars": {"mean": [0.1 * i for i in range(10)], "std": [0.1] * 10},
    "y_gas": {"mean": [0.0] * 10, "std": [0.2] * 10},
}


def batch(n=3, npix=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = {f"maps_{t}": torch.rand(n, 4, npix, npix, generator=g) for t in ("stars", "gas")}
    b.update({f"phase_{t}": torch.rand(n, 1, npix, npix, generator=g) for t in ("stars", "gas")})
    b["scalars"] = torch.tensor([[-0.3, 1.0, 1.2, 2.0]] * n) + 0.01 * torch.rand(n, 4, generator=g)
    b["labels"] = 7.0 + torch.rand(n, 10, generator=g)
    return b


@pytest.mark.parametrize("tracer,branches", [("stars", 2), ("gas", 2), ("gas+stars", 4)])
def test_branches_and_shapes(tracer, branches):
    torch.manual_seed(0)
    net = MassPosterior(ModelConfig(tracer=tracer, widths=[8, 16], embed_dim=16, flow_hidden=[16]), 16, NORM)
    assert len(net.encoders) == branches
    b = batch()
    assert net(b).shape == (3,)
    assert net.sample(b, 5).shape == (5, 3, 10)


def test_label_scaling_is_physical_and_invertible():
    net = MassPosterior(ModelConfig(tracer="stars", widths=[8], embed_dim=8, flow_hidden=[8]), 16, NORM)
    b = batch()
    s = b["scalars"]
    # log10(σ² R_h / G) by hand
    expected = 2 * s[:, 1] + s[:, 0] - math.log10(G)
    torch.testing.assert_close(net.log_mass_offset(s), expected)
    y = net.to_y(b["labels"], s)
    torch.testing.assert_close(net.from_y(y, s), b["labels"], atol=1e-5, rtol=0)
    gas = MassPosterior(ModelConfig(tracer="gas", widths=[8], embed_dim=8, flow_hidden=[8]), 16, NORM)
    torch.testing.assert_close(gas.log_mass_offset(s), 2 * s[:, 2] + s[:, 0] - math.log10(G))


def test_maps_are_scale_free():
    """Multiplying all velocities (maps and σ) by k leaves the context unchanged except via the σ scalar."""
    torch.manual_seed(0)
    net = MassPosterior(ModelConfig(tracer="stars", widths=[8], embed_dim=8, flow_hidden=[8]), 16, NORM)
    b = batch()
    prepared = net.prepare_map("maps_stars", b["maps_stars"], b["scalars"])
    b2 = {k: v.clone() for k, v in b.items()}
    b2["maps_stars"][:, 1:3] *= 3.0
    b2["scalars"][:, 1] += np.log10(3.0)
    torch.testing.assert_close(net.prepare_map("maps_stars", b2["maps_stars"], b2["scalars"]), prepared)


def test_encoder_geometry_errors():
    with pytest.raises(ValueError, match="too small"):
        MapEncoder(4, (8, 8), [8, 16, 32, 64])
    enc = MapEncoder(4, (16, 16), [8, 16], out_dim=5)
    with pytest.raises(ValueError, match=r"expected \[B, 4, H, W\]"):
        enc(torch.zeros(2, 3, 16, 16))
    assert enc(torch.zeros(2, 4, 16, 16)).shape == (2, 5)
