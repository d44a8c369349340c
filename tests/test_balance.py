"""Balanced NPE (``train.balance``): the balance condition on a known posterior, the training objective's terms and
gradients, and balanced training under torchrun and resume."""

from __future__ import annotations

import shutil
import sys

import pytest
import torch

from conftest import TINY_MODEL, TINY_TRAIN, run_cmd, tiny_data_args
from galmass.config import ConfigError, ModelConfig, TrainConfig
from galmass.models import MassPosterior
from galmass.models.balance import Balanced, balance_violation, partners
from test_models import NORM, batch

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _gaussian_violation(width: float, n: int = 200_000) -> float:
    """Violation for θ ~ N(0, 1), x = θ + N(0, 0.5²) and a posterior of the exact mean and ``width`` × the exact
    standard deviation (1: the exact posterior)."""
    g = torch.Generator().manual_seed(1)
    theta = torch.randn(n, generator=g, dtype=torch.float64)
    x = theta + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    mean, sd = x / 1.25, width * (0.25 / 1.25) ** 0.5
    post = torch.distributions.Normal(mean, sd)
    prior = torch.distributions.Normal(0.0, 1.0)
    other = theta[partners(n)]
    return float(balance_violation(post.log_prob(theta), post.log_prob(other), prior.log_prob(theta),
                                   prior.log_prob(other)))


def test_exact_posterior_is_balanced_and_an_overconfident_one_is_not():
    exact = _gaussian_violation(1.0)
    assert exact < 1e-5  # E_joint[d] + E_marginal[d] = 1 for the Bayes-optimal classifier (Monte Carlo ~1e-3)²
    narrow = [_gaussian_violation(w) for w in (0.7, 0.5, 0.3)]
    assert narrow[0] > 20 * exact and narrow == sorted(narrow)  # the more overconfident, the more unbalanced


def test_objective_terms_and_where_their_gradients_go():
    torch.manual_seed(0)
    net = MassPosterior(ModelConfig(tracer="stars", widths=[8], embed_dim=8, flow_hidden=[16]), 16, NORM)
    obj = Balanced(net, 10)
    b = batch(n=8)
    b["labels"] = net.from_y(0.5 * torch.randn(8, 10), b["scalars"])  # typical labels: σ(log q − log p) unsaturated
    nll, terms = obj(b)
    torch.testing.assert_close(nll, net(b), rtol=0, atol=0)  # the posterior's NLL is the plain model's
    assert set(terms) == {"balance", "prior_nll"} and all(torch.isfinite(t) for t in terms.values())
    prior_params = list(obj.prior.parameters())
    grads = torch.autograd.grad(terms["balance"], prior_params + list(net.parameters()), allow_unused=True)
    assert all(g is None for g in grads[:len(prior_params)])  # the marginal flow is not bent toward q
    assert any(g is not None and g.abs().sum() > 0 for g in grads[len(prior_params):])
    grads = torch.autograd.grad(terms["prior_nll"], list(net.parameters()), allow_unused=True)
    assert all(g is None for g in grads)  # and the posterior is not trained by the marginal's NLL
    assert set(obj.posterior.state_dict()) == set(net.state_dict())  # the saved model holds no marginal flow


def test_partners_pair_neighbours_so_rank_slices_pair_alike():
    assert partners(6).tolist() == [1, 0, 3, 2, 5, 4]
    assert partners(5).tolist() == [1, 0, 3, 2, 3] and partners(1).tolist() == [0]
    whole = partners(8)
    assert torch.equal(torch.cat([partners(4), partners(4) + 4]), whole)  # two ranks' slices pair as one batch


def test_bad_balance_settings_are_refused():
    with pytest.raises(ConfigError, match="train.balance"):
        TrainConfig(balance=-1.0)
    with pytest.raises(ConfigError, match="shuffle_block=1"):
        TrainConfig(balance=10.0, shuffle_block=32)


@pytest.mark.slow
def test_balanced_training_two_ranks_and_exact_resume(tiny_dataset, tmp_path):
    args = [*tiny_data_args(tiny_dataset), "--train.threads=1", *TINY_MODEL, *TINY_TRAIN, "--train.balance=100",
            "--train.max_steps_per_epoch=4"]
    one, two = tmp_path / "one", tmp_path / "two"
    out = run_cmd([sys.executable, "-m", "galmass.train", *args, f"--train.run_dir={one}"], env_extra=ONE_THREAD)
    assert "balanced NPE (λ = 100)" in out.stdout
    run_cmd([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
             "galmass.train", *args, f"--train.run_dir={two}"], env_extra=ONE_THREAD)
    last = {r: torch.load(r / "last.pt", weights_only=False)["model"] for r in (one, two)}
    for key in last[one]:
        torch.testing.assert_close(last[two][key], last[one][key], atol=1e-5, rtol=0, msg=key)
    ckpts = sorted((one / "checkpoints").glob("ckpt-*.pt"))
    assert "label_prior" in torch.load(ckpts[-1], weights_only=False)

    # Resume from the epoch before the last: the same weights only if the marginal flow was restored too.
    again = tmp_path / "again"
    shutil.copytree(one, again)
    for path in [again / "done.json", again / "last.pt", sorted((again / "checkpoints").glob("ckpt-*.pt"))[-1]]:
        path.unlink()
    out = run_cmd([sys.executable, "-m", "galmass.train", *args, f"--train.run_dir={again}"], env_extra=ONE_THREAD)
    assert "resuming" in out.stdout
    resumed = torch.load(again / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(resumed[k], last[one][k]) for k in resumed)
