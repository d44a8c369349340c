"""Balanced NPE (Delaunoy et al. 2023, "Balancing simulation-based inference for conservative posteriors"):
the posterior's NLL plus λ (E_joint[d] + E_marginal[d] − 1)², with d = σ(log q(y|x) − log p(y)) the classifier
that the posterior q and the labels' marginal p imply. A balanced classifier cannot be overconfident on average
(its posteriors are at least as wide as the exact ones), which is what a model applied off its training mocks needs.

The labels' marginal p(y) has no closed form here (the mock suites' prior is implicit, and the scale-free labels
depend on each observation's σ★ and R_h), so an unconditional flow learns it from the same batches (its own NLL);
the balance term sees its density detached, so the posterior is balanced against p and p is not bent toward q.
Only training uses this module: the saved model is the posterior alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import zuko
from torch import nn

if TYPE_CHECKING:  # network imports this module's balance_violation
    from galmass.models.network import MassPosterior

__all__ = ["Balanced", "balance_violation", "partners"]


def partners(n: int, device: torch.device | None = None) -> torch.Tensor:
    """Index of each sample's partner in a batch of ``n``: neighbours swapped (0↔1, 2↔3, …; the last of an odd
    batch takes its predecessor). Its labels with this sample's context form a product-of-marginals pair. Pairs
    within pairs of samples (not a roll over the batch) are the same whether a global batch is one rank's or is cut
    into contiguous even slices over ranks (:mod:`hpc.sampler`), so DDP trains what one process would."""
    idx = torch.arange(n, device=device) ^ 1
    return torch.where(idx < n, idx, idx - 2).clamp_min(0)


def _global_mean(local: torch.Tensor) -> torch.Tensor:
    """Mean over ranks of per-rank batch means (equal slices), differentiable: the balance condition holds for the
    expectation over the global batch, which a square of each rank's own mean would bias (by its variance)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    import torch.distributed.nn.functional as dist_fn  # backward all-reduces the gradient too

    return dist_fn.all_reduce(local) / dist.get_world_size()


def balance_violation(log_q_joint: torch.Tensor, log_q_marginal: torch.Tensor, log_p_joint: torch.Tensor,
                      log_p_marginal: torch.Tensor) -> torch.Tensor:
    """(E_joint[d] + E_marginal[d] − 1)² over the (global) batch: d = σ(log q − log p) [B]; the "marginal" values
    hold each sample's context with its partner's labels (:func:`partners`), the joint ones its own labels."""
    means = torch.stack([torch.sigmoid(log_q_joint - log_p_joint).mean(),
                         torch.sigmoid(log_q_marginal - log_p_marginal).mean()])
    return (_global_mean(means).sum() - 1.0) ** 2


class Balanced(nn.Module):
    """What balanced training optimises: the posterior plus a flow for the labels' marginal (training only).

    ``forward`` returns the posterior's per-sample NLL [B] and the extra loss terms: "balance" (the members' mean
    violation, to be weighted by ``train.balance``), "prior_nll" (the marginal flow's mean NLL, weight 1: its
    parameters are its own), and "mmd" when a ``target`` batch is given (:meth:`MassPosterior.forward`).
    """

    def __init__(self, posterior: MassPosterior, n_labels: int) -> None:
        super().__init__()
        self.posterior = posterior
        self.prior = zuko.flows.MAF(features=n_labels, context=0, transforms=3, hidden_features=(64, 64))

    def forward(self, batch: dict[str, torch.Tensor], target: dict[str, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        y = self.posterior.to_y(batch["labels"], batch["scalars"]).float()  # buffers only: no gradient
        with torch.autocast(device_type=y.device.type, enabled=False):
            log_p = self.prior().log_prob(y)
        nll, terms = self.posterior(batch, target, log_prior=log_p.detach())
        return nll, {**terms, "prior_nll": -log_p.mean()}
