"""An independent validation set: equilibrium dwarf galaxies from galpy distribution functions, with exact truth.

A model graded only on the mocks it was trained on grades its own generator. This set is made by a *different*
generator — it uses neither ``galmass.mocks`` nor galmass's Jeans solver — so that a trained run (or any other
posterior estimator, e.g. an sbi NPE) can be graded on galaxies outside its training family.

What a galaxy is
----------------
A spherical dark halo plus a spherical stellar tracer whose *own mass is included* in the potential (the stars
are not massless tracers). Stellar positions and velocities are drawn from an exact equilibrium distribution
function of the tracer in the total (halo + stars) potential, computed and sampled by galpy (Bovy 2015, ApJS
216, 29):

* isotropic:                ``galpy.df.eddingtondf``        f(E)                       (Eddington 1916),
* radially anisotropic:     ``galpy.df.osipkovmerrittdf``   f(Q = E + L²/2r_a²)        (Osipkov 1979; Merritt 1985),
  β(r) = r²/(r² + r_a²), with r_a = 10^U(0, 1) × R_h (1–10 R_h).

A drawn galaxy whose DF is negative anywhere on a grid of energies (no equilibrium with that anisotropy) is
redrawn. Every galaxy is re-drawn likewise until its projected half-number radius and its Wolf et al. (2010)
dispersion σ_W = sqrt(G M(<4/3 R_h) / (4 R_h)) lie in the ranges below.

Families (:func:`family`): galaxy i has halo i mod 3 (each halo equally used), then cycles through the tracers
that can be in equilibrium in that halo and the two anisotropies. A cored tracer has no positive isotropic or
Osipkov–Merritt DF in the r^−1.5 cusp (checked with galpy), so the ``cusp`` halo carries Hernquist tracers only.

Haloes (one of three) — none is in the training family (NFW, coreNFW, DC14):

* ``burkert``: Burkert (1995) ρ ∝ 1/[(1 + r/r_B)(1 + r²/r_B²)], galpy ``BurkertPotential``, with a core radius
  r_B = y r₋₂/1.52, y log-uniform in [0.1, 1] (y = 1 puts the profile's −2 slope, at 1.52 r_B, at r₋₂; smaller
  cores are denser);
* ``cored``: two-power ρ ∝ (1 + r/a)⁻³ (inner slope 0, galpy ``TwoPowerSphericalPotential`` α=0, β=3), with a
  core radius a = x r₋₂, x log-uniform in [0.1, 0.5] (x = 0.5 puts the −2 slope, at 2a, at r₋₂);
* ``cusp``: two-power ρ ∝ (r/a)^−1.5 (1 + r/a)^−1.5 (Moore et al. 1999-like, steeper than NFW), a = 2 r₋₂.

Each halo has M200 log-uniform in [1e8, 1e11] Msun (mass within r200, mean density 200 ρ_crit, h = 0.7) and
concentration c = r200/r₋₂ from the Dutton & Macciò (2014, MNRAS 441, 3359) z = 0 relation
log10 c = 1.025 − 0.097 log10(M200 / 10¹² h⁻¹ Msun) with 0.11 dex scatter; its amplitude is set so that
M(<r200) = M200 exactly (the profile continues beyond r200).

Stars (tracer density, one of three) — none is a Plummer sphere (the training tracer):

* ``hernquist``: ρ ∝ (r/a)⁻¹ (1 + r/a)⁻³ (Hernquist 1990; galpy ``HernquistPotential``), cuspy light profile;
* ``dehnen_core``: ρ ∝ (1 + r/a)⁻⁴ (Dehnen 1993, γ = 0), a cored profile with r⁻⁴ outskirts;
* ``twopower_core5``: ρ ∝ (1 + r/a)⁻⁵, cored with Plummer-like r⁻⁵ outskirts but a gentler transition.

Stellar mass from a steep dwarf stellar-mass–halo-mass relation, log10 M★ = 7.0 + 1.9 (log10 M200 − 10) with
0.3 dex scatter (slope of Garrison-Kimmel et al. 2014, MNRAS 438, 2578), and the projected half-number radius from
the observed dwarf size–mass relation log10(R_h / kpc) = −0.6 + 0.3 (log10 M★ − 6) with 0.2 dex scatter (a fit
by eye to the Local Group dwarfs of McConnachie 2012, AJ 144, 4); the tracer scale is a = R_h / (R_h/a of its
profile). Accepted ranges: R_h ∈ [0.03, 2] kpc, σ_W ∈ [3, 40] km/s.

The sealed set (:data:`SEALED`, ``galmass validate RUN --set-name sealed``)
------------------------------------------------------------------------
The default set above has been used to choose between trained models, so it is no longer blind. The sealed set
is the same generator with nothing in common with it but the galaxy–halo relations and the anisotropy families:

* haloes ``einasto`` (Einasto 1965, ρ ∝ exp(−2n[(r/r₋₂)^(1/n) − 1]), galpy ``EinastoPotential``, α_E = 1/n uniform
  in [0.12, 0.25], the range of simulated haloes, Gao et al. 2008, MNRAS 387, 536; r₋₂ from the concentration) and
  ``shallow_cusp`` (two-power ρ ∝ (r/a)^−0.5 (1 + r/a)^−2.5, a = 10^U(−0.2, 0.2) r₋₂ / 1.5);
* tracers ``dehnen_half`` (ρ ∝ (r/a)^−0.5 (1 + r/a)^−3.5, Dehnen 1993 with γ = 1/2) and ``twopower_cusp5``
  (ρ ∝ (r/a)^−1 (1 + r/a)^−4: a Hernquist cusp with Plummer-like outskirts);
* seed 1, a 5 R_h footprint and 3 km/s errors.

It is for grading a model once it has been chosen; choosing on it would unseal it (README).

Catalogues
----------
Each galaxy is observed along ``projections`` random lines of sight (isotropic directions, random roll). For
each line of sight and each size N★ in ``n_stars`` (default 100 and 1,000) a catalogue holds N★ distinct stars
(never reused within the galaxy) drawn uniformly from those inside a circular footprint of radius
``footprint_rh`` × R_h about the true centre; line-of-sight velocities get Gaussian errors of ``v_err_kms``
(recorded per star); positions are re-centred on the stars' own estimated centre
(:func:`galmass.maps.estimate_centre`) as an observer must. No contaminants, no binaries.

Truth: log10 M(< f R_h) [Msun] of the total (halo + stars) galpy mass profile, exact, for f = 0.6 … 2.4 with R_h
the catalogue's own median projected radius (the training labels' definition) and at each literature
estimator's radius; plus the galaxy's log10 M(<r) on a fine log grid (``TRUTH_R_KPC``) so that the truth can be
evaluated at the R_h an evaluation measures after its own membership step.

What is deliberately different from the training mocks: the halo families (no NFW / coreNFW / DC14), the tracer
profiles (no Plummer), the velocities (drawn from an exact DF, so line-of-sight velocity distributions have their
true non-Gaussian shapes, instead of Gaussians with Jeans dispersions, whether isotropic or Osipkov–Merritt),
self-gravity of the stars, the galaxy–halo relations (concentration, stellar mass, size), and the
survey (a fixed 8 R_h footprint with uniform targeting and a fixed 2 km/s error; both inside the training ranges).
What is shared: the observer's steps (centring here; membership clipping and maps in the evaluation, by the same
``galmass.maps`` functions as for real catalogues) and the label definition.

Default set (``SetSpec()``, measured): 96 galaxies (32 per halo) × 4 lines of sight × N★ ∈ {100, 1000} = 384
catalogues per variant; catalogue R_h 0.028–1.97 kpc, error-corrected σ_los 3.0–46 km/s (σ_los/σ_W 0.7–1.9:
σ_los rises outwards in large cores); 5.6 MB; generated in 87 s with 2 worker processes on a 2-core machine.

Storage: one compressed ``.npz`` (catalogues as ragged arrays + truth + generating parameters + the spec as
JSON), made once and cached under ``$GALMASS_CACHE/validation`` (default ``~/.cache/galmass/validation``) with a
file name keyed by a hash of the spec (:func:`get_set`). Everything is deterministic given the spec: galaxy i
draws all its random numbers from ``numpy.random.SeedSequence([seed, i])``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
from numpy.typing import NDArray

from galmass.maps import estimate_centre
from galmass.metrics.estimators import ESTIMATORS
from galmass.physics.constants import G, H_LITTLE, RADII_FACTORS, RHO_CRIT
from galmass.physics.df import numpy_global_seed

__all__ = ["SetSpec", "GalaxyParams", "Catalogue", "ValidationSet", "GENERATOR_VERSION", "TRUTH_R_KPC", "HALOES",
           "TRACERS", "ANISOTROPIES", "HALO_INNER_SLOPE", "SEALED", "NAMED_SETS", "family", "compatible_tracers",
           "draw_params", "galaxy_model", "sample_stars", "generate_galaxy", "generate_set", "save_set", "load_set",
           "get_set", "default_set_path", "cache_dir", "projected_half_ratio", "projected_fraction"]

GENERATOR_VERSION = 1
"""Bumped whenever the generator's output for a given spec changes (it is part of the cache key)."""

TRUTH_R_KPC: NDArray[np.float64] = np.geomspace(1e-3, 1e2, 1001)
"""Radii [kpc] of each galaxy's stored log10 M(<r) table (0.005 dex spacing: log-log interpolation error
< 1e-4 dex for these smooth profiles)."""
TRUTH_R_KPC.flags.writeable = False

HALOES = ("burkert", "cored", "cusp", "einasto", "shallow_cusp")
"""Every halo family; the default set uses the first three, the sealed set (:data:`SEALED`) the last two."""
HALO_INNER_SLOPE: dict[str, float] = {"burkert": 0.0, "cored": 0.0, "cusp": 1.5, "einasto": 0.0, "shallow_cusp": 0.5}
TRACERS: dict[str, tuple[float, float]] = {"hernquist": (1.0, 4.0), "dehnen_core": (0.0, 4.0),
                                           "twopower_core5": (0.0, 5.0), "dehnen_half": (0.5, 4.0),
                                           "twopower_cusp5": (1.0, 5.0)}
"""Tracer families: (inner slope α, outer slope β) of ρ ∝ (r/a)^−α (1 + r/a)^(α−β)."""
ANISOTROPIES = ("isotropic", "osipkov_merritt")

_DF_RMAX_A = 1e3
"""The DF is truncated at r = 1000 a (E = Φ(1000 a)); the tracers have < 0.3 % of their stars beyond."""
_MAX_ATTEMPTS = 200


@dataclass(frozen=True)
class SetSpec:
    """Everything that determines a validation set (its hash is the cache key)."""

    n_galaxies: int = 96
    projections: int = 4
    n_stars: tuple[int, ...] = (100, 1000)
    seed: int = 0
    v_err_kms: float = 2.0
    footprint_rh: float = 8.0
    log_m200: tuple[float, float] = (8.0, 11.0)
    rh_kpc: tuple[float, float] = (0.03, 2.0)
    sigma_kms: tuple[float, float] = (3.0, 40.0)
    ra_over_rh: tuple[float, float] = (1.0, 10.0)
    haloes: tuple[str, ...] = HALOES[:3]
    tracers: tuple[str, ...] = tuple(TRACERS)[:3]
    anisotropies: tuple[str, ...] = ANISOTROPIES
    version: int = field(default=GENERATOR_VERSION)

    def __post_init__(self) -> None:
        if self.n_galaxies < 1 or self.projections < 1 or not self.n_stars or min(self.n_stars) < 3:
            raise ValueError(f"need n_galaxies >= 1, projections >= 1 and every n_stars >= 3, got {self.n_galaxies}, "
                             f"{self.projections}, {self.n_stars}. HINT: e.g. SetSpec(n_galaxies=8, projections=2)")
        if not (self.v_err_kms >= 0 and self.footprint_rh > 1):
            raise ValueError(f"need v_err_kms >= 0 and footprint_rh > 1, got {self.v_err_kms}, {self.footprint_rh}")
        for name, allowed in (("haloes", HALOES), ("tracers", tuple(TRACERS)), ("anisotropies", ANISOTROPIES)):
            bad = [x for x in getattr(self, name) if x not in allowed] or ([] if getattr(self, name) else ["(none)"])
            if bad:
                raise ValueError(f"unknown {name} {bad}. HINT: choose among {list(allowed)}")
        for halo in self.haloes:
            if not compatible_tracers(self, halo):
                raise ValueError(f"halo {halo!r} has no compatible tracer among {list(self.tracers)} (a cored tracer "
                                 "has no equilibrium DF in a cusp steeper than r^-1). HINT: add 'hernquist'")
        for name in ("log_m200", "rh_kpc", "sigma_kms", "ra_over_rh"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(f"{name} must be (low, high) with low < high, got {(lo, hi)}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SetSpec":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def hash(self) -> str:
        """16 hex digits of the SHA-256 of the spec's canonical JSON."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return f"galpy-v{self.version}-{self.hash()}"


@dataclass(frozen=True)
class GalaxyParams:
    """Generating parameters of one validation galaxy (lengths kpc, masses Msun)."""

    halo: str
    tracer: str
    anisotropy: str
    log_m200: float
    c200: float
    r200_kpc: float
    halo_scale_kpc: float
    """Burkert r_B, the two-power halo's scale a, or the Einasto halo's r₋₂."""
    log_mstar: float
    tracer_a_kpc: float
    rh_kpc: float
    """Projected half-number radius of the whole stellar population (the size relation's draw)."""
    r_a_kpc: float
    """Osipkov–Merritt anisotropy radius; inf when isotropic."""
    sigma_wolf_kms: float
    halo_shape: float = 0.0
    """Einasto index n (ρ ∝ exp(−2n[(r/r₋₂)^(1/n) − 1])); 0 for the other haloes (and in sets saved before it)."""


class Catalogue(NamedTuple):
    """One observed catalogue: positions about the estimated centre [kpc], v_los [km/s], per-star errors [km/s].

    The field names are those of ``galmass.predict.Catalogue``, so a sampler written for real catalogues reads it.
    """

    x_kpc: NDArray[np.float64]
    y_kpc: NDArray[np.float64]
    v_kms: NDArray[np.float64]
    v_err_kms: NDArray[np.float64]


# -- the galaxy model ---------------------------------------------------------------------------------------------

def _two_power_density(alpha: float, beta: float) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
    def rho(x: NDArray[np.float64]) -> NDArray[np.float64]:
        x = np.asarray(x, dtype=np.float64)
        return x**-alpha * (1.0 + x) ** (alpha - beta)

    return rho


@lru_cache(maxsize=None)
def _projected_fraction_fn(tracer: str) -> Callable[[float], float]:
    from scipy.integrate import quad

    if tracer not in TRACERS:
        raise ValueError(f"unknown tracer {tracer!r}. HINT: one of {list(TRACERS)}")
    rho = _two_power_density(*TRACERS[tracer])

    def shell(r: float) -> float:
        return 4.0 * np.pi * r * r * float(rho(r))

    total = quad(shell, 0.0, 1.0)[0] + quad(shell, 1.0, np.inf)[0]

    def fraction(R: float) -> float:
        outside = quad(lambda r: shell(r) * np.sqrt(1.0 - (R / r) ** 2), R, np.inf, limit=200)[0]
        return 1.0 - outside / total

    return fraction


def projected_fraction(tracer: str, R_over_a: float) -> float:
    """Fraction of a tracer's stars seen in projection inside R (in units of its scale a), by quadrature.

    M_p(<R) = M_tot − ∫_R^∞ 4π r² ρ(r) sqrt(1 − R²/r²) dr: a star at radius r > R lies outside the cylinder
    of radius R for the fraction sqrt(1 − R²/r²) of directions (Binney & Tremaine 2008, Sect. 2.2).
    """
    return float(_projected_fraction_fn(tracer)(float(R_over_a)))


@lru_cache(maxsize=None)
def projected_half_ratio(tracer: str) -> float:
    """R_h / a: projected half-number radius of a tracer family in units of its scale a (Hernquist 1990: 1.8153)."""
    from scipy.optimize import brentq

    return float(brentq(lambda R: projected_fraction(tracer, R) - 0.5, 1e-3, 1e3, xtol=1e-10))


def _concentration(log_m200: float, rng: np.random.Generator) -> float:
    """Dutton & Macciò (2014) z = 0 c200 of M200 [Msun] with 0.11 dex log-normal scatter."""
    return float(10.0 ** (1.025 - 0.097 * (log_m200 + np.log10(H_LITTLE) - 12.0) + 0.11 * rng.standard_normal()))


def compatible_tracers(spec: SetSpec, halo: str) -> tuple[str, ...]:
    """The spec's tracers that can be in equilibrium in ``halo``: a cored tracer (inner slope 0) has a negative
    isotropic and Osipkov–Merritt DF at the most bound energies in a cusp steeper than r⁻¹ (checked numerically
    with galpy for the ``cusp`` halo; ν(Ψ) then curves the wrong way near the centre, Eddington 1916), so the
    ``cusp`` halo only carries cuspy tracers."""
    return tuple(t for t in spec.tracers if TRACERS[t][0] > 0 or HALO_INNER_SLOPE[halo] <= 1.0)


def family(spec: SetSpec, index: int) -> tuple[str, str, str]:
    """(halo, tracer, anisotropy) of galaxy ``index``: haloes in turn (equally used), then each halo's compatible
    tracers in turn, then the anisotropies."""
    halo = spec.haloes[index % len(spec.haloes)]
    j = index // len(spec.haloes)
    tracers = compatible_tracers(spec, halo)
    return halo, tracers[j % len(tracers)], spec.anisotropies[(j // len(tracers)) % len(spec.anisotropies)]


SEALED = SetSpec(haloes=("einasto", "shallow_cusp"), tracers=("dehnen_half", "twopower_cusp5"), seed=1,
                 footprint_rh=5.0, v_err_kms=3.0)
"""The sealed set: haloes, light profiles, seed, footprint and errors that neither the training suites nor the
default set share, so that no model choice has ever been made on it (README, "The independent validation sets")."""
NAMED_SETS: dict[str, SetSpec] = {"default": SetSpec(), "sealed": SEALED}
"""Sets by name (``galmass validate RUN --set-name NAME``)."""


def _draw_once(spec: SetSpec, index: int, rng: np.random.Generator) -> GalaxyParams:
    """One draw of galaxy ``index``'s continuous parameters (always the same random draws, in the same order)."""
    halo, tracer, aniso = family(spec, index)
    u = rng.random(3)
    log_m200 = spec.log_m200[0] + (spec.log_m200[1] - spec.log_m200[0]) * u[0]
    c200 = _concentration(log_m200, rng)
    r200 = float((3.0 * 10.0**log_m200 / (4.0 * np.pi * 200.0 * RHO_CRIT)) ** (1.0 / 3.0))
    r_m2 = r200 / c200
    # Core radii: a fraction 10^U(-1, 0) (Burkert) or 10^U(-1, -0.3) (cored) of r_-2 / 1.52 resp. r_-2. The
    # sealed set's haloes take their shape from the same uniform u[1], so the default set's draws are unchanged.
    scale = {"burkert": r_m2 / 1.52 * 10.0 ** (u[1] - 1.0), "cored": r_m2 * 10.0 ** (-1.0 + 0.7 * u[1]),
             "cusp": 2.0 * r_m2, "einasto": r_m2, "shallow_cusp": r_m2 / 1.5 * 10.0 ** (0.4 * u[1] - 0.2)}[halo]
    # Einasto: α_E = 1/n uniform in [0.12, 0.25], the range of simulated dwarf-to-cluster haloes (Gao et al. 2008).
    shape = 1.0 / (0.12 + 0.13 * u[1]) if halo == "einasto" else 0.0
    log_mstar = 7.0 + 1.9 * (log_m200 - 10.0) + 0.3 * rng.standard_normal()
    rh = float(10.0 ** (-0.6 + 0.3 * (log_mstar - 6.0) + 0.2 * rng.standard_normal()))
    lo, hi = np.log10(spec.ra_over_rh)
    r_a = float(rh * 10.0 ** (lo + (hi - lo) * u[2])) if aniso == "osipkov_merritt" else float("inf")
    params = GalaxyParams(halo=halo, tracer=tracer, anisotropy=aniso, log_m200=float(log_m200), c200=c200,
                          r200_kpc=r200, halo_scale_kpc=float(scale), log_mstar=float(log_mstar),
                          tracer_a_kpc=rh / projected_half_ratio(tracer), rh_kpc=rh, r_a_kpc=r_a, sigma_wolf_kms=0.0,
                          halo_shape=shape)
    mass = galaxy_model(params).mass_kpc
    sigma_w = float(np.sqrt(G * mass(np.array([4.0 / 3.0 * rh]))[0] / (4.0 * rh)))
    return dataclasses.replace(params, sigma_wolf_kms=sigma_w)


def draw_params(spec: SetSpec, index: int, rng: np.random.Generator) -> GalaxyParams:
    """Parameters of galaxy ``index`` (family by :func:`family`), redrawn until R_h and σ_W are in range."""
    for _ in range(_MAX_ATTEMPTS):
        p = _draw_once(spec, index, rng)
        if spec.rh_kpc[0] <= p.rh_kpc <= spec.rh_kpc[1] and spec.sigma_kms[0] <= p.sigma_wolf_kms <= spec.sigma_kms[1]:
            return p
    raise ValueError(f"no galaxy with R_h in {spec.rh_kpc} kpc and σ_W in {spec.sigma_kms} km/s after "
                     f"{_MAX_ATTEMPTS} draws. HINT: widen SetSpec.rh_kpc / sigma_kms or the M200 range")


@dataclass(frozen=True)
class GalaxyModel:
    """galpy potentials of one galaxy in natural units (length L = tracer a [kpc], velocity V [km/s])."""

    total: Any
    tracer: Any
    length_kpc: float
    velocity_kms: float

    @property
    def mass_unit(self) -> float:
        """Msun per natural mass unit, V² L / G."""
        return self.velocity_kms**2 * self.length_kpc / G

    def mass_kpc(self, r_kpc: NDArray[np.float64]) -> NDArray[np.float64]:
        """Total (halo + stars) M(<r) [Msun] at r [kpc], from galpy's ``mass``."""
        from galpy.potential import mass

        r = np.asarray(r_kpc, dtype=np.float64)
        m = mass(self.total, np.atleast_1d(r) / self.length_kpc, use_physical=False)
        return np.asarray(m, dtype=np.float64).reshape(r.shape) * self.mass_unit

    def tracer_density_kpc(self, r_kpc: NDArray[np.float64]) -> NDArray[np.float64]:
        """Tracer number density ν(r) (arbitrary normalisation) at r [kpc]."""
        from galpy.potential import evaluateDensities

        r = np.asarray(r_kpc, dtype=np.float64)
        rho = evaluateDensities(self.tracer, np.atleast_1d(r) / self.length_kpc, 0.0, use_physical=False)
        return np.asarray(rho, dtype=np.float64).reshape(r.shape)


def _halo(params: GalaxyParams, amp: float, L: float):
    from galpy.potential import BurkertPotential, EinastoPotential, TwoPowerSphericalPotential

    s = params.halo_scale_kpc / L
    if params.halo == "burkert":
        return BurkertPotential(amp=amp, a=s)
    if params.halo == "einasto":
        return EinastoPotential(amp=amp, n=params.halo_shape, rm2=s)
    alpha = {"cored": 0.0, "cusp": 1.5, "shallow_cusp": 0.5}[params.halo]
    return TwoPowerSphericalPotential(amp=amp, a=s, alpha=alpha, beta=3.0)


def _tracer(params: GalaxyParams, amp: float):
    from galpy.potential import HernquistPotential, TwoPowerSphericalPotential

    if params.tracer == "hernquist":
        return HernquistPotential(amp=amp, a=1.0)
    alpha, beta = TRACERS[params.tracer]
    return TwoPowerSphericalPotential(amp=amp, a=1.0, alpha=alpha, beta=beta)


def galaxy_model(params: GalaxyParams) -> GalaxyModel:
    """galpy potentials of a galaxy: halo with M(<r200) = M200 plus the stars (total M★), tracer listed first.

    Natural units: L = tracer a, mass unit = total M(<a), V = sqrt(G M(<a) / L) (so orbital speeds near the
    tracer scale are O(1), where galpy's DF grids are accurate). The tracer is first in the composite potential
    so that galpy's sampling grids are centred on the tracer's scale.
    """
    L = params.tracer_a_kpc
    h1, t1 = _halo(params, 1.0, L), _tracer(params, 1.0)
    halo_amp = 10.0**params.log_m200 / float(h1.mass(params.r200_kpc / L))  # [Msun per unit amp]
    star_amp = 10.0**params.log_mstar / float(t1.mass(1e9))
    m_unit = halo_amp * float(h1.mass(1.0)) + star_amp * float(t1.mass(1.0))  # M(<a) [Msun]
    tracer = _tracer(params, star_amp / m_unit)
    total = tracer + _halo(params, halo_amp / m_unit, L)
    return GalaxyModel(total=total, tracer=tracer, length_kpc=L, velocity_kms=float(np.sqrt(G * m_unit / L)))


# -- sampling -----------------------------------------------------------------------------------------------------

def _distribution_function(params: GalaxyParams, model: GalaxyModel):
    """The galpy DF of the tracer in the total potential, or None when it is negative somewhere (no equilibrium)."""
    from galpy.df import eddingtondf, osipkovmerrittdf

    if params.anisotropy == "isotropic":
        df = eddingtondf(pot=model.total, denspot=model.tracer, rmax=_DF_RMAX_A)
        edf, f = df, df.fE
    else:
        df = osipkovmerrittdf(pot=model.total, denspot=model.tracer, ra=params.r_a_kpc / model.length_kpc,
                              rmax=_DF_RMAX_A)
        edf, f = df._edf, lambda e: df.fQ(-e)  # f(Q) = Eddington-like inversion of the augmented density
    q = np.concatenate([np.geomspace(1e-4, 0.5, 12), 1.0 - np.geomspace(1e-6, 0.5, 12)])
    energies = q * (edf._Emin - edf._potInf) + edf._potInf  # from nearly unbound to most bound
    values = np.asarray(f(energies), dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values < -1e-10 * np.max(np.abs(values))):
        return None
    return df


def sample_stars(params: GalaxyParams, n: int, rng: np.random.Generator
                 ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """n stars of a galaxy from its equilibrium DF: positions [n, 3] kpc, velocities [n, 3] km/s.

    Raises
    ------
    ValueError
        The DF is negative somewhere (that anisotropy cannot be in equilibrium in that potential).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1 stars, got {n}")
    model = galaxy_model(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # galpy's notes on rmin grids and round-off at the truncation energy
        df = _distribution_function(params, model)
        if df is None:
            raise ValueError(f"the {params.anisotropy} DF of this galaxy is negative ({params}). HINT: use "
                             "draw_params, which redraws such galaxies, or a larger r_a")
        with numpy_global_seed(rng):
            R, vR, vT, z, vz, phi = (np.asarray(q, dtype=np.float64) for q in df.sample(n=n, return_orbit=False))
    c, s = np.cos(phi), np.sin(phi)
    pos = np.stack([R * c, R * s, z], axis=-1) * model.length_kpc
    vel = np.stack([vR * c - vT * s, vR * s + vT * c, vz], axis=-1) * model.velocity_kms
    return pos, vel


def _random_basis(rng: np.random.Generator) -> NDArray[np.float64]:
    """Rows e1, e2 (sky axes) and n (line of sight): isotropic direction, uniform roll."""
    cos_t, phi, roll = 2.0 * rng.random() - 1.0, 2.0 * np.pi * rng.random(), 2.0 * np.pi * rng.random()
    sin_t = np.sqrt(1.0 - cos_t**2)
    n = np.array([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t])
    a = np.array([-np.sin(phi), np.cos(phi), 0.0])
    b = np.cross(n, a)
    e1, e2 = np.cos(roll) * a + np.sin(roll) * b, -np.sin(roll) * a + np.cos(roll) * b
    return np.stack([e1, e2, n])


def _observe(pos: NDArray[np.float64], vel: NDArray[np.float64], params: GalaxyParams, spec: SetSpec,
             model: GalaxyModel, rng: np.random.Generator) -> list[dict[str, Any]]:
    """All catalogues of one galaxy (see the module docstring): disjoint stars, footprint, errors, re-centring."""
    used = np.zeros(len(pos), dtype=bool)
    est_f = np.array([e.radius_factor for e in ESTIMATORS])
    out = []
    for p in range(spec.projections):
        basis = _random_basis(rng)
        x, y, v = pos @ basis[0], pos @ basis[1], vel @ basis[2]
        inside = x * x + y * y < (spec.footprint_rh * params.rh_kpc) ** 2
        for n_stars in spec.n_stars:
            free = np.flatnonzero(inside & ~used)
            if free.size < n_stars:
                raise RuntimeError(f"star pool exhausted ({free.size} < {n_stars}); this is a bug in the pool size")
            pick = rng.choice(free, size=n_stars, replace=False)
            used[pick] = True
            err = np.full(n_stars, spec.v_err_kms)
            v_obs = v[pick] + err * rng.standard_normal(n_stars)
            cx, cy = estimate_centre(x[pick], y[pick])
            xs, ys = x[pick] - cx, y[pick] - cy
            rh = float(np.median(np.hypot(xs, ys)))
            out.append({"projection": p, "n_stars": n_stars, "los": basis[2], "centre": (cx, cy), "rh_kpc": rh,
                        "x": xs, "y": ys, "v": v_obs, "err": err,
                        "log_m_true": np.log10(model.mass_kpc(RADII_FACTORS * rh)),
                        "log_m_true_est": np.log10(model.mass_kpc(est_f * rh))})
    return out


def _pool_size(spec: SetSpec, tracer: str) -> int:
    """Stars to sample so that every catalogue finds fresh stars inside the footprint (20 % margin + 50)."""
    frac_in = projected_fraction(tracer, spec.footprint_rh * projected_half_ratio(tracer))
    return int(np.ceil(1.2 * spec.projections * sum(spec.n_stars) / frac_in)) + 50


def generate_galaxy(spec: SetSpec, index: int) -> dict[str, Any]:
    """Galaxy ``index`` of the set: parameters, truth table and catalogues, from SeedSequence([seed, index])."""
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, index]))
    for _ in range(_MAX_ATTEMPTS):
        params = draw_params(spec, index, rng)
        try:
            pos, vel = sample_stars(params, _pool_size(spec, params.tracer), rng)
        except ValueError:  # negative DF: redraw the galaxy
            continue
        model = galaxy_model(params)
        return {"params": params, "log_m_table": np.log10(model.mass_kpc(TRUTH_R_KPC)),
                "catalogues": _observe(pos, vel, params, spec, model, rng)}
    raise RuntimeError(f"galaxy {index}: no equilibrium DF in {_MAX_ATTEMPTS} draws. HINT: widen ra_over_rh")


def _task(args: tuple[dict[str, Any], int]) -> dict[str, Any]:
    return generate_galaxy(SetSpec.from_dict(args[0]), args[1])


# -- the set: assembly, storage, cache ----------------------------------------------------------------------------

_PARAM_FIELDS = tuple(f.name for f in dataclasses.fields(GalaxyParams))
_CAT_KEYS = ("cat_galaxy", "cat_projection", "cat_n_stars", "cat_offset", "cat_los", "cat_centre_kpc", "cat_rh_kpc",
             "cat_log_m_true", "cat_log_m_true_est", "star_x_kpc", "star_y_kpc", "star_v_kms", "star_v_err_kms",
             "log_m_table")


@dataclass(eq=False)
class ValidationSet:
    """A generated validation set: spec, galaxy parameters, ragged catalogues and truth (see the module docstring).

    Arrays (C catalogues, G galaxies, S stars in all, K = 10 radii, E = 5 estimators):
    ``cat_galaxy``/``cat_projection``/``cat_n_stars`` [C] int, ``cat_offset`` [C+1] (stars of catalogue c are
    ``cat_offset[c]:cat_offset[c+1]``), ``cat_los`` [C, 3], ``cat_centre_kpc`` [C, 2] (the estimated centre that
    was removed), ``cat_rh_kpc`` [C], ``cat_log_m_true`` [C, K] and ``cat_log_m_true_est`` [C, E] (log10 Msun,
    exact, at f·R_h and the estimators' radii), ``star_*`` [S] (float32), ``log_m_table`` [G, len(TRUTH_R_KPC)].
    """

    spec: SetSpec
    galaxies: list[GalaxyParams]
    arrays: dict[str, NDArray[Any]]
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def __len__(self) -> int:
        return int(self.arrays["cat_galaxy"].size)

    def indices(self, n_stars: int | None = None) -> NDArray[np.int64]:
        """Catalogue indices (all, or those of one N★ variant)."""
        sel = np.ones(len(self), dtype=bool) if n_stars is None else self.arrays["cat_n_stars"] == int(n_stars)
        if not sel.any():
            raise ValueError(f"no catalogues with N★ = {n_stars} in {self.name}. HINT: this set has N★ in "
                             f"{sorted(set(self.arrays['cat_n_stars'].tolist()))}")
        return np.flatnonzero(sel)

    def catalogue(self, c: int) -> Catalogue:
        """Catalogue ``c`` as the observer has it (float64 copies)."""
        a, b = int(self.arrays["cat_offset"][c]), int(self.arrays["cat_offset"][c + 1])
        return Catalogue(*(self.arrays[k][a:b].astype(np.float64)
                           for k in ("star_x_kpc", "star_y_kpc", "star_v_kms", "star_v_err_kms")))

    def log_mass(self, galaxy: NDArray[np.int64], r_kpc: NDArray[np.float64]) -> NDArray[np.float64]:
        """True log10 M(<r) [Msun] of galaxies ``galaxy`` [N] at radii ``r_kpc`` [N, ...] (log-log table interp)."""
        g = np.asarray(galaxy, dtype=np.int64)
        r = np.asarray(r_kpc, dtype=np.float64)
        lo, hi = TRUTH_R_KPC[0], TRUTH_R_KPC[-1]
        if r.shape[:1] != g.shape or np.any(~np.isfinite(r)) or np.any(r < lo) or np.any(r > hi):
            raise ValueError(f"need r_kpc [N, ...] with N = {g.size} and radii in [{lo}, {hi}] kpc, got shape "
                             f"{r.shape}. HINT: one row of radii per catalogue")
        lx = np.log10(TRUTH_R_KPC)
        x = np.log10(r).reshape(g.size, -1)
        i = np.clip(np.searchsorted(lx, x, side="right") - 1, 0, lx.size - 2)
        w = (x - lx[i]) / (lx[i + 1] - lx[i])
        table = self.arrays["log_m_table"][g][:, None, :]
        lo = np.take_along_axis(table, i[..., None], axis=-1)[..., 0]
        hi = np.take_along_axis(table, i[..., None] + 1, axis=-1)[..., 0]
        return ((1.0 - w) * lo + w * hi).reshape(r.shape)

    def galaxy_table(self) -> dict[str, NDArray[Any]]:
        """Generating parameters as columns [G]."""
        return {f: np.array([getattr(g, f) for g in self.galaxies]) for f in _PARAM_FIELDS}


def _assemble(spec: SetSpec, results: list[dict[str, Any]], info: dict[str, Any]) -> ValidationSet:
    """Concatenate per-galaxy results (in galaxy order) into the ragged arrays of a ValidationSet."""
    cats = [(g, c) for g, res in enumerate(results) for c in res["catalogues"]]
    sizes = np.array([c["x"].size for _, c in cats], dtype=np.int64)

    def stack(key: str, dtype: Any = np.float64) -> NDArray[Any]:
        return np.array([c[key] for _, c in cats], dtype=dtype)

    arrays = {
        "cat_galaxy": np.array([g for g, _ in cats], dtype=np.int64),
        "cat_projection": stack("projection", np.int64), "cat_n_stars": stack("n_stars", np.int64),
        "cat_offset": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        "cat_los": stack("los"), "cat_centre_kpc": stack("centre"), "cat_rh_kpc": stack("rh_kpc"),
        "cat_log_m_true": stack("log_m_true"), "cat_log_m_true_est": stack("log_m_true_est"),
        "log_m_table": np.stack([res["log_m_table"] for res in results]),
    }
    for key, src in (("star_x_kpc", "x"), ("star_y_kpc", "y"), ("star_v_kms", "v"), ("star_v_err_kms", "err")):
        arrays[key] = np.concatenate([c[src] for _, c in cats]).astype(np.float32)
    return ValidationSet(spec, [res["params"] for res in results], arrays, info)


def generate_set(spec: SetSpec | None = None, workers: int | None = None, progress: bool = False) -> ValidationSet:
    """Generate a validation set (galaxies in parallel with a spawn process pool; same result for any ``workers``).

    ``workers`` None uses min(4, CPU count); 1 runs in this process.
    """
    spec = spec or SetSpec()
    workers = min(4, os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}. HINT: None picks min(4, CPU count)")
    t0 = time.perf_counter()
    jobs = [(spec.to_dict(), i) for i in range(spec.n_galaxies)]
    if workers == 1 or spec.n_galaxies == 1:
        results = [_task(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=min(workers, spec.n_galaxies), mp_context=get_context("spawn")) as ex:
            results = []
            for i, res in enumerate(ex.map(_task, jobs)):
                results.append(res)
                if progress and (i + 1) % 10 == 0:
                    print(f"[galmass] validation set: {i + 1}/{spec.n_galaxies} galaxies", flush=True)
    info = {"generation_time_s": round(time.perf_counter() - t0, 2), "workers": workers,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return _assemble(spec, results, info)


def save_set(vset: ValidationSet, path: str | Path) -> Path:
    """Write the set as one compressed .npz, atomically (readers see the old file or the complete new one)."""
    from hpc.atomic import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"spec": vset.spec.to_dict(), "name": vset.name, "info": vset.info, "truth_r_kpc": "TRUTH_R_KPC",
            "halo": [g.halo for g in vset.galaxies], "tracer": [g.tracer for g in vset.galaxies],
            "anisotropy": [g.anisotropy for g in vset.galaxies]}
    numeric = {f"gal_{k}": v for k, v in vset.galaxy_table().items() if k not in ("halo", "tracer", "anisotropy")}
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.array(json.dumps(meta)), truth_r_kpc=np.asarray(TRUTH_R_KPC), **numeric,
                        **vset.arrays)
    atomic_write_bytes(path, buf.getvalue())
    vset.path = path
    return path


def load_set(path: str | Path) -> ValidationSet:
    """Read a set written by :func:`save_set`; refuses a file of another generator version or truth grid."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path}: not a readable validation set ({type(err).__name__}: {err}). HINT: regenerate it "
                         "(galmass validate RUN --regenerate, or delete the file)") from None
    meta = json.loads(str(data.pop("meta")))
    spec = SetSpec.from_dict(meta["spec"])
    if spec.version != GENERATOR_VERSION or not np.array_equal(data.pop("truth_r_kpc"), TRUTH_R_KPC):
        raise ValueError(f"{path}: made by generator version {spec.version}, this is version {GENERATOR_VERSION}. "
                         "HINT: regenerate it (galmass validate RUN --regenerate)")
    cols = {k[4:]: data.pop(k) for k in list(data) if k.startswith("gal_")}
    cols.update(halo=meta["halo"], tracer=meta["tracer"], anisotropy=meta["anisotropy"])
    cols.setdefault("halo_shape", np.zeros(spec.n_galaxies))  # a set saved before the field existed
    galaxies = [GalaxyParams(**{f: (str(cols[f][i]) if f in ("halo", "tracer", "anisotropy") else float(cols[f][i]))
                                for f in _PARAM_FIELDS}) for i in range(spec.n_galaxies)]
    missing = [k for k in _CAT_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}. HINT: regenerate it (--regenerate)")
    return ValidationSet(spec, galaxies, data, meta.get("info", {}), path)


def cache_dir() -> Path:
    """``$GALMASS_CACHE/validation`` if set, else ``~/.cache/galmass/validation``."""
    root = os.environ.get("GALMASS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "galmass") / "validation"


def default_set_path(spec: SetSpec | None = None) -> Path:
    """Cache file of a spec: ``cache_dir()/<spec.name>.npz`` (the name carries the generator version and hash)."""
    return cache_dir() / f"{(spec or SetSpec()).name}.npz"


def get_set(path: str | Path | None = None, spec: SetSpec | None = None, *, regenerate: bool = False,
            workers: int | None = None, progress: bool = False) -> ValidationSet:
    """The validation set at ``path`` (default: the cache file of ``spec``), generated and saved on first use."""
    spec = spec or SetSpec()
    path = Path(path) if path is not None else default_set_path(spec)
    if path.exists() and not regenerate:
        return load_set(path)
    if progress:
        print(f"[galmass] generating validation set {spec.name} ({spec.n_galaxies} galaxies × {spec.projections} "
              f"projections × N★ {list(spec.n_stars)}) → {path}", flush=True)
    vset = generate_set(spec, workers=workers, progress=progress)
    save_set(vset, path)
    return vset
