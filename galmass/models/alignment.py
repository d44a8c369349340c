"""Embedding alignment between a labelled source domain and an unlabelled target domain.

The squared maximum mean discrepancy (Gretton et al. 2012, JMLR 13, 723) between two samples of embeddings with
a sum of Gaussian kernels whose bandwidths span the pairwise distances (the median heuristic times 2^k, as in
Long et al. 2015's multi-kernel MMD): a differentiable two-sample distance that is zero when the two embedding
distributions agree. Added to the NLL it pushes the encoder towards features the domains share (the labels of
the target are never used).
"""

from __future__ import annotations

import torch

__all__ = ["mmd2"]


def mmd2(a: torch.Tensor, b: torch.Tensor, scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)) -> torch.Tensor:
    """Unbiased squared MMD between samples ``a`` [n, d] and ``b`` [m, d] (n, m >= 2), multi-bandwidth Gaussian.

    The base bandwidth is the median pairwise squared distance of the pooled sample (detached, so it adapts to
    the embedding's scale without being optimised away).
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"need a [n, d] and b [m, d] with n, m >= 2, got {tuple(a.shape)} and {tuple(b.shape)}")
    x = torch.cat([a, b])
    d2 = torch.cdist(x, x).pow(2)
    base = d2.detach()[d2.detach() > 0].median().clamp_min(1e-12)
    k = sum(torch.exp(-d2 / (base * s)) for s in scales)
    n, m = len(a), len(b)
    kaa, kbb, kab = k[:n, :n], k[n:, n:], k[:n, n:]
    return ((kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1)) + (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1))
            - 2 * kab.mean())
