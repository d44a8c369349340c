"""Suite and feedback recipes: the YAML files in ``configs/suites/`` and ``configs/feedback/``.

A *suite* is a galaxy population recipe (halo masses, concentrations, stellar masses, sizes, anisotropy, gas);
a *feedback model* says how the dark-matter halo and the gas respond to star formation (cusp or core, and how far
the gas is from equilibrium). Files are read strictly: an unknown key is an error naming the file and the closest
valid key (``galmass.config.build_dataclass``). Every value a file omits takes the dataclass default below.

Ranges are written ``[low, high]`` and drawn uniformly, or log-uniformly where the field says so.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from galmass.config import ConfigError, build_dataclass, read_yaml

__all__ = ["SuiteSpec", "FeedbackSpec", "load_suite", "load_feedback", "available", "CONFIG_DIR"]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
"""The repository's ``configs/`` directory, where bare suite / feedback names are looked up."""


def _check_range(name: str, rng: tuple[float, float], lo: float | None = None, hi: float | None = None) -> None:
    a, b = rng
    if not a <= b:
        raise ConfigError(f"{name} = [{a}, {b}] must have low <= high. HINT: write [low, high]")
    if lo is not None and a < lo:
        raise ConfigError(f"{name} = [{a}, {b}] must be >= {lo}")
    if hi is not None and b > hi:
        raise ConfigError(f"{name} = [{a}, {b}] must be <= {hi}")


@dataclass(frozen=True)
class SuiteSpec:
    """A galaxy population recipe (one YAML file in ``configs/suites/``)."""

    name: str = ""
    """Suite name; defaults to the file name without ``.yaml``."""
    description: str = ""
    """Free text: what this suite stands for."""
    log10_m200_range: tuple[float, float] = (8.0, 11.0)
    """Dark-matter halo mass log10 M200 [Msun], drawn uniformly."""
    c200_offset_dex: float = 0.0
    """Shift of log10 c200 from the Dutton & Macciò (2014) median [dex] (> 0: more concentrated haloes)."""
    c200_scatter_dex: float = 0.11
    """Log-normal scatter of c200 about the median [dex] (Dutton & Macciò 2014: 0.11)."""
    smhm_n: float = 0.0351
    """Moster+2013 normalisation N."""
    smhm_log_m1: float = 11.59
    """Moster+2013 characteristic halo mass log10 M1 [Msun]."""
    smhm_beta: float = 1.376
    """Moster+2013 low-mass slope beta (larger: fewer stars in dwarfs)."""
    smhm_gamma: float = 0.608
    """Moster+2013 high-mass slope gamma."""
    smhm_scatter_dex: float = 0.2
    """Log-normal scatter of M* at fixed M200 [dex]."""
    size_k: float = 0.011
    """Projected half-number radius R_h = k R200. Kravtsov (2013) finds the 3-D half-light radius r_1/2 ~ 0.015 R200;
    projected, R_h ~ 3/4 r_1/2, hence the default 0.011."""
    size_scatter_dex: float = 0.2
    """Log-normal scatter of R_h at fixed R200 [dex] (Kravtsov 2013: ~0.2)."""
    om_fraction: float = 0.3
    """Fraction of galaxies with Osipkov–Merritt anisotropy (isotropic centre, radial outskirts); the rest have
    constant beta."""
    om_ra_over_rh_range: tuple[float, float] = (0.5, 5.0)
    """Osipkov–Merritt anisotropy radius r_a / R_h, drawn log-uniformly (small r_a: strongly radial)."""
    beta_range: tuple[float, float] = (-0.5, 0.5)
    """Constant anisotropy beta, drawn uniformly (< 0 tangential, > 0 radial). Must stay < 1."""
    gas_to_stellar_range: tuple[float, float] = (0.5, 5.0)
    """Gas mass / stellar mass, drawn log-uniformly."""
    gas_rd_over_rh_range: tuple[float, float] = (1.0, 2.0)
    """Gas disc exponential scale length R_d / R_h, drawn uniformly."""
    gas_sigma_kms_range: tuple[float, float] = (8.0, 12.0)
    """Gas turbulent velocity dispersion (isotropic, per component) [km/s], drawn uniformly."""
    light_outer_slope_range: tuple[float, float] = (5.0, 5.0)
    """Outer slope beta of the stellar (alpha, beta, gamma) number-density profile, drawn uniformly (> 3;
    5 with inner slope 0 is Plummer). Observed dSph profiles range from King/exponential-like to steep outer
    fall-offs (Muñoz et al. 2018)."""
    light_inner_slope_range: tuple[float, float] = (0.0, 0.0)
    """Inner slope gamma of the stellar profile, drawn uniformly in [0, 1) (0: a cored light profile)."""
    light_transition_range: tuple[float, float] = (2.0, 2.0)
    """Transition sharpness alpha of the stellar (alpha, beta, gamma) profile, drawn uniformly: 2 is Plummer's (with
    beta = 5, gamma = 0), 1 the gradual one of Hernquist (1990) and Dehnen (1993) profiles, closer to exponential
    and Sérsic fits of dwarfs. [2, 2] (default) draws nothing and leaves every galaxy bit-identical."""
    df_fraction: float = 0.0
    """Fraction of galaxies whose stars get velocities from the equilibrium distribution function (isotropic
    Eddington or Osipkov–Merritt, :func:`galmass.physics.df.eddington_df`) instead of Gaussians with the Jeans
    dispersions, so that their line-of-sight velocity distributions have the equilibrium kurtosis (observed
    2.8-3.3) instead of exactly 3. Only Osipkov–Merritt and beta = 0 galaxies (see df_constant_beta, df_isotropise
    for the others) with a non-negative DF qualify; the
    choice comes from a child of the galaxy seed, so 0 (default) leaves every galaxy and star bit-identical."""
    df_isotropise: bool = False
    """True: a constant-beta galaxy drawn for equilibrium-DF velocities (``df_fraction``) is made isotropic
    (beta = 0) and gets the isotropic Eddington DF, instead of keeping Jeans-Gaussian velocities because no DF
    exists here for constant beta != 0. beta is drawn from a continuous range, so without this the isotropic DF
    never occurs and only Osipkov–Merritt galaxies have equilibrium line-of-sight velocity distributions. False
    (default) leaves every galaxy and star bit-identical."""
    df_constant_beta: bool = False
    """True: a constant-beta galaxy drawn for equilibrium-DF velocities (``df_fraction``) keeps its beta and samples
    the Cuddeford (1991) DF f(E, L) = L^(-2 beta) f_E(E) (:func:`galmass.physics.df.eddington_df`), where one exists:
    -1/2 < beta < 1/2 and, for beta > 0, a light profile with a central slope of at least 2 beta (An & Evans 2006);
    the others keep Jeans-Gaussian velocities. Takes precedence over ``df_isotropise``. False (default) leaves every
    galaxy and star bit-identical."""
    bvh_fraction: float = 0.0
    """Fraction of galaxies with Baes & van Hese (2007, A&A 471, 419) anisotropy
    beta(r) = (beta_0 + beta_inf x^delta) / (1 + x^delta), x = r / r_a, which replaces their constant-beta or
    Osipkov–Merritt one (a smooth turn-over from any central to any outer value, as seen in simulated dwarfs).
    The choice and the four parameters come from a child of the galaxy seed, so 0 (default) leaves every galaxy
    and star bit-identical. Such galaxies get Jeans-Gaussian velocities (no equilibrium DF, see df_fraction)."""
    bvh_beta0_range: tuple[float, float] = (-0.3, 0.3)
    """Baes & van Hese central anisotropy beta_0, drawn uniformly (< 1; > 0 with cored light breaks the central
    anisotropy theorem, An & Evans 2006, so keep it mild)."""
    bvh_beta_inf_range: tuple[float, float] = (0.0, 0.8)
    """Baes & van Hese outer anisotropy beta_inf, drawn uniformly (<= 1)."""
    bvh_ra_over_rh_range: tuple[float, float] = (0.5, 3.0)
    """Baes & van Hese transition radius r_a / R_h, drawn log-uniformly (> 0)."""
    bvh_delta_range: tuple[float, float] = (1.0, 3.0)
    """Baes & van Hese transition sharpness delta, drawn uniformly (> 0; 2 as Osipkov–Merritt)."""
    flattened_fraction: float = 0.0
    """Fraction of galaxies whose stars form an oblate spheroid of intrinsic axis ratio q (dSphs have projected
    ellipticities 0.1-0.5, McConnachie 2012), with velocities from the cylindrically aligned axisymmetric Jeans
    equations (:mod:`galmass.physics.axisymmetric`) and a constant beta_z, which replace the spherical anisotropy.
    The choice and q, beta_z come from a child of the galaxy seed, so 0 (default) leaves every galaxy and star
    bit-identical. Baes & van Hese galaxies stay spherical; flattened ones get no equilibrium DF."""
    flattening_q_range: tuple[float, float] = (0.5, 1.0)
    """Intrinsic axis ratio q of flattened galaxies, drawn uniformly in (0, 1]."""
    flattening_beta_z_range: tuple[float, float] = (0.0, 0.3)
    """Constant beta_z = 1 - sigma_z^2 / sigma_R^2 of flattened galaxies, drawn uniformly (< 1; JAM fits of
    flattened early-type galaxies find 0-0.3, Cappellari 2008)."""
    tidal_fraction: float = 0.0
    """Fraction of galaxies whose dark halo is tidally truncated (satellites): its density is tapered by
    exp(-r / r_t) (:func:`galmass.physics.profiles.exp_tapered_mass`), so the mass grows less beyond R_h than in
    an isolated halo of the same inner shape. The choice and r_t come from a child of the galaxy seed, so 0
    (default) leaves every galaxy and star bit-identical. Labels are the tapered (true) masses."""
    tidal_rt_over_rh_range: tuple[float, float] = (3.0, 30.0)
    """Taper radius r_t / R_h of truncated haloes, drawn log-uniformly (> 0). Jacobi radii of the Milky Way's
    classical dSphs are a few to ~10 R_h (Peñarrubia, Navarro & McConnachie 2008, ApJ 673, 226); much below
    ~3 R_h the stars themselves would be stripped."""

    def __post_init__(self) -> None:
        _check_range("log10_m200_range", self.log10_m200_range, 6.0, 15.0)
        _check_range("om_ra_over_rh_range", self.om_ra_over_rh_range, 1e-3)
        if self.om_ra_over_rh_range[0] <= 0:
            raise ConfigError(f"om_ra_over_rh_range must be > 0, got {self.om_ra_over_rh_range}")
        _check_range("beta_range", self.beta_range, -10.0)
        if self.beta_range[1] >= 1.0:
            raise ConfigError(f"beta_range = {self.beta_range}: beta must stay < 1 (sigma_t^2 = (1-beta) sigma_r^2). "
                              "HINT: use Osipkov–Merritt (om_fraction) for strongly radial orbits")
        _check_range("gas_to_stellar_range", self.gas_to_stellar_range, 0.0)
        if self.gas_to_stellar_range[0] <= 0:
            raise ConfigError(f"gas_to_stellar_range must be > 0 (drawn log-uniformly), got "
                              f"{self.gas_to_stellar_range}")
        _check_range("gas_rd_over_rh_range", self.gas_rd_over_rh_range, 1e-3)
        _check_range("gas_sigma_kms_range", self.gas_sigma_kms_range, 0.0)
        _check_range("light_outer_slope_range", self.light_outer_slope_range, 3.2, 20.0)
        _check_range("light_inner_slope_range", self.light_inner_slope_range, 0.0, 1.5)
        _check_range("light_transition_range", self.light_transition_range, 0.5, 4.0)
        if not 0.0 <= self.om_fraction <= 1.0:
            raise ConfigError(f"om_fraction must be in [0, 1], got {self.om_fraction}")
        if not 0.0 <= self.df_fraction <= 1.0:
            raise ConfigError(f"df_fraction must be in [0, 1], got {self.df_fraction}. "
                              "HINT: 0 keeps Gaussian velocities")
        self._check_bvh()
        if not 0.0 <= self.tidal_fraction <= 1.0:
            raise ConfigError(f"tidal_fraction must be in [0, 1], got {self.tidal_fraction}. "
                              "HINT: 0 keeps every halo untruncated")
        _check_range("tidal_rt_over_rh_range", self.tidal_rt_over_rh_range, 1e-3)
        if not 0.0 <= self.flattened_fraction <= 1.0:
            raise ConfigError(f"flattened_fraction must be in [0, 1], got {self.flattened_fraction}. "
                              "HINT: 0 keeps every galaxy spherical")
        _check_range("flattening_q_range", self.flattening_q_range, 0.05, 1.0)
        _check_range("flattening_beta_z_range", self.flattening_beta_z_range, -10.0)
        if self.flattening_beta_z_range[1] >= 1.0:
            raise ConfigError(f"flattening_beta_z_range = {self.flattening_beta_z_range}: beta_z must stay < 1 "
                              "(sigma_z^2 = (1 - beta_z) sigma_R^2)")
        if not 0.0 < self.size_k < 1.0:
            raise ConfigError(f"size_k must be in (0, 1), got {self.size_k}. HINT: Kravtsov 2013 finds ~0.015")
        for key in ("c200_scatter_dex", "smhm_scatter_dex", "size_scatter_dex"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        for key in ("smhm_n", "smhm_beta", "smhm_gamma"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)}")

    def _check_bvh(self) -> None:
        """The Baes & van Hese keys: a fraction in [0, 1] and ranges that keep sigma_t^2 >= 0 and r_a, delta > 0."""
        if not 0.0 <= self.bvh_fraction <= 1.0:
            raise ConfigError(f"bvh_fraction must be in [0, 1], got {self.bvh_fraction}. HINT: 0 disables it")
        _check_range("bvh_beta0_range", self.bvh_beta0_range, -10.0)
        if self.bvh_beta0_range[1] >= 1.0:
            raise ConfigError(f"bvh_beta0_range = {self.bvh_beta0_range}: the central beta_0 must stay < 1")
        _check_range("bvh_beta_inf_range", self.bvh_beta_inf_range, -10.0, 1.0)
        _check_range("bvh_ra_over_rh_range", self.bvh_ra_over_rh_range, 1e-3)
        _check_range("bvh_delta_range", self.bvh_delta_range, 0.1, 20.0)


@dataclass(frozen=True)
class FeedbackSpec:
    """How the halo and the gas respond to star formation (one YAML file in ``configs/feedback/``)."""

    name: str = ""
    """Feedback model name; defaults to the file name without ``.yaml``."""
    description: str = ""
    """Free text: what this model stands for."""
    profile: Literal["nfw", "corenfw", "dc14", "zhao"] = "nfw"
    """Dark-matter profile: 'nfw' (cusp), 'corenfw' (Read, Agertz & Collins 2016; core strength n drawn from
    n_range) or 'dc14' (Di Cintio et al. 2014: the (alpha, beta, gamma) shape set by each galaxy's own
    X = log10(M*/M200), so the core follows the star-formation efficiency; n_range must be [0, 0])."""
    inner_slope_range: tuple[float, float] = (1.0, 1.0)
    """'zhao' profile: inner slope gamma of the dark matter, drawn uniformly in [0, 1.5] (0 core, 1 NFW-like,
    1.5 steeper than NFW): a continuous family instead of the cusp/core dichotomy (Zhao 1996)."""
    transition_range: tuple[float, float] = (1.0, 1.0)
    """'zhao' profile: transition sharpness alpha, drawn uniformly (1 is NFW-like; larger: sharper)."""
    outer_slope: float = 3.0
    """'zhao' profile: outer slope beta (3 as NFW)."""
    n_range: tuple[float, float] = (0.0, 0.0)
    """coreNFW core strength n in [0, 1], drawn uniformly (must be [0, 0] for 'nfw')."""
    eta_range: tuple[float, float] = (1.75, 1.75)
    """coreNFW core radius r_c = eta R_h, eta drawn uniformly (Read, Agertz & Collins 2016 find 1.75 on average;
    a range lets the core radius vary independently of the stars)."""
    gas_core_link: float = 0.0
    """Explicit, weak link between the core and the gas disturbances, in [0, 1]: every gas non-equilibrium amplitude
    is multiplied by (1 + gas_core_link (n − 0.5)) with n the coreNFW core strength. 0 (default): none, so the
    gas disturbance amplitude cannot reveal the feedback model by itself."""
    radial_flow_range: tuple[float, float] = (0.0, 0.03)
    """Gas radial in/outflow speed as a fraction of v_c, drawn uniformly; the sign (in or out) is random."""
    m2_range: tuple[float, float] = (0.0, 0.03)
    """Amplitude of the m = 2 (oval/bar-like) perturbation of the gas velocity field, fraction of v_c."""
    lopsided_range: tuple[float, float] = (0.0, 0.03)
    """Amplitude of the m = 1 (lopsided) perturbation of the gas velocity field, fraction of v_c."""

    def __post_init__(self) -> None:
        _check_range("n_range", self.n_range, 0.0, 1.0)
        if self.profile in ("nfw", "dc14") and self.n_range != (0.0, 0.0):
            raise ConfigError(f"profile '{self.profile}' has no coreNFW n, but n_range = {list(self.n_range)}. "
                              "HINT: set profile: corenfw, or n_range: [0, 0]")
        _check_range("eta_range", self.eta_range, 1e-3)
        _check_range("inner_slope_range", self.inner_slope_range, 0.0, 1.9)
        _check_range("transition_range", self.transition_range, 0.1, 10.0)
        if not 2.0 < self.outer_slope <= 10.0:
            raise ConfigError(f"outer_slope must be in (2, 10], got {self.outer_slope}. HINT: NFW has 3")
        if not 0.0 <= self.gas_core_link <= 1.0:
            raise ConfigError(f"gas_core_link must be in [0, 1], got {self.gas_core_link}. HINT: 0 means no link")
        for key in ("radial_flow_range", "m2_range", "lopsided_range"):
            _check_range(key, getattr(self, key), 0.0, 1.0)


def available(kind: Literal["suites", "feedback"]) -> list[str]:
    """Names of the shipped recipes of one kind (YAML files in ``configs/<kind>/``)."""
    return sorted(p.stem for p in (CONFIG_DIR / kind).glob("*.yaml"))


def _resolve(name_or_path: str | Path, kind: Literal["suites", "feedback"]) -> Path:
    text = str(name_or_path)
    path = Path(text)
    if isinstance(name_or_path, Path) or path.suffix in (".yaml", ".yml") or "/" in text or "\\" in text:
        if not path.is_file():
            raise ConfigError(f"{kind} file not found: {path}")
        return path
    candidate = CONFIG_DIR / kind / f"{text}.yaml"
    if not candidate.is_file():
        names = available(kind)
        close = difflib.get_close_matches(text, names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown {kind} name '{text}'.{hint} Available in {CONFIG_DIR / kind}: "
                          f"{', '.join(names) or '(none)'}. HINT: or pass a path to a YAML file")
    return candidate


def _read_recipe(path: Path, kind: Literal["suites", "feedback"], seen: tuple[Path, ...] = ()) -> dict:
    """A recipe's keys, those of the recipe named by its ``extends`` key first (its own override them), so a
    variant lists only what it changes; a cycle is an error naming the files."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' loops back through {' -> '.join(str(p) for p in seen)}")
    data = read_yaml(path, what="recipe keys")
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'extends' must name one recipe (a bare name or a path), got {base!r}")
    inherited = _read_recipe(_resolve(base, kind), kind, (*seen, path.resolve()))
    inherited.pop("description", None)  # a variant describes itself
    return {**inherited, **data}


def _load(cls: type, name_or_path: str | Path, kind: Literal["suites", "feedback"]):
    path = _resolve(name_or_path, kind)
    data = _read_recipe(path, kind)
    spec = build_dataclass(cls, data, str(path))
    if not spec.name:
        spec = dataclasses.replace(spec, name=path.stem)
    return spec


def load_suite(name_or_path: str | Path | SuiteSpec) -> SuiteSpec:
    """Load a suite recipe by bare name (``configs/suites/<name>.yaml``) or by path.

    Raises
    ------
    ConfigError
        Unknown name (lists the available ones), missing file, unknown key (names the file and the closest key),
        wrong type or out-of-range value.
    """
    if isinstance(name_or_path, SuiteSpec):
        return name_or_path
    return _load(SuiteSpec, name_or_path, "suites")


def load_feedback(name_or_path: str | Path | FeedbackSpec) -> FeedbackSpec:
    """Load a feedback model by bare name (``configs/feedback/<name>.yaml``) or by path.

    Raises ConfigError as :func:`load_suite` does.
    """
    if isinstance(name_or_path, FeedbackSpec):
        return name_or_path
    return _load(FeedbackSpec, name_or_path, "feedback")
