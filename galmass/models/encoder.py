"""CNN encoder of one map (a sky map or a phase-space image)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MapEncoder"]


def _groups(channels: int) -> int:
    # GroupNorm rather than BatchNorm: per-sample statistics, so DDP ranks need no synchronisation and a
    # 2-rank run computes exactly what a 1-rank run does on the same global batch.
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class MapEncoder(nn.Module):
    """Strided conv stages (each halves the map) → global average pool → linear embedding.

    Args:
        in_channels: channels of the input map, e.g. 4 for a sky map, 1 for a phase-space image.
        map_shape: pixels (H, W), e.g. (64, 64).
        widths: channels of each stage, e.g. [16, 32, 64]; len(widths) stages need H, W ≥ 2**len(widths).
        out_dim: embedding size.

    Shapes: input [B, in_channels, H, W] → output [B, out_dim].
    """

    def __init__(self, in_channels: int, map_shape: tuple[int, int], widths: list[int] | None = None,
                 out_dim: int = 64) -> None:
        super().__init__()
        widths = list(widths) if widths is not None else [16, 32, 64]
        if len(map_shape) != 2:
            raise ValueError(f"map_shape must be (H, W), got {map_shape}")
        if min(map_shape) < 2 ** len(widths):
            raise ValueError(
                f"map_shape {tuple(map_shape)} is too small for {len(widths)} stride-2 stages. "
                f"HINT: use at least {2 ** len(widths)} pixels or fewer model.widths."
            )
        # No conv bias before GroupNorm: the norm removes it, so its gradient is pure rounding noise that Adam
        # would amplify into random steps (and make N-rank and 1-rank runs diverge).
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            layers += [
                nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False),
                nn.GroupNorm(_groups(w), w),
                nn.SiLU(),
                nn.Conv2d(w, w, 3, padding=1, bias=False),
                nn.GroupNorm(_groups(w), w),
                nn.SiLU(),
            ]
            c = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c, out_dim)
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        return self.head(self.body(x).mean(dim=(2, 3)))
