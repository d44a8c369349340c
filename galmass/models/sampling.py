"""Posterior sampling of a zuko masked autoregressive flow, with the context's share computed once per context.

``flow(c).sample((n,))`` evaluates the whole hyper-network for every draw and every inverse pass, although with
n draws per context (a posterior of one catalogue) much of it is the same for all n draws:

- the first inverse pass starts from x = 0, so its output depends on the context alone: one evaluation per
  context, broadcast over the n draws (half of the work of a coupling flow, ``passes=2``);
- the first layer is W [x, c] + b = W_x x + (W_c c + b): the bracket is one product per context, and per draw
  only the small W_x x remains (10 labels against a 64-wide context here).

Same arithmetic as zuko's inverse (the same univariate transform, the same activations and masks) up to the
order of float additions; the base draws come from zuko's own distribution, so a seed gives the same noise. zuko
has no such path (its transforms see one joint input), hence this module. Anything but a plain masked
autoregressive flow (MAF/NSF) is sampled by zuko itself.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from zuko.flows import Flow
from zuko.flows.autoregressive import MaskedAutoregressiveTransform
from zuko.nn import MaskedLinear
from zuko.transforms import MonotonicAffineTransform
from zuko.utils import unpack

__all__ = ["sample_flow", "tempered_log_prob"]


def _supported(flow: nn.Module) -> bool:
    """A zuko Flow whose transforms are all masked autoregressive with a plain (non-residual) MaskedMLP."""
    transforms = getattr(getattr(flow, "transform", None), "transforms", None)
    return (isinstance(flow, Flow) and transforms is not None and len(transforms) > 0
            and all(isinstance(t, MaskedAutoregressiveTransform) and t.order is not None
                    and isinstance(t.hyper[0], MaskedLinear) and isinstance(t.hyper[-1], MaskedLinear)
                    and all(isinstance(m, MaskedLinear) or not list(m.parameters()) for m in t.hyper)
                    for t in transforms))


CHUNK_ROWS = 4096
"""Draws × contexts per evaluation of the hyper-network: the activations (rows × hidden width floats, 2 MiB at 128)
stay in cache and the allocator reuses them. One 32 × 1000-draw block at once was 6× slower on a 2-core EPYC: its
16 MiB activations were freshly mapped pages on every layer (ReLU alone took half the time)."""


class _Inverse:
    """t(c)⁻¹ for one transform and fixed contexts c [B, C]: the context's share precomputed, then any y [m, B, F].

    Pass p (p >= 2) of zuko's inverse fixes the features of order group p - 1 (the earlier groups come out
    unchanged, the later ones are overwritten by later passes), so only their rows of the output layer are
    evaluated and only they are updated. The per-draw layers run as 2-D ``addmm`` on masks applied once, with
    activations in place, and zuko's default affine transform inverts in one fused expression.
    """

    def __init__(self, t: MaskedAutoregressiveTransform, c: torch.Tensor) -> None:
        first, last = t.hyper[0], t.hyper[-1]
        w = first.mask * first.weight  # [H, F + C]
        features = w.shape[1] - c.shape[-1]
        self.t = t
        self.layers = [((m.mask * m.weight).T.contiguous(), m.bias) if isinstance(m, MaskedLinear) else m
                       for m in list(t.hyper)[1:-1]]
        self.affine = t.univariate is MonotonicAffineTransform and t.shapes == ((), ())
        self.w_x = w[:, :features].T.contiguous()  # [F, H]
        self.c_part = c @ w[:, features:].T + first.bias  # [B, H]: the context's share of the first layer
        w_out = last.mask * last.weight
        self.first_pass = self._univariate(self._phi(self.c_part.clone(), w_out.T.contiguous(), last.bias))  # x = 0
        self.later = []  # (features fixed by the pass, their output rows' weights and biases), passes 2..P
        for group in range(1, t.passes):
            feats = torch.nonzero(t.order == group).flatten()
            rows = (feats[:, None] * t.total + torch.arange(t.total)).flatten()
            if feats.numel() and torch.equal(feats, torch.arange(int(feats[0]), int(feats[0]) + feats.numel())):
                feats = slice(int(feats[0]), int(feats[0]) + feats.numel())  # contiguous: a view, not a gather
            self.later.append((feats, w_out[rows].T.contiguous(), last.bias[rows]))

    def _phi(self, h: torch.Tensor, w_out_t: torch.Tensor, b_out: torch.Tensor) -> torch.Tensor:
        """Output-layer parameters [..., features, total] of a freshly computed first-layer activation h [..., H]."""
        lead, h = h.shape[:-1], h.reshape(-1, h.shape[-1])
        for layer in self.layers:
            if isinstance(layer, tuple):
                h = torch.addmm(layer[1], h, layer[0])
            elif isinstance(layer, nn.ReLU):
                h = h.relu_()  # h is this call's own tensor
            else:
                h = layer(h)
        return torch.addmm(b_out, h, w_out_t).reshape(*lead, -1, self.t.total)

    def _invert(self, h: torch.Tensor, w_out_t: torch.Tensor, b_out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        phi = self._phi(h, w_out_t, b_out)
        if not self.affine:
            return self._univariate(phi).inv(y)
        # zuko's MonotonicAffineTransform: log a = s / (1 + |s / log(slope)|), x = (y - shift) / a
        shift, s = phi[..., 0], phi[..., 1]
        return (y - shift).mul_(torch.exp(s.div(s.mul(_INV_LOG_SLOPE).abs_().add_(1.0)).neg_()))

    def _univariate(self, phi: torch.Tensor):
        return self.t.univariate(*unpack(phi, self.t.shapes))

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        """x with t(c)(x) = y, as zuko's ``AutoregressiveTransform._inverse`` (``passes`` sequential passes)."""
        x = self.first_pass.inv(y)
        for feats, w_out_t, b_out in self.later:
            h = torch.matmul(x, self.w_x).add_(self.c_part)
            x[..., feats] = self._invert(h, w_out_t, b_out, y[..., feats])
        return x


_INV_LOG_SLOPE = 1.0 / math.log(1e-3)
"""1 / log(slope) of zuko's MonotonicAffineTransform at its default minimum slope (the flows galmass builds)."""


@torch.no_grad()
def sample_flow(flow: nn.Module, c: torch.Tensor, n: int, scale: torch.Tensor | None = None) -> torch.Tensor:
    """n draws [n, B, F] of the conditional flow at contexts ``c`` [B, C] (zuko's own sampler if unsupported).

    ``scale`` [B] tempers the flow: its standard-normal base noise is multiplied by scale per context (> 1 widens
    the posterior, < 1 narrows it; :mod:`galmass.calibrate`). None (or all ones) draws the flow as trained.
    """
    dist, supported = flow(c), _supported(flow)
    if scale is None and not supported:
        return dist.sample((n,))
    z = dist.base.rsample((n,))  # as zuko draws them (its sample() is rsample()): a seed gives the same noise
    if scale is not None:
        z.mul_(scale.to(z.dtype)[:, None])  # in place: z is a fresh draw, and a copy of [n, B, F] costs ~8 %
    if not supported:
        return dist.transform.inv(z)
    steps = [_Inverse(t, c) for t in reversed(flow.transform.transforms)]
    chunks = []
    for x in z.split(max(1, CHUNK_ROWS // max(1, c.shape[0]))):
        for step in steps:
            x = step(x)
        chunks.append(x)
    return torch.cat(chunks)


def tempered_log_prob(dist: torch.distributions.Distribution, y: torch.Tensor,
                      scale: torch.Tensor | None = None) -> torch.Tensor:
    """log density [B] of ``y`` [B, F] under a zuko flow distribution whose N(0, I) base is tempered to
    N(0, scale² I) (``scale`` [B]; None: the flow's own ``log_prob``). Same change of variables as zuko's
    ``NormalizingFlow.log_prob``: log N(T(y); 0, s² I) + log |det J_T(y)|."""
    if scale is None:
        return dist.log_prob(y)
    z, ladj = dist.transform.call_and_ladj(y)
    s = scale.to(z.dtype)
    return dist.base.log_prob(z / s[:, None]) - z.shape[-1] * torch.log(s) + ladj
