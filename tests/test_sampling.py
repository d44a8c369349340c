"""galmass.models.sampling: posterior draws with the context's share computed once, equal to zuko's own."""

from __future__ import annotations

import pytest
import torch
import zuko

from galmass.models import sampling
from galmass.models.sampling import CHUNK_ROWS, sample_flow


@pytest.mark.parametrize("flow_cls", [zuko.flows.MAF, zuko.flows.NSF])
@pytest.mark.parametrize("passes", [2, 3, None])
def test_draws_equal_zukos_for_the_same_seed(flow_cls, passes):
    """Same base noise, same transforms: the draws agree with ``flow(c).sample`` to float32 rounding, across
    several chunks of draws (n × B > CHUNK_ROWS)."""
    torch.manual_seed(0)
    flow = flow_cls(features=10, context=12, transforms=3, hidden_features=(32, 32), passes=passes)
    c = torch.randn(5, 12)
    n = CHUNK_ROWS // 5 * 2 + 7
    torch.manual_seed(1)
    expected = flow(c).sample((n,))
    torch.manual_seed(1)
    got = sample_flow(flow, c, n)
    assert got.shape == (n, 5, 10)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    torch.manual_seed(1)
    assert torch.equal(sample_flow(flow, c, n), got)  # deterministic for a seed


def test_first_pass_is_evaluated_once_per_context(monkeypatch):
    """The first inverse pass starts from x = 0: its hidden layers see one row per context, not one per draw."""
    torch.manual_seed(0)
    flow = zuko.flows.MAF(features=10, context=12, transforms=2, hidden_features=(32, 32), passes=2)
    rows, phi = [], sampling._Inverse._phi

    def counted(self, h, *args):
        rows.append(h.shape[:-1].numel())
        return phi(self, h, *args)

    monkeypatch.setattr(sampling._Inverse, "_phi", counted)
    sample_flow(flow, torch.randn(4, 12), 100)
    assert sorted(rows) == [4, 4, 400, 400]  # per transform: 4 contexts once, then 100 draws × 4 contexts


def test_unsupported_flows_are_sampled_by_zuko():
    """A flow it does not know (residual hyper-networks here) goes through zuko's sampler unchanged."""
    torch.manual_seed(0)
    flow = zuko.flows.MAF(features=4, context=3, transforms=2, hidden_features=(8, 8), residual=True)
    c = torch.randn(2, 3)
    torch.manual_seed(1)
    expected = flow(c).sample((50,))
    torch.manual_seed(1)
    assert torch.equal(sample_flow(flow, c, 50), expected)
