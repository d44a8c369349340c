"""Model: shapes, normalisation round trip, tracer branches, geometry errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from galmass.config import ModelConfig
from galmass.models import MapEncoder, MassPosterior
from galmass.models.sampling import sample_flow
from galmass.physics.constants import G

_CORR = 0.9 ** np.abs(np.subtract.outer(np.arange(10), np.arange(10)))  # strongly correlated neighbouring radii
NORM = {
    "scalars": {"mean": [-0.3, 1.0, 1.3, 2.0], "std": [0.2, 0.1, 0.2, 0.05]},
    "summary_stars": {"mean": [1.0] * 10, "std": [0.2] * 10},
    "y_stars": {"mean": [0.1 * i for i in range(10)], "std": [0.1] * 10,
                "corr": _CORR.tolist()},
    "y_gas": {"mean": [0.0] * 10, "std": [0.2] * 10, "corr": np.eye(10).tolist()},
}


def batch(n=3, npix=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = {f"maps_{t}": torch.rand(n, 4, npix, npix, generator=g) for t in ("stars", "gas")}
    b.update({f"phase_{t}": torch.rand(n, 1, npix, npix, generator=g) for t in ("stars", "gas")})
    b["scalars"] = torch.tensor([[-0.3, 1.0, 1.2, 2.0]] * n) + 0.01 * torch.rand(n, 4, generator=g)
    b["labels"] = 7.0 + torch.rand(n, 10, generator=g)
    b["summary_stars"] = 1.0 + 0.1 * torch.rand(n, 10, generator=g)
    return b


@pytest.mark.parametrize("tracer,branches", [("stars", 2), ("gas", 2), ("gas+stars", 4)])
def test_branches_and_shapes(tracer, branches):
    torch.manual_seed(0)
    net = MassPosterior(ModelConfig(tracer=tracer, widths=[8, 16], embed_dim=16, flow_hidden=[16]), 16, NORM)
    assert len(net.members) == 1 and len(net.members[0].encoders) == branches
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


@pytest.mark.parametrize("tracer", ["stars", "gas"])
def test_scale_free_model_reads_no_absolute_scale(tracer):
    """With model.scale_free, R_h and the velocity scale set only the mass unit: rescaling a galaxy (R_h × 2, all
    velocities × 3, maps in R_h and v units unchanged) moves every draw by exactly log10(3² × 2); otherwise not."""
    b = batch()
    big = {k: v.clone() for k, v in b.items()}
    big["scalars"][:, :3] += torch.tensor([np.log10(2.0), np.log10(3.0), np.log10(3.0)])
    for scale_free in (True, False):
        torch.manual_seed(0)
        net = MassPosterior(ModelConfig(tracer=tracer, widths=[8], embed_dim=8, flow_hidden=[8],
                                        scale_free=scale_free), 16, NORM).eval()
        draws = []
        for bb in (b, big):
            torch.manual_seed(1)
            draws.append(net.sample(bb, 50))
        shift = draws[1] - draws[0] - np.log10(9.0 * 2.0)
        if scale_free:
            torch.testing.assert_close(shift, torch.zeros_like(shift), atol=1e-4, rtol=0)
        else:
            assert shift.abs().max() > 1e-3  # an untrained net reads the scales weakly, but it reads them
    assert MassPosterior(ModelConfig(tracer="gas", scale_free=True, widths=[8], embed_dim=8, flow_hidden=[8]), 16,
                         NORM).scalar_cols == []


def test_encoder_geometry_errors():
    with pytest.raises(ValueError, match="too small"):
        MapEncoder(4, (8, 8), [8, 16, 32, 64])
    enc = MapEncoder(4, (16, 16), [8, 16], out_dim=5)
    with pytest.raises(ValueError, match=r"expected \[B, 4, H, W\]"):
        enc(torch.zeros(2, 3, 16, 16))
    assert enc(torch.zeros(2, 4, 16, 16)).shape == (2, 5)


def test_label_whitening_decorrelates_and_inverts():
    net = MassPosterior(ModelConfig(tracer="stars", widths=[8], embed_dim=8, flow_hidden=[8], label_noise_dex=0.0),
                        16, NORM)
    # Labels drawn with the normalisation's correlation come out uncorrelated and of unit variance.
    g = torch.Generator().manual_seed(1)
    std = torch.randn(20000, 10, generator=g) @ torch.tensor(np.linalg.cholesky(_CORR), dtype=torch.float32).T
    scalars = torch.zeros(20000, 4)
    labels = std * net.y_std + net.y_mean + net.log_mass_offset(scalars)[:, None]
    y = net.to_y(labels, scalars)
    assert torch.allclose(torch.cov(y.T), torch.eye(10), atol=0.05)
    torch.testing.assert_close(net.from_y(y, scalars), labels, atol=1e-4, rtol=0)
    plain = MassPosterior(ModelConfig(tracer="stars", widths=[8], embed_dim=8, flow_hidden=[8], whiten_labels=False),
                          16, NORM)
    assert torch.cov(plain.to_y(labels, scalars).T)[0, 1] > 0.8  # the check can fail: without whitening, correlated


def test_ensemble_is_a_mixture_of_independent_members():
    torch.manual_seed(0)
    cfg = ModelConfig(tracer="stars", widths=[8], embed_dim=8, flow_hidden=[8], ensemble=3)
    net = MassPosterior(cfg, 16, NORM)
    b = batch(n=4)
    w0, w1 = (m.fusion[0].weight for m in net.members[:2])
    assert not torch.equal(w0, w1)  # independently initialised
    per_member = torch.stack([-m.flow(m.context(*net._inputs(b))).log_prob(net.to_y(b["labels"], b["scalars"]))
                              for m in net.members])
    torch.testing.assert_close(net(b), per_member.mean(0))
    torch.testing.assert_close(net.log_prob(b), torch.logsumexp(-per_member, 0) - math.log(3))
    draws = net.sample(b, 3000)
    assert draws.shape == (3000, 4, 10) and torch.isfinite(draws).all()
    # Stratified mixture: every draw is one member's, each member gives ⌊n/K⌋ or ⌈n/K⌉ of them.
    torch.manual_seed(5)
    mixed = net.sample(b, 10)
    torch.manual_seed(5)
    pools = [net.from_y(sample_flow(m.flow, net.context(b, i), 4), b["scalars"]) for i, m in enumerate(net.members)]
    owner = [[i for i, p in enumerate(pools) if torch.isclose(p, d, atol=1e-5, rtol=0).all(-1).all(-1).any()]
             for d in mixed]
    assert all(len(o) == 1 for o in owner)
    assert sorted(torch.bincount(torch.tensor([o[0] for o in owner]), minlength=3).tolist()) == [3, 3, 4]
    # Summaries enter the context: changing them changes it.
    b2 = dict(b, summary_stars=b["summary_stars"] + 1.0)
    assert not torch.allclose(net.context(b), net.context(b2))


@pytest.mark.parametrize("passes,expected", [(None, 10), (2, 2)])
def test_flow_passes_set_the_sampling_cost(passes, expected):
    """Drawing a sample inverts each transform in ``passes`` conditioner calls (10 labels: 10 when fully
    autoregressive, 2 for coupling layers); the draws are finite and the density is unchanged in form."""
    torch.manual_seed(0)
    cfg = ModelConfig(tracer="stars", widths=[8], embed_dim=8, flow_hidden=[16], flow_transforms=3,
                      flow_passes=passes)
    net = MassPosterior(cfg, 16, NORM)
    flow, b = net.members[0].flow, batch()
    calls = []
    for t in flow.transform.transforms:
        if hasattr(t, "hyper"):
            t.hyper.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        draws = flow(net.context(b)).sample((4,))
    assert len(calls) == 3 * expected
    assert draws.shape == (4, 3, 10) and torch.isfinite(draws).all()
    calls.clear()
    assert torch.isfinite(net(b)).all() and len(calls) == 3  # the density: one call per transform either way
