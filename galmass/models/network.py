"""The galmass posterior network: one CNN branch per map and tracer, fusion with scalars, a zuko flow head.

Normalisation (mass in units of the virial scale σ² R_h / G, as in Wolf et al. 2010): the flow models the scale-free, standardised
    y = (log10 M(<f R_h) − log10(v² R_h / G) − μ_y) / s_y
with v = σ★ (tracer modes with stars) or v_rms of the gas (gas only); maps enter scale-free (positions in R_h,
velocities in v) and log10 R_h, log10 v (and log10 N★ with stars) enter as standardised scalars. The statistics
come from the training split (dataset manifest) and live in the model's buffers, so a checkpoint is
self-contained for prediction.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import zuko
from torch import nn

from galmass.config import ModelConfig
from galmass.datasets.schema import scalar_index, tracer_keys
from galmass.models.encoder import MapEncoder
from galmass.physics.constants import G

__all__ = ["MassPosterior", "LOG10_G"]

LOG10_G = math.log10(G)
_SKY_CHANNELS, _PHASE_CHANNELS = 4, 1


class MassPosterior(nn.Module):
    """p(log10 M(<f_i R_h), i=1..10 | maps, scalars).

    Args:
        cfg: model section of the config (tracer mode, widths, flow).
        npix: map size in pixels (square maps).
        normalisation: the manifest's ``normalisation`` block (train-split statistics).
        n_labels: number of radii (10).

    Example:
        >>> net = MassPosterior(ModelConfig(tracer="stars"), 32, manifest["normalisation"])
        >>> net.log_prob(batch).shape  # (B,)
    """

    def __init__(self, cfg: ModelConfig, npix: int, normalisation: dict[str, Any], n_labels: int = 10) -> None:
        super().__init__()
        self.tracer = cfg.tracer
        self.map_keys = tracer_keys(cfg.tracer)
        self.encoders = nn.ModuleDict(
            {
                key: MapEncoder(
                    _SKY_CHANNELS if key.startswith("maps_") else _PHASE_CHANNELS, (npix, npix), cfg.widths,
                    cfg.embed_dim,
                )
                for key in self.map_keys
            }
        )
        # The velocity scale: σ★ when the model sees stars, else the gas v_rms.
        self.vcol = scalar_index("log10_vrms_gas_kms" if cfg.tracer == "gas" else "log10_sigma_stars_kms")
        self.rcol = scalar_index("log10_rh_kpc")
        self.scalar_cols = [self.rcol, self.vcol] + ([scalar_index("log10_n_stars")] if "stars" in cfg.tracer else [])
        sc = normalisation["scalars"]
        ys = normalisation["y_gas" if cfg.tracer == "gas" else "y_stars"]
        self.register_buffer("s_mean", torch.tensor(sc["mean"], dtype=torch.float32)[self.scalar_cols])
        self.register_buffer("s_std", torch.tensor(sc["std"], dtype=torch.float32)[self.scalar_cols])
        self.register_buffer("y_mean", torch.tensor(ys["mean"], dtype=torch.float32))
        self.register_buffer("y_std", torch.tensor(ys["std"], dtype=torch.float32))
        fused_in = cfg.embed_dim * len(self.map_keys) + len(self.scalar_cols)
        self.fusion = nn.Sequential(
            nn.Linear(fused_in, 2 * cfg.embed_dim), nn.SiLU(), nn.Linear(2 * cfg.embed_dim, cfg.embed_dim), nn.SiLU()
        )
        flow_cls = {"maf": zuko.flows.MAF, "nsf": zuko.flows.NSF}[cfg.flow]
        self.flow = flow_cls(
            features=n_labels, context=cfg.embed_dim, transforms=cfg.flow_transforms,
            hidden_features=tuple(cfg.flow_hidden),
        )
        self.npix = npix

    # -- input preparation ---------------------------------------------------------------------------------------
    def _vscale(self, scalars: torch.Tensor) -> torch.Tensor:
        return torch.pow(10.0, scalars[:, self.vcol]).clamp_min(1e-3)

    def prepare_map(self, key: str, x: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        """Scale-free map: densities × pixel count then log1p (tames single-star peaks); velocities ÷ v."""
        x = x.float()
        npx = x.shape[-1] * x.shape[-2]
        if key.startswith("phase_"):
            return torch.log1p(x * npx)
        v = self._vscale(scalars)[:, None, None]
        return torch.stack([torch.log1p(x[:, 0] * npx), x[:, 1] / v, x[:, 2] / v, x[:, 3]], dim=1)

    def context(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        scalars = batch["scalars"].float()
        feats = [self.encoders[k](self.prepare_map(k, batch[k], scalars)) for k in self.map_keys]
        feats.append((scalars[:, self.scalar_cols] - self.s_mean) / self.s_std)
        return self.fusion(torch.cat(feats, dim=1))

    def log_mass_offset(self, scalars: torch.Tensor) -> torch.Tensor:
        """log10(v² R_h / G) [Msun] per sample, the physical mass scale removed from the labels."""
        scalars = scalars.float()
        return 2 * scalars[:, self.vcol] + scalars[:, self.rcol] - LOG10_G

    def to_y(self, log_mass: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        return (log_mass.float() - self.log_mass_offset(scalars)[:, None] - self.y_mean) / self.y_std

    def from_y(self, y: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        return y * self.y_std + self.y_mean + self.log_mass_offset(scalars)[..., :, None]

    # -- probabilistic API ---------------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-sample negative log-likelihood of the standardised labels, [B]."""
        return -self.flow(self.context(batch)).log_prob(self.to_y(batch["labels"], batch["scalars"]))

    def log_prob(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return -self.forward(batch)

    @torch.no_grad()
    def sample(self, batch: dict[str, torch.Tensor], n: int) -> torch.Tensor:
        """Posterior samples of log10 M(<f_i R_h) [Msun], shape [n, B, 10]."""
        y = self.flow(self.context(batch)).sample((n,))
        return self.from_y(y, batch["scalars"])
