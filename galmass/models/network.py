"""The galmass posterior network: one CNN branch per map and tracer, fusion with scalars and summary statistics,
a zuko flow head; optionally a deep ensemble of such networks whose posterior is their mixture.

Normalisation (mass in units of the virial scale σ² R_h / G, as in Wolf et al. 2010): the flow models the
scale-free, standardised and (by default) decorrelated labels

    y = L⁻¹ (log10 M(<f R_h) − log10(v² R_h / G) − μ_y) / s_y

with v = σ★ (tracer modes with stars) or v_rms of the gas (gas only) and L the Cholesky factor of the training
labels' correlation matrix plus the variance of the training jitter (``model.label_noise_dex``; the ten labels of
one profile lie on a thin manifold, and the jitter gives the density a floor width). Maps enter scale-free
(positions in R_h, velocities in v); log10 R_h, log10 v, log10 N★ and the members' summary statistics (σ profile
in radius quartiles, radius quantiles, kurtosis, errors, ellipticity) enter standardised. All statistics come
from the training split (dataset manifest) and live in the model's buffers, so a model file is self-contained for
prediction.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import zuko
from torch import nn

from galmass.config import ModelConfig
from galmass.datasets.schema import scalar_index, tracer_keys
from galmass.models.alignment import mmd2
from galmass.models.balance import balance_violation, partners
from galmass.models.encoder import MapEncoder
from galmass.models.sampling import sample_flow, tempered_log_prob
from galmass.physics.constants import G

POPULATION_OVERSAMPLE = 4
"""Flow draws per kept draw of a population-adapted model: the tilts measured keep a median 40–100 % of the draws
as effective ones (benchmarks/results/loso_*population*, population_validation_*); under 25 % is refused."""

__all__ = ["MassPosterior", "LOG10_G", "input_keys", "tilt_log_weight"]

LOG10_G = math.log10(G)
_SKY_CHANNELS, _PHASE_CHANNELS = 4, 1


def input_keys(cfg: ModelConfig) -> tuple[str, ...]:
    """The per-sample datasets a model with this config reads (maps of its tracers, scalars, summaries, and the
    observer's stated binary / foreground fractions with ``model.observer_inputs``)."""
    uses_summaries = cfg.summaries and "stars" in cfg.tracer
    return (tracer_keys(cfg.tracer) + ("scalars",) + (("summary_stars",) if uses_summaries else ())
            + (("observer",) if cfg.observer_inputs else ()))


def _whitening(stats: dict[str, Any], noise_dex: float) -> torch.Tensor:
    """Cholesky factor L of the correlation of the standardised labels plus the jitter's variance, so that
    L⁻¹ maps the (jittered) training labels to ~unit covariance without amplifying the manifold's thin directions
    beyond the jitter (a 1e-6 floor keeps L definite without jitter)."""
    corr = torch.tensor(stats["corr"], dtype=torch.float64)
    floor = torch.clamp((noise_dex / torch.tensor(stats["std"], dtype=torch.float64)) ** 2, min=1e-6)
    return torch.linalg.cholesky(corr + torch.diag(floor))


class _Member(nn.Module):
    """One network: a CNN per map, a fusion MLP with the standardised scalar inputs, a conditional flow."""

    def __init__(self, cfg: ModelConfig, npix: int, map_keys: tuple[str, ...], n_inputs: int, n_labels: int) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict({
            key: MapEncoder(_SKY_CHANNELS if key.startswith("maps_") else _PHASE_CHANNELS, (npix, npix), cfg.widths,
                            cfg.embed_dim)
            for key in map_keys})
        fused_in = cfg.embed_dim * len(map_keys) + n_inputs
        self.fusion = nn.Sequential(
            nn.Linear(fused_in, 2 * cfg.embed_dim), nn.SiLU(), nn.Linear(2 * cfg.embed_dim, cfg.embed_dim), nn.SiLU())
        flow_cls = {"maf": zuko.flows.MAF, "nsf": zuko.flows.NSF}[cfg.flow]
        self.flow = flow_cls(features=n_labels, context=cfg.embed_dim, transforms=cfg.flow_transforms,
                             hidden_features=tuple(cfg.flow_hidden), passes=cfg.flow_passes)

    def context(self, maps: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        feats = [self.encoders[k](x) for k, x in maps.items()] + [inputs]
        return self.fusion(torch.cat(feats, dim=1))


def tilt_log_weight(tilt: dict[str, torch.Tensor], log_mass: torch.Tensor) -> torch.Tensor:
    """log of a population tilt's weight [...] of profiles [..., R] (torch twin of
    :meth:`galmass.population.Tilt.log_weight`: the mixture over β's draws)."""
    shape = log_mass - log_mass.mean(-1, keepdim=True) - tilt["centre"]
    return torch.logsumexp(((shape @ tilt["basis"].T) / tilt["scale"]) @ tilt["beta_draws"].T - tilt["log_z"], -1)


class MassPosterior(nn.Module):
    """p(log10 M(<f_i R_h), i=1..10 | maps, scalars, summaries), a mixture over ``cfg.ensemble`` members.

    Args:
        cfg: model section of the config (tracer mode, widths, flow, summaries, whitening, ensemble).
        npix: map size in pixels (square maps).
        normalisation: the manifest's ``normalisation`` block (train-split statistics).
        n_labels: number of radii (10).

    Example:
        >>> net = MassPosterior(ModelConfig(tracer="stars"), 32, manifest["normalisation"])
        >>> net(batch).shape, net.sample(batch, 100).shape  # (B,) NLL and (100, B, 10) samples
    """

    def __init__(self, cfg: ModelConfig, npix: int, normalisation: dict[str, Any], n_labels: int = 10) -> None:
        super().__init__()
        self.tracer = cfg.tracer
        self.map_keys = tracer_keys(cfg.tracer)
        self.input_keys = input_keys(cfg)
        # The velocity scale: σ★ when the model sees stars, else the gas v_rms.
        self.vcol = scalar_index("log10_vrms_gas_kms" if cfg.tracer == "gas" else "log10_sigma_stars_kms")
        self.rcol = scalar_index("log10_rh_kpc")
        # Scalar inputs: the scales (unless scale-free: then the scales only convert the mass unit) and N★.
        self.scalar_cols = (([] if cfg.scale_free else [self.rcol, self.vcol])
                            + ([scalar_index("log10_n_stars")] if "stars" in cfg.tracer else []))
        self._register_normalisation(cfg, normalisation, n_labels)
        n_inputs = (len(self.scalar_cols) + (self.u_mean.numel() if "summary_stars" in self.input_keys else 0)
                    + (2 * self.o_mean.numel() if "observer" in self.input_keys else 0))  # values, stated flags
        self.members = nn.ModuleList(
            [_Member(cfg, npix, self.map_keys, n_inputs, n_labels) for _ in range(cfg.ensemble)])
        self.npix = npix
        self.temperature: tuple[float, ...] | None = None
        """Post-hoc calibration (c0, c1, …) from ``galmass calibrate`` (kept in the model file, not in the
        weights): sampling and :meth:`log_prob` temper every flow's base noise by s = max(10^(Σ c_k x^k),
        ``temper_min``), x = log10 N★ − 2. None: as trained (training always is)."""
        self.temper_min = 0.0
        """Least scale: 1 for a widen-only calibration (never narrower than trained), 0 for none."""
        self.population: dict[str, torch.Tensor] | None = None
        """Population prior tilt from ``galmass population`` (:mod:`galmass.population`; ``centre``, ``basis``,
        ``scale``, ``beta_draws``, ``log_z``): :meth:`sample` re-weights draws of the trained posterior by it. None:
        as trained."""

    def _register_normalisation(self, cfg: ModelConfig, norm: dict[str, Any], n_labels: int) -> None:
        sc = norm["scalars"]
        ys = norm["y_gas" if cfg.tracer == "gas" else "y_stars"]
        summ = norm.get("summary_stars", {"mean": [], "std": []})
        chol = _whitening(ys, cfg.label_noise_dex) if cfg.whiten_labels else torch.eye(n_labels, dtype=torch.float64)
        for name, values in (("s_mean", torch.tensor(sc["mean"])[self.scalar_cols]),
                             ("s_std", torch.tensor(sc["std"])[self.scalar_cols]),
                             ("u_mean", torch.tensor(summ["mean"])), ("u_std", torch.tensor(summ["std"])),
                             ("y_mean", torch.tensor(ys["mean"])), ("y_std", torch.tensor(ys["std"])),
                             ("chol", chol), ("chol_inv", torch.linalg.inv(chol))):
            self.register_buffer(name, values.to(torch.float32))
        if cfg.observer_inputs:  # buffers only when used: model files without them keep loading
            if "observer" not in norm:
                raise ValueError("model.observer_inputs: the dataset's normalisation has no 'observer' statistics "
                                 "(written by an older galmass). HINT: regenerate the dataset")
            self.register_buffer("o_mean", torch.tensor(norm["observer"]["mean"], dtype=torch.float32))
            self.register_buffer("o_std", torch.tensor(norm["observer"]["std"], dtype=torch.float32))

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

    def _inputs(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        scalars = batch["scalars"].float()
        maps = {k: self.prepare_map(k, batch[k], scalars) for k in self.map_keys}
        inputs = [(scalars[:, self.scalar_cols] - self.s_mean) / self.s_std]
        if "summary_stars" in self.input_keys:
            inputs.append((batch["summary_stars"].float() - self.u_mean) / self.u_std)
        if "observer" in self.input_keys:  # NaN = not stated (hidden in training): value 0, flag 0
            obs = batch["observer"].float()
            stated = torch.isfinite(obs)
            inputs += [torch.where(stated, (obs - self.o_mean) / self.o_std, torch.zeros_like(obs)), stated.float()]
        return maps, torch.cat(inputs, dim=1)

    def context(self, batch: dict[str, torch.Tensor], member: int = 0) -> torch.Tensor:
        """The flow context [B, embed_dim] of one ensemble member."""
        return self.members[member].context(*self._inputs(batch))

    def log_mass_offset(self, scalars: torch.Tensor) -> torch.Tensor:
        """log10(v² R_h / G) [Msun] per sample, the physical mass scale removed from the labels."""
        scalars = scalars.float()
        return 2 * scalars[:, self.vcol] + scalars[:, self.rcol] - LOG10_G

    def to_y(self, log_mass: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        """log10 M [B, 10] → the flow's variables (scale-free, standardised, decorrelated)."""
        std = (log_mass.float() - self.log_mass_offset(scalars)[:, None] - self.y_mean) / self.y_std
        return std @ self.chol_inv.T

    def from_y(self, y: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        """The flow's variables [..., B, 10] → log10 M [Msun]."""
        return (y @ self.chol.T) * self.y_std + self.y_mean + self.log_mass_offset(scalars)[..., :, None]

    # -- probabilistic API ---------------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor], target: dict[str, torch.Tensor] | None = None,
                log_prior: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-sample training loss [B]: the members' mean negative log-likelihood of the flow variables.

        Each member's gradient is its own NLL's (divided by K), so the members train as K independent networks on
        the same batches; the mixture is formed only when sampling. Extra loss terms, when asked for, come back as
        ``(nll [B], terms)``, each the members' mean; all go through one forward, as DDP requires:

        * an unlabelled ``target`` batch (domain adaptation): "mmd", the squared MMD between the fusion embeddings
          of the two batches (:func:`galmass.models.alignment.mmd2`);
        * ``log_prior`` [B], the labels' marginal log-density in the flow variables (balanced NPE,
          :mod:`galmass.models.balance`): "balance", the balance condition's violation, with each sample's
          context paired with its neighbour's labels as the product of marginals.
        """
        self._refuse_density()
        maps, inputs = self._inputs(batch)
        y = self.to_y(batch["labels"], batch["scalars"])
        contexts = [m.context(maps, inputs) for m in self.members]
        terms: dict[str, torch.Tensor] = {}
        # The flow's log-density in fp32 even under bf16 autocast (its log-determinant would be rounded to ~2^-8).
        with torch.autocast(device_type=y.device.type, enabled=False):
            dists = [m.flow(c.float()) for m, c in zip(self.members, contexts)]
            log_q = torch.stack([d.log_prob(y) for d in dists])  # [K, B]
            if log_prior is not None:
                other = partners(len(y), y.device)
                y_other, p_other = y[other], log_prior[other]
                terms["balance"] = torch.stack(
                    [balance_violation(lq, d.log_prob(y_other), log_prior, p_other) for lq, d in zip(log_q, dists)]
                ).mean()
        nll = -log_q.mean(0)
        if target is not None:
            t_maps, t_inputs = self._inputs(target)
            terms["mmd"] = torch.stack([mmd2(c, m.context(t_maps, t_inputs))
                                        for m, c in zip(self.members, contexts)]).mean()
        return (nll, terms) if terms else nll

    def temper_scale(self, scalars: torch.Tensor) -> torch.Tensor | None:
        """Per-catalogue base-noise scale s [B] of the calibration (None when the model has none)."""
        if self.temperature is None:
            return None
        x = scalars[:, scalar_index("log10_n_stars")].float() - 2.0
        log_s = torch.zeros_like(x)
        for c in reversed(self.temperature):  # Horner
            log_s = log_s * x + c
        return torch.pow(10.0, log_s).clamp_min(self.temper_min)

    def _refuse_density(self) -> None:
        if self.population is not None:  # the tilted posterior's normaliser differs per catalogue
            raise ValueError("log_prob of a population-adapted model is not available (its normaliser is per "
                             "catalogue); use sample(), or the run it was adapted from")

    def log_prob(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """log density of the labels under the (calibrated, if so) mixture posterior, in the flow variables [B]."""
        self._refuse_density()
        maps, inputs = self._inputs(batch)
        y = self.to_y(batch["labels"], batch["scalars"])
        s = self.temper_scale(batch["scalars"])
        lp = torch.stack([tempered_log_prob(m.flow(m.context(maps, inputs)), y, s) for m in self.members])
        return torch.logsumexp(lp, 0) - math.log(len(self.members))

    @torch.no_grad()
    def sample(self, batch: dict[str, torch.Tensor], n: int) -> torch.Tensor:
        """Posterior samples of log10 M(<f_i R_h) [Msun], shape [n, B, 10] (equal-weight mixture of members).

        The mixture is sampled stratified: each of the K members draws ⌈n / K⌉ and a random n of the pooled draws
        are kept in random order, so an ensemble costs what one network does (not K × n draws of which n are kept).
        A population-adapted model draws :data:`POPULATION_OVERSAMPLE` × n and resamples n of them with weights of
        its prior tilt (sampling-importance-resampling).
        """
        maps, inputs = self._inputs(batch)
        m = n if self.population is None else POPULATION_OVERSAMPLE * n
        k, s = len(self.members), self.temper_scale(batch["scalars"])
        draws = torch.cat([sample_flow(mb.flow, mb.context(maps, inputs), -(-m // k), s) for mb in self.members])
        if k > 1:
            draws = draws[torch.randperm(len(draws), device=draws.device)[:m]]
        log_mass = self.from_y(draws, batch["scalars"])
        return log_mass if self.population is None else self._resample(log_mass, n)

    def _resample(self, log_mass: torch.Tensor, n: int) -> torch.Tensor:
        """n of the draws [m, B, R] per catalogue, drawn with replacement ∝ the population tilt's weight."""
        log_w = tilt_log_weight(self.population, log_mass)  # [m, B]
        pick = torch.multinomial(torch.softmax(log_w.T.double(), dim=1), n, replacement=True)  # [B, n]
        return torch.gather(log_mass, 0, pick.T[..., None].expand(-1, -1, log_mass.shape[-1]))
