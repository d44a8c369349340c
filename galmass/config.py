"""One typed configuration schema for galmass: YAML files, ``--section.key=value`` overrides, run directories.

Every default lives in the dataclasses below (nowhere else). A YAML file only states what differs from them.
Precedence: dataclass default < YAML file < command-line override (the command line wins).

Unknown keys and wrong types are errors raised *before* any work starts; the message names the key, the file
it came from, the closest valid key, and the valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar

import yaml

from galmass.datasets.schema import TRACER_MODES, TracerMode

__all__ = [
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "EvalConfig",
    "Config",
    "TRACER_MODES",
    "build_dataclass",
    "load_config",
    "parse_overrides",
    "config_to_dict",
    "dump_config",
    "RESUME_FREE_KEYS",
    "DATA_NON_CONTENT_KEYS",
    "HASH_NEUTRAL_DEFAULTS",
    "RECIPE_NEUTRAL_DEFAULTS",
    "data_identity",
    "data_hash",
    "config_diffs",
    "read_yaml",
]

RESUME_FREE_KEYS: frozenset[tuple[str, str]] = frozenset({
    ("train", "progress"), ("train", "num_workers"), ("train", "log_every"), ("train", "loader"),
    ("train", "run_dir"), ("data", "workers"), ("data", "path"),
})
"""Keys that may differ between a run directory's stored config and a resumption of it: they control output,
speed or where things are, not numerics (both loaders yield the same batches; the run directory and the dataset
path are locations, and the dataset itself is identified by :func:`data_hash`, checked separately)."""

DATA_NON_CONTENT_KEYS: tuple[str, ...] = ("path", "workers")
"""Keys of the data section that do not change the generated samples (excluded from :func:`data_hash`)."""
HASH_NEUTRAL_DEFAULTS: dict[str, Any] = {"vary_fractions": False}
"""Data keys added after datasets were made with them at this value (which reproduces those datasets exactly):
left out of the identity while at it, so existing datasets and trained models keep their hash."""
RECIPE_NEUTRAL_DEFAULTS: dict[str, Any] = {"df_isotropise": False, "df_constant_beta": False,
                                           "light_transition_range": (2.0, 2.0)}
"""Suite-recipe keys added after datasets were made without them, at the value that reproduces those datasets:
left out of the recipe contents in the data identity while at it, so existing datasets keep their hash."""
MODEL_NEUTRAL_DEFAULTS: dict[str, Any] = {"observer_inputs": False, "observer_hidden": 0.5, "scale_free": False}
"""Model keys added after runs were trained without them, at the value that reproduces those runs: a stored config
that lacks one resumes as if it had this value."""
_NEUTRAL_DEFAULTS: dict[str, dict[str, Any]] = {"data": HASH_NEUTRAL_DEFAULTS, "model": MODEL_NEUTRAL_DEFAULTS}
"""Per section, what a key missing from an older stored config reads as (:func:`config_diffs`)."""


class ConfigError(ValueError):
    """A configuration problem found before any work started."""


def _check_pair(name: str, pair: list, low: float, hint: str) -> None:
    """A [low, high] range: two numbers, low <= high, both >= ``low``."""
    if len(pair) != 2 or not (low <= pair[0] <= pair[1]):
        raise ConfigError(f"{name} must be [low, high] with {low} <= low <= high, got {pair}. HINT: {hint}")


@dataclass
class DataConfig:
    """Mock-suite generation and the sharded dataset it writes (``galmass mock``); read by train/evaluate."""

    path: str = "data/mock"
    """Dataset directory (shards + manifest.json). Relative paths are relative to the working directory."""
    suites: list[str] = field(default_factory=lambda: ["compact", "extended"])
    """Suite recipes, by file name in ``configs/suites/`` (without ``.yaml``) or a path to a YAML file."""
    feedbacks: list[str] = field(default_factory=lambda: ["cusp", "core"])
    """Feedback models, by file name in ``configs/feedback/`` or a path to a YAML file."""
    galaxies_per_cell: int = 40
    """Galaxies drawn for each suite × feedback combination."""
    projections: int = 64
    """Lines of sight per galaxy (Fibonacci sphere, random roll about each line of sight)."""
    n_stars: list[int] = field(default_factory=lambda: [20, 3000])
    """Observed stars per projection, drawn log-uniformly between the two values (equal values: fixed), so a
    model sees every survey depth from ultra-faint dwarfs (~20 members) to Fornax (~2,600) and conditions on N★."""
    star_pool: int = 20000
    """Stars sampled per galaxy in 3-D; each projection observes a random subset of them (>= n_stars[1])."""
    v_err_kms: list[float] = field(default_factory=lambda: [0.5, 10.0])
    """Per-star line-of-sight velocity errors [km/s]: each projection draws a typical error log-uniformly in this
    range (surveys from high-resolution spectrographs, ~0.5–2 km/s, to low-resolution ones, ~5–10 km/s) and each
    star gets that error times a log-normal spread of ``v_err_scatter_dex``; equal values: one fixed error."""
    v_err_scatter_dex: float = 0.15
    """Star-to-star scatter of the velocity errors within one catalogue [dex] (fainter stars have larger errors)."""
    binary_fraction: float = 0.0
    """Fraction of observed stars that are unresolved binaries seen at one epoch: their v_los gets the primary's
    orbital velocity (Duquennoy & Mayor 1991 log-normal periods, flat mass ratios, thermal eccentricities;
    :mod:`galmass.mocks.binaries`). Real dSph samples: ~0.3–0.5 before multi-epoch cleaning."""
    membership_clip: float = 3.0
    """Membership step applied to every catalogue (mocks and ``predict`` alike, before σ and R_h are measured,
    so the estimators see the same stars): iterative clipping of |v − median| > membership_clip × σ (robust);
    0 disables it."""
    recentre: bool = True
    """Centre each catalogue on the stars' own estimated centre (:func:`galmass.maps.estimate_centre`), as an
    observer must, instead of the true centre."""
    selection_fov_rh: list[float] = field(default_factory=lambda: [4.0, 10.0])
    """Spectroscopic footprint: targets lie within a radius drawn log-uniformly in this range, in units of the
    population's R_h (equal values: fixed)."""
    selection_bias: list[float] = field(default_factory=lambda: [0.0, 0.0])
    """Central concentration of target selection: a member at projected radius R is targeted with probability
    ∝ (1 + R²/R_h²)^(−b), b drawn uniformly in this range (0: unbiased within the footprint). Neutral by default:
    a broad prior such as [0, 1] is degenerate with the mass scale (the spectroscopic R_h shrinks with b); a model
    trained on it was biased by −0.08 dex on neutral-targeting mocks (benchmarks/results/targeting_prior.md)."""
    gas_cells: int = 2000
    """Gas resolution elements per galaxy disc (equal mass)."""
    npix: int = 64
    """Map size in pixels (square)."""
    extent_rh: float = 4.0
    """Sky maps span ±extent_rh·R_h; phase-space maps span R/R_h ∈ [0, extent_rh]."""
    vmax_sigma: float = 4.0
    """Phase-space maps span v_los/σ_los ∈ [−vmax_sigma, vmax_sigma]."""
    val_fraction: float = 0.15
    """Fraction of *galaxies* (not projections) held out for validation."""
    test_fraction: float = 0.15
    """Fraction of *galaxies* held out for testing."""
    shard_size: int = 512
    """Target samples per shard; a shard always holds whole galaxies of one suite, feedback and split."""
    dtype: Literal["float32", "float16"] = "float32"
    """Storage type of the maps."""
    seed: int = 0
    """Master seed; every galaxy is drawn from (seed, suite, feedback, index) alone."""
    workers: int = 0
    """Processes for generation; 0 means all local cores."""
    contamination_fraction: float = 0.0
    """Fraction of the observed stars that are foreground contaminants (0: none), in [0, 1)."""
    vary_fractions: bool = False
    """Draw each catalogue's binary and contamination fractions uniformly in [0, ``binary_fraction``] and
    [0, ``contamination_fraction``] instead of using the same fractions for all: surveys range from multi-epoch,
    proper-motion-cleaned samples (no binaries, no foreground) to single-epoch ones, and a model trained on one
    fixed fraction is biased on samples with another (binaries inflate σ; the model learns to discount them)."""
    contamination_sigma_kms: float = 50.0
    """Line-of-sight velocity dispersion of the contaminants about the systemic velocity [km/s] (broad: a
    Milky-Way foreground is far hotter than a dwarf); they are spread uniformly over the sky map."""
    gas_beam_fwhm_rh: float = 0.0
    """FWHM of the Gaussian beam that smooths the gas sky maps, in units of R_h (0: no smoothing beyond pixels)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.contamination_fraction < 1.0:
            raise ConfigError(f"data.contamination_fraction must be in [0, 1), got {self.contamination_fraction}. "
                              "HINT: 0.1 means one observed star in ten is a foreground star")
        if self.vary_fractions and not (self.binary_fraction or self.contamination_fraction):
            raise ConfigError("data.vary_fractions is true but data.binary_fraction and data.contamination_fraction "
                              "are both 0: nothing to vary. HINT: set their maxima, e.g. 0.5 and 0.1")
        if not self.contamination_sigma_kms > 0:
            raise ConfigError(f"data.contamination_sigma_kms must be > 0, got {self.contamination_sigma_kms}")
        if not self.gas_beam_fwhm_rh >= 0:
            raise ConfigError(f"data.gas_beam_fwhm_rh must be >= 0, got {self.gas_beam_fwhm_rh}. HINT: 0 disables")
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"data.{name} must be in [0, 1), got {getattr(self, name)}. "
                                  "HINT: 0.15 holds out 15 % of the galaxies")
        if self.workers < 0:
            raise ConfigError(f"data.workers must be >= 0, got {self.workers}. HINT: 0 uses all local cores")
        for name in ("extent_rh", "vmax_sigma"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"data.{name} must be > 0, got {getattr(self, name)}")
        _check_pair("data.n_stars", self.n_stars, 3, "e.g. [20, 3000]")
        _check_pair("data.v_err_kms", self.v_err_kms, 0.0, "e.g. [0.5, 10]; [2, 2] for a fixed 2 km/s")
        _check_pair("data.selection_fov_rh", self.selection_fov_rh, 1e-3, "e.g. [3, 8] R_h")
        _check_pair("data.selection_bias", self.selection_bias, 0.0, "e.g. [0, 1]; [0, 0] for unbiased targeting")
        if self.star_pool < self.n_stars[1]:
            raise ConfigError(f"data.star_pool={self.star_pool} is below the largest catalogue data.n_stars[1]="
                              f"{self.n_stars[1]}. HINT: raise data.star_pool")
        if not 0.0 <= self.binary_fraction <= 1.0 or self.v_err_scatter_dex < 0 or self.membership_clip < 0:
            raise ConfigError(f"need 0 <= data.binary_fraction <= 1, data.v_err_scatter_dex >= 0 and "
                              f"data.membership_clip >= 0, got {self.binary_fraction}, {self.v_err_scatter_dex}, "
                              f"{self.membership_clip}")
        if 0 < self.membership_clip < 2:
            raise ConfigError(f"data.membership_clip={self.membership_clip} would remove genuine members (a Gaussian "
                              "has 5 % beyond 2σ). HINT: 3 is usual; 0 disables clipping")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(
                f"data.val_fraction + data.test_fraction = {self.val_fraction + self.test_fraction} leaves no "
                "training galaxies. HINT: keep their sum below 1."
            )
        for name in ("galaxies_per_cell", "projections", "npix", "shard_size", "star_pool", "gas_cells"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class ModelConfig:
    """CNN encoder per map + fusion with scalar inputs + conditional normalising flow (zuko)."""

    tracer: TracerMode = "stars"
    """Which tracers the model sees; the same code builds one sky-map and one phase-space branch per tracer."""
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])
    """Channels of the strided conv stages of each branch (each stage halves the map)."""
    embed_dim: int = 64
    """Output features of each branch and of the fusion MLP (the flow's context)."""
    flow: Literal["maf", "nsf"] = "maf"
    """zuko flow family: masked autoregressive (affine) or neural spline."""
    flow_transforms: int = 4
    """Number of autoregressive transforms."""
    flow_hidden: list[int] = field(default_factory=lambda: [128, 128])
    """Hidden layer widths of each transform's conditioner."""
    flow_passes: int | None = None
    """Network passes needed to invert one transform (zuko's ``passes``): null = one per label (fully
    autoregressive), 2 = coupling layers (the labels split in two halves, the order alternating between transforms).
    Drawing posterior samples inverts every transform, so its cost grows with the passes: 2 sampled ~4× faster than
    null for the 10 labels (``benchmarks/results/flow_passes.md``); density evaluation (training) costs the same."""
    summaries: bool = True
    """Feed the members' hand-made summary statistics (σ in radius quartiles, radius quantiles, kurtosis, errors,
    ellipticity: ``galmass.datasets.schema.SUMMARY_NAMES``) to the fusion layer besides the maps (stars modes)."""
    scale_free: bool = False
    """Leave the catalogue's absolute scales, log10 R_h and log10 of the velocity scale (σ★, or the gas v_rms), out of
    the network's inputs: it then reads only scale-free data (maps in units of R_h and of the velocity scale, the
    summaries, N★) and gives the mass in units of v² R_h / G, a function of profile shapes alone, as the Jeans
    equations do. A model that reads the scales can also learn the training population's scaling relations (how
    halo concentration or core size goes with a galaxy's size and mass), which another population, a simulation
    suite with other physics or the real Universe, need not share."""
    whiten_labels: bool = True
    """Model the labels decorrelated by the training set's label correlation (a fixed linear map): the ten radii of
    one profile are ~0.99 correlated, which a flow otherwise spends most of its training learning."""
    label_noise_dex: float = 0.01
    """Gaussian jitter added to the training labels [dex of mass] (and the floor of the label whitening). The ten
    labels of a profile lie on a thin manifold of the 10-D space; without a floor the flow spends its capacity on
    the manifold's width (~1e-4 dex). 0.01 dex widens the posteriors' thin shape directions (~2.5× along the labels'
    third shape component at N★ 500–3000, against 0.003) but the per-radius intervals by only ~5 % there; 0.003 gave
    no better calibration than the seed spread (benchmarks/results/member_calibration.md)."""
    ensemble: int = 1
    """Members of a deep ensemble (Lakshminarayanan et al. 2017): independently initialised networks trained on the
    same batches; the posterior is their equal-weight mixture (more conservative under a shift; Hermans et al.
    2022). Training cost grows linearly."""

    observer_inputs: bool = False
    """Condition the posterior on what the observer states about the sample (``schema.OBSERVER_NAMES``): its
    unresolved-binary and foreground fractions, drawn per training catalogue (needs ``data.vary_fractions``).
    ``galmass predict --binary-fraction F --foreground-fraction F`` states them; an unstated one is left out."""
    observer_hidden: float = 0.5
    """With ``observer_inputs``: probability that each fraction is hidden from the network for a training
    catalogue (conditional dropout), so that one network learns both p(M | data, fraction) and p(M | data). The
    latter is the correct marginal when the user cannot state the fraction (the data themselves constrain it, e.g.
    binaries through the velocity tails), which averaging the conditional over the prior would ignore."""

    def __post_init__(self) -> None:
        if not self.widths or min(self.widths) < 1:
            raise ConfigError(f"model.widths must list at least one stage width, each >= 1, got {self.widths}")
        for name in ("embed_dim", "flow_transforms"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if not self.flow_hidden or min(self.flow_hidden) < 1:
            raise ConfigError(f"model.flow_hidden must list widths >= 1, got {self.flow_hidden}")
        if self.flow_passes is not None and self.flow_passes < 1:
            raise ConfigError(f"model.flow_passes must be >= 1 or null, got {self.flow_passes}. "
                              "HINT: null = fully autoregressive, 2 = coupling layers")
        if not 0.0 <= self.label_noise_dex < 0.1:
            raise ConfigError(f"model.label_noise_dex must be in [0, 0.1) dex, got {self.label_noise_dex}")
        if not 0.0 < self.observer_hidden < 1.0:
            raise ConfigError(f"model.observer_hidden must be in (0, 1), got {self.observer_hidden}. HINT: 0.5 trains "
                              "the conditional and the marginal posterior equally")
        if self.ensemble < 1:
            raise ConfigError(f"model.ensemble must be >= 1 members, got {self.ensemble}. HINT: 1 = no ensemble")


@dataclass
class TrainConfig:
    """Training of one model: ``galmass train`` (single process, torchrun, or srun)."""

    run_dir: str = "runs/stars"
    """Directory of this run: resolved config, checkpoints, TensorBoard logs, best model, metrics."""
    epochs: int = 30
    """Maximum number of epochs (early stopping may end sooner)."""
    batch_size: int = 64
    """Global batch size (summed over ranks); must be divisible by the number of ranks."""
    lr: float = 1e-3
    """Peak learning rate (AdamW); cosine decay over all steps after a linear warm-up."""
    warmup_epochs: float = 1.0
    """Linear warm-up length [epochs]."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    grad_clip: float = 5.0
    """Gradient-norm clip; 0 disables it."""
    patience: int = 6
    """Early stopping: stop after this many epochs without a better validation NLL; 0 disables it."""
    seed: int = 0
    """Seed for weight initialisation and the data order (the data order depends on seed and epoch only)."""
    num_workers: int = 0
    """torch DataLoader worker processes per rank (HDF5 files are opened lazily inside each worker)."""
    keep_checkpoints: int = 3
    """Number of per-epoch checkpoints kept (the newest ones)."""
    max_steps_per_epoch: int = 0
    """Cap on optimiser steps per epoch (for smoke tests); 0 means a full pass."""
    threads: int = 0
    """torch intra-op threads per rank; 0 leaves torch's (or torchrun's OMP_NUM_THREADS) choice."""
    progress: bool = True
    """Show a progress bar (rank 0 only)."""
    log_every: int = 0
    """Print one log line every this many optimiser steps (rank 0; for cluster logs without a progress bar); 0: off."""
    loader: Literal["torch", "dali"] = "torch"
    """Training data loader: torch DataLoader, or an NVIDIA DALI pipeline (extra `dali`); same sample order."""
    augment: bool = False
    """Random 90° rotations/flips of the sky plane (same for all sky maps of a sample; phase maps untouched)."""
    aug_noise: float = 0.0
    """Std of Gaussian noise added to the sky maps when augmenting, in units of each channel's normalisation scale."""
    bf16: bool = False
    """bfloat16 autocast for the forward pass on CUDA (ignored on the CPU)."""
    shuffle_block: int = 1
    """Shuffle blocks of this many consecutive samples (fewer, larger HDF5 reads); 1: shuffle single samples."""
    use_flagged_labels: bool = False
    """Also train on samples whose labels are flagged untrustworthy (``meta/label_valid`` = 0: radii inside an
    ingested simulation's convergence radius). Off: such samples are left out."""
    adapt: Literal["none", "mmd"] = "none"
    """Domain adaptation: "mmd" adds the squared maximum mean discrepancy (Gretton et al. 2012; multi-bandwidth
    Gaussian kernels) between the fusion embeddings of each training batch and of an equal batch of unlabelled
    target samples (``adapt_target``) to the loss, so the network learns features the two domains share."""
    adapt_target: str = ""
    """The unlabelled target domain, needed with ``adapt``: a dataset directory (its train split is used, labels
    ignored) or the star catalogues you will predict on (a CSV in ``galmass predict``'s format, or a directory of
    them; :mod:`galmass.target_domain`)."""
    adapt_weight: float = 1.0
    """Weight of the alignment term relative to the NLL."""
    balance: float = 0.0
    """Balanced NPE (Delaunoy et al. 2023): weight λ of the balance condition's violation added to the NLL, which
    makes posteriors conservative (wider, not overconfident) at some cost in width; the paper uses λ = 100. 0: off.
    An unconditional flow learns the labels' marginal alongside (training only; :mod:`galmass.models.balance`)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.epochs < 1:
            raise ConfigError(f"train.batch_size and train.epochs must be >= 1, got {self.batch_size}, {self.epochs}")
        if self.shuffle_block < 1:
            raise ConfigError(f"train.shuffle_block must be >= 1, got {self.shuffle_block}. HINT: 1 = full shuffle.")
        if self.log_every < 0 or self.aug_noise < 0:
            raise ConfigError(f"train.log_every and train.aug_noise must be >= 0, got {self.log_every}, "
                              f"{self.aug_noise}. HINT: 0 switches them off.")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}. HINT: 1e-3 is a good start for AdamW")
        if self.adapt != "none" and not self.adapt_target:
            raise ConfigError(f"train.adapt={self.adapt} needs train.adapt_target (a dataset directory or star "
                              "catalogues of the target domain). HINT: --train.adapt_target=data/held_out_suite "
                              "or --train.adapt_target=my_dwarfs.csv")
        if self.adapt_weight < 0 or self.balance < 0:
            raise ConfigError(f"train.adapt_weight and train.balance must be >= 0, got {self.adapt_weight}, "
                              f"{self.balance}. HINT: 0 switches the term off")
        if self.balance > 0 and self.shuffle_block > 1:
            raise ConfigError(f"train.balance={self.balance:g} needs train.shuffle_block=1, got {self.shuffle_block}:"
                              " the balance term pairs neighbouring samples of a batch as independent draws, and "
                              "a shuffled block holds consecutive samples (projections of one galaxy)")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"train.keep_checkpoints must be >= 1, got {self.keep_checkpoints}. "
                              "HINT: 1 keeps only the newest checkpoint (resume needs one)")
        for name in ("warmup_epochs", "weight_decay", "grad_clip", "patience", "threads", "num_workers",
                     "max_steps_per_epoch"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}. HINT: 0 means "
                                  "off / the default (see galmass/config.py)")


@dataclass
class EvalConfig:
    """Evaluation of a trained run: ``galmass evaluate``."""

    split: Literal["train", "val", "test"] = "test"
    """Which split of the dataset to evaluate (held-out galaxies: test)."""
    posterior_samples: int = 500
    """Posterior samples drawn per projection for medians, intervals, coverage and TARP."""
    batch_size: int = 256
    """Projections per forward pass."""
    seed: int = 0
    """Seed for posterior sampling and TARP reference points."""
    data_path: str = ""
    """Dataset to evaluate on; empty means the dataset the run was trained on (data.path)."""
    use_flagged_labels: bool = False
    """Also score samples whose labels are flagged untrustworthy (``meta/label_valid`` = 0). Off: left out."""

    def __post_init__(self) -> None:
        if self.posterior_samples < 1 or self.batch_size < 1:
            raise ConfigError(f"evaluate.posterior_samples and evaluate.batch_size must be >= 1, got "
                              f"{self.posterior_samples}, {self.batch_size}")
        if self.seed < 0:
            raise ConfigError(f"evaluate.seed must be >= 0, got {self.seed}")


@dataclass
class Config:
    """The whole configuration: one section per stage."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.model.observer_inputs and not self.data.vary_fractions:
            raise ConfigError("model.observer_inputs needs data.vary_fractions: true (with a non-zero "
                              "data.binary_fraction or data.contamination_fraction), or the model sees one fixed "
                              "value and learns nothing about it. HINT: set data.vary_fractions, or drop "
                              "model.observer_inputs")


T = TypeVar("T")


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"{hint} Valid keys: {', '.join(sorted(valid))}."


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp) if a is not Ellipsis)}]"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats. Raises ConfigError."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{where}: got {value!r}, expected {_type_name(tp)}")
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: got {value!r} ({type(value).__name__}), expected {tp}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: got {value!r} ({type(value).__name__}), expected {_type_name(tp)}")
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if origin is tuple and len(args) > 1 and len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        items = [
            _coerce(v, args[i] if origin is tuple and len(args) > 1 else args[0], f"{where}[{i}]")
            for i, v in enumerate(value)
        ]
        return origin(items)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping (section), got {value!r}")
        return build_dataclass(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            # PyYAML (YAML 1.1) reads "1e-3" as a string; accept exactly what float() accepts.
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f"{where}: got {value!r}, expected a finite number")
            return number
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is type(None):  # an optional key (``X | None``): YAML null
        if value is None:
            return None
    elif tp is Any:
        return value
    else:  # pragma: no cover - schema author error
        raise TypeError(f"unsupported annotation {tp} at {where}")
    raise ConfigError(f"{where}: got {value!r} ({type(value).__name__}), expected {_type_name(tp)}")


def build_dataclass(cls: type[T], mapping: Mapping[str, Any], where: str) -> T:
    """Build dataclass ``cls`` from a mapping, strictly.

    Args:
        cls: the dataclass type.
        mapping: keys and values (e.g. parsed YAML).
        where: a human-readable location, e.g. ``"configs/demo.yaml: train"``, used in error messages.

    Raises:
        ConfigError: unknown key (with the closest valid key), wrong type, or a failed cross-field check.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in mapping.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key '{key}'.{_suggest(str(key), names)}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def parse_overrides(args: list[str]) -> dict[str, dict[str, Any]]:
    """Parse ``--section.key=value`` (or ``section.key=value``) strings into a nested mapping.

    Values are parsed as YAML scalars/flow sequences: ``--train.lr=3e-4``, ``--data.suites=[compact]``.
    """
    out: dict[str, dict[str, Any]] = {}
    for raw in args:
        arg = raw[2:] if raw.startswith("--") else raw
        if "=" not in arg or "." not in arg.split("=", 1)[0]:
            raise ConfigError(f"override '{raw}': expected --section.key=value, e.g. --train.lr=3e-4")
        dotted, text = arg.split("=", 1)
        section, key = dotted.split(".", 1)
        value = yaml.safe_load(text) if text != "" else ""
        out.setdefault(section, {})[key] = value
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for section, values in extra.items():
        if isinstance(values, Mapping) and isinstance(merged.get(section), Mapping):
            merged[section].update(values)
        else:
            merged[section] = values
    return merged


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys (PyYAML keeps the last one silently)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (first on line {seen[key] + 1}, again on line "
                f"{key_node.start_mark.line + 1}): YAML would keep only the last one", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def read_yaml(path: str | Path, what: str = "sections") -> dict[str, Any]:
    """Read a YAML mapping strictly: missing file, invalid YAML, duplicate keys and a non-mapping top level raise
    ConfigError naming the file. ``what`` names the expected top-level keys in the message."""
    path = Path(path)
    try:
        with open(path) as fh:
            data = yaml.load(fh, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of {what}, got {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load the schema defaults, then the YAML file ``path`` (if given), then the ``overrides``.

    Raises:
        ConfigError: naming the file (or ``command line``) and the offending key.
    """
    where = str(path) if path is not None else "defaults"
    data = read_yaml(path) if path is not None else {}
    sections = [f.name for f in dataclasses.fields(Config)]
    for section, body in data.items():
        if section not in sections:
            raise ConfigError(f"{where}: unknown section '{section}'.{_suggest(str(section), sections)}")
        if not isinstance(body, Mapping):
            raise ConfigError(f"{where}: section '{section}' must be a mapping, got {body!r}")
    # Validate the file on its own first so an error names the file, not the command line.
    build_dataclass(Config, data, where)
    if overrides:
        cli = parse_overrides(overrides)
        for section in cli:
            if section not in sections:
                raise ConfigError(f"command line: unknown section '{section}'.{_suggest(section, sections)}")
        # Check each override key alone so the message names the command line.
        for section, values in cli.items():
            cls = typing.get_type_hints(Config)[section]
            names = [f.name for f in dataclasses.fields(cls)]
            for key, value in values.items():
                if key not in names:
                    raise ConfigError(
                        f"command line: unknown key '{section}.{key}'.{_suggest(key, names)}"
                    )
                _coerce(value, typing.get_type_hints(cls)[key], f"command line: {section}.{key}")
        data = _merge(data, cli)
        where = f"{where} + command line"
    return build_dataclass(Config, data, where)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict form of any config dataclass (lists stay lists)."""
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    """The fully resolved config as YAML text (what each run directory stores)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def data_identity(data: DataConfig) -> dict[str, Any]:
    """What determines the samples: the data section without ``DATA_NON_CONTENT_KEYS``, plus the *contents* of the
    suite and feedback recipes it names (a recipe file edited between two runs makes different galaxies under
    the same names: the identity, hence :func:`data_hash`, must change with it)."""
    ident = _content_keys(config_to_dict(data))
    ident["recipes"] = recipe_contents(data.suites, data.feedbacks)
    return ident


def _content_keys(data: Mapping[str, Any]) -> dict[str, Any]:
    """A data section without ``DATA_NON_CONTENT_KEYS`` and without keys at their ``HASH_NEUTRAL_DEFAULTS`` value."""
    return {k: v for k, v in data.items()
            if k not in DATA_NON_CONTENT_KEYS and not (k in HASH_NEUTRAL_DEFAULTS and v == HASH_NEUTRAL_DEFAULTS[k])}


def _same(value: Any, default: Any) -> bool:
    """``value == default``, a list equal to a tuple included (a YAML list against a dataclass default)."""
    return (list(value) if isinstance(value, (list, tuple)) else value) == (
        list(default) if isinstance(default, (list, tuple)) else default)


def recipe_contents(suites: list[str], feedbacks: list[str]) -> dict[str, dict[str, Any]]:
    """Parsed suite and feedback recipes by name (comments and key order do not count)."""
    # Lazy: the recipes are read by the mocks layer; the schema itself does not depend on it.
    from galmass.mocks.suites import load_feedback, load_suite

    out: dict[str, dict[str, Any]] = {"suites": {}, "feedbacks": {}}
    for key, names, load in (("suites", suites, load_suite), ("feedbacks", feedbacks, load_feedback)):
        for n in names:
            try:
                out[key][str(n)] = {k: v for k, v in dataclasses.asdict(load(n)).items()
                                    if not (k in RECIPE_NEUTRAL_DEFAULTS
                                            and _same(v, RECIPE_NEUTRAL_DEFAULTS[k]))}
            except ConfigError as err:
                raise ConfigError(f"data.{key}: {err}") from None
    return out


def data_hash(data: DataConfig | Mapping[str, Any]) -> str:
    """Hex digest (16 characters) identifying the samples a data section generates: every dataset, shard and
    trained model records it, and a step given a different one refuses to mix them.

    Accepts a DataConfig or the identity mapping stored in a manifest (``manifest["config"]``).
    """
    ident = data_identity(data) if isinstance(data, DataConfig) else _content_keys(data)
    text = json.dumps(ident, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_diffs(old: Mapping[str, Any], new: Mapping[str, Any],
                 free: frozenset[tuple[str, str]] = RESUME_FREE_KEYS) -> list[str]:
    """``section.key: old → new`` for every key of ``new`` (a config dict) that differs from ``old``, except the
    ``free`` ones. Used wherever a stored config is compared with a new one (training resume, sweep cells)."""
    def stored(s: str, k: str) -> Any:  # a key added later reads as its neutral default in older configs
        body = old.get(s, {})
        if k in body:
            return body[k]
        return _NEUTRAL_DEFAULTS.get(s, {}).get(k)

    return [f"{s}.{k}: {stored(s, k)!r} → {v!r}" for s, body in new.items() for k, v in body.items()
            if (s, k) not in free and stored(s, k) != v]
