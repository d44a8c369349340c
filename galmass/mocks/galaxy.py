"""One mock dwarf galaxy: its parameters, its true mass profile, and particle samplers for stars and gas.

Components (all spherical except the gas disc, whose mass is counted inside spheres exactly because it is
razor-thin):

* dark matter: NFW or coreNFW (Read, Agertz & Collins 2016) with M200, c200, R200, r_c = eta R_h, n; DC14 or
  Zhao; for a fraction of galaxies (satellites) tidally truncated by an exponential taper at r_t;
* stars: Plummer or two-power sphere of mass M* and scale a = R_h (projected half-number radius of the whole
  population), velocities from the spherical Jeans equation in the TOTAL mass, constant-beta, Osipkov–Merritt or
  Baes & van Hese (2007) anisotropy; or, for a fraction of galaxies, the same profile squashed into an oblate
  spheroid with axisymmetric-Jeans velocities (the potential stays spherical: dark matter dominates dwarfs);
* gas: razor-thin exponential disc of mass M_gas and scale R_d, random orientation, rotating at the circular
  speed of the total (spherical) mass with an asymmetric-drift correction, turbulence and non-equilibrium motions.

``M200`` is the mass of the dark-matter halo alone; the total mass adds stars and gas.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from galmass.mocks.suites import FeedbackSpec, SuiteSpec
from galmass.physics.constants import G, LOG_R_GRID
from galmass.physics.df import EddingtonDF, eddington_df
from galmass.physics.axisymmetric import AxisymmetricJeans, sample_axisymmetric_velocities, solve_axisymmetric_jeans
from galmass.physics.jeans import JeansSolution, solve_jeans
from galmass.physics.profiles import (
    corenfw_mass,
    dc14_mass,
    exp_taper_table,
    exp_tapered_mass,
    exponential_disc_mass,
    plummer_density,
    plummer_mass,
    plummer_radius_from_fraction,
    zhao_mass,
)
from galmass.physics.tracers import TwoPowerTracer
from galmass.physics.scaling import c200_dutton_maccio, r200_from_m200, size_kravtsov, smhm_moster

__all__ = ["Galaxy", "PARAM_NAMES", "draw_galaxy", "sample_stars", "sample_gas", "jeans_solution",
           "axisymmetric_solution"]


@dataclass(frozen=True)
class Galaxy:
    """Parameters of one mock galaxy (units: Msun, kpc, km/s; angles in radians)."""

    m200: float
    """Dark-matter halo mass M200 [Msun]."""
    c200: float
    """Halo concentration R200 / r_s."""
    r200: float
    """Halo radius [kpc] (200 times the critical density)."""
    mstar: float
    """Stellar mass [Msun]."""
    a: float
    """Plummer scale [kpc] = projected half-number radius R_h of the whole stellar population."""
    om: bool
    """True: Osipkov–Merritt anisotropy with radius ``r_a``; False: constant ``beta`` (both unless ``bvh``)."""
    beta: float
    """Constant anisotropy (used when ``om`` is False)."""
    r_a: float
    """Osipkov–Merritt anisotropy radius [kpc] (used when ``om`` is True)."""
    n: float
    """coreNFW core strength in [0, 1] (0: NFW cusp)."""
    r_c: float
    """coreNFW core radius [kpc]."""
    m_gas: float
    """Gas disc mass [Msun]."""
    r_d: float
    """Gas disc exponential scale length [kpc]."""
    sigma_gas: float
    """Gas turbulent dispersion per component [km/s]."""
    v_rad_frac: float
    """Gas radial flow speed as a fraction of v_c (> 0 outflow, < 0 inflow)."""
    m2_frac: float
    """m = 2 gas velocity perturbation amplitude, fraction of v_c."""
    m2_phase: float
    """Phase of the m = 2 perturbation in the disc plane [rad]."""
    m1_frac: float
    """m = 1 (lopsided) gas velocity perturbation amplitude, fraction of v_c."""
    m1_phase: float
    """Phase of the m = 1 perturbation [rad]."""
    disc_nx: float
    """Gas disc normal, x component (galaxy frame)."""
    disc_ny: float
    """Gas disc normal, y component."""
    disc_nz: float
    """Gas disc normal, z component."""
    dc14: bool = False
    """True: the dark matter follows Di Cintio et al. (2014) with X = log10(mstar / m200) (``n`` and ``r_c`` unused)."""
    zhao: bool = False
    """True: the dark matter is a Zhao (alpha, beta, gamma) halo with the shape below (``n``, ``r_c`` unused)."""
    halo_alpha: float = 1.0
    """Zhao halo transition sharpness (used when ``zhao``)."""
    halo_beta: float = 3.0
    """Zhao halo outer slope (used when ``zhao``)."""
    halo_gamma: float = 1.0
    """Zhao halo inner slope: 0 core ... 1.5 steep cusp (used when ``zhao``)."""
    light_beta: float = 5.0
    """Outer slope of the stellar (alpha = 2, beta, gamma) profile; with light_gamma = 0, 5 is Plummer."""
    light_gamma: float = 0.0
    """Inner slope of the stellar profile (0: cored light, as Plummer)."""
    light_alpha: float = 2.0
    """Transition sharpness of the stellar (alpha, beta, gamma) profile: 2 (with beta = 5, gamma = 0: Plummer), 1 a
    gradual one (Hernquist, Dehnen). Drawn only when ``SuiteSpec.light_transition_range`` asks for it."""
    equilibrium_df: bool = False
    """True: :func:`sample_stars` draws the stellar velocities from the equilibrium distribution function
    (Osipkov–Merritt when ``om``, else of constant beta, isotropic for 0) instead of Jeans Gaussians; set by
    ``SuiteSpec.df_fraction``."""
    bvh: bool = False
    """True: Baes & van Hese (2007) anisotropy with the four ``bvh_*`` values below; it overrides ``om``, ``beta``
    and ``r_a`` (which keep their drawn values). Set by ``SuiteSpec.bvh_fraction``."""
    bvh_beta0: float = 0.0
    """Baes & van Hese central anisotropy beta_0 (< 1; used when ``bvh``)."""
    bvh_beta_inf: float = 0.0
    """Baes & van Hese outer anisotropy beta_inf (<= 1; used when ``bvh``)."""
    bvh_r_a: float = 0.0
    """Baes & van Hese transition radius r_a [kpc], where beta is halfway between beta_0 and beta_inf (used when
    ``bvh``)."""
    bvh_delta: float = 2.0
    """Baes & van Hese transition sharpness delta (> 0; used when ``bvh``)."""
    flattened: bool = False
    """True: the stars form an oblate spheroid (symmetry axis z) of axis ratio ``flat_q``, with velocities from the
    axisymmetric Jeans equations with ``flat_beta_z``; it overrides ``om``, ``beta`` and ``r_a``. Set by
    ``SuiteSpec.flattened_fraction``."""
    flat_q: float = 1.0
    """Intrinsic axis ratio of the stellar spheroid (used when ``flattened``): z is squashed by q, the major axis
    keeps the spherical profile of scale ``a``."""
    flat_beta_z: float = 0.0
    """Constant beta_z = 1 - sigma_z^2 / sigma_R^2 (used when ``flattened``)."""
    tidal: bool = False
    """True: the dark halo is tidally truncated, its density tapered by exp(-r / ``tidal_rt``) (a satellite). Set by
    ``SuiteSpec.tidal_fraction``."""
    tidal_rt: float = 0.0
    """Taper radius r_t [kpc] of a truncated halo (used when ``tidal``)."""

    # --- mass profile -------------------------------------------------------------------------------------------
    @property
    def plummer(self) -> bool:
        """Whether the stellar profile is exactly Plummer (closed forms are used then)."""
        return self.light_alpha == 2.0 and self.light_beta == 5.0 and self.light_gamma == 0.0

    @property
    def tracer(self) -> TwoPowerTracer:
        """The stellar number-density profile, with projected half-number radius ``a``."""
        return TwoPowerTracer(self.light_alpha, self.light_beta, self.light_gamma, self.a)

    def dm_mass(self, r: ArrayLike) -> NDArray[np.float64]:
        """Dark-matter mass inside radius r [kpc] -> [Msun] (coreNFW, n = 0 is exactly NFW; DC14; or Zhao), tapered
        by exp(-r / r_t) when ``tidal``."""
        if self.tidal:
            return exp_tapered_mass(r, self._isolated_dm_mass, self.tidal_rt, _taper_table(self))
        return self._isolated_dm_mass(r)

    def _isolated_dm_mass(self, r: ArrayLike) -> NDArray[np.float64]:
        """The halo's mass inside r [kpc] before any tidal taper [Msun]."""
        if self.zhao:
            return zhao_mass(r, self.m200, self.c200, self.r200, self.halo_alpha, self.halo_beta, self.halo_gamma)
        if self.dc14:
            return dc14_mass(r, self.m200, self.c200, self.r200, float(np.log10(self.mstar / self.m200)))
        return corenfw_mass(r, self.m200, self.c200, self.r200, self.r_c, self.n)

    def star_mass(self, r: ArrayLike) -> NDArray[np.float64]:
        """Stellar mass inside radius r [kpc] -> [Msun] (mass follows the star counts)."""
        if self.plummer:
            return plummer_mass(r, self.a, self.mstar)  # closed form for the Plummer default
        return self.mstar * self.tracer.fraction(r)

    def gas_mass(self, r: ArrayLike) -> NDArray[np.float64]:
        """Gas disc mass inside the sphere of radius r [kpc] -> [Msun]."""
        return exponential_disc_mass(r, self.m_gas, self.r_d)

    def mass(self, r: ArrayLike) -> NDArray[np.float64]:
        """Total (dark matter + stars + gas) 3-D mass inside radius r [kpc] -> [Msun]."""
        return self.dm_mass(r) + self.star_mass(r) + self.gas_mass(r)

    def log_mass_profile(self) -> NDArray[np.float64]:
        """log10 M_total(<r) [Msun] on ``galmass.physics.constants.LOG_R_GRID`` (radii in kpc)."""
        return np.log10(self.mass(LOG_R_GRID))

    # --- anisotropy ---------------------------------------------------------------------------------------------
    def anisotropy_kwargs(self) -> dict[str, float | None]:
        """``beta`` / ``r_a`` (and, for Baes & van Hese, ``beta_inf`` / ``delta``) arguments for
        :func:`galmass.physics.jeans.solve_jeans`."""
        if self.bvh:
            return {"beta": self.bvh_beta0, "r_a": self.bvh_r_a, "beta_inf": self.bvh_beta_inf,
                    "delta": self.bvh_delta}
        return {"beta": 0.0, "r_a": self.r_a} if self.om else {"beta": self.beta, "r_a": None}

    @property
    def disc_normal(self) -> NDArray[np.float64]:
        """Unit normal of the gas disc in the galaxy frame."""
        return np.array([self.disc_nx, self.disc_ny, self.disc_nz])

    def params_vector(self) -> NDArray[np.float64]:
        """All parameters as float64, in the order of ``PARAM_NAMES`` (``om`` as 0/1)."""
        return np.array([float(getattr(self, name)) for name in PARAM_NAMES], dtype=np.float64)


# equilibrium_df is how the velocities are sampled, not a parameter of the mass model: kept out so the stored
# parameter table of every dataset stays bit-identical (it can be recomputed from the seed, see _flag_equilibrium_df).
# The Baes & van Hese fields are kept out for the same reason (bit-identical tables for suites without them); they
# too are recomputed from the seed (_flag_bvh), as are the flattening (_flag_flattened) and tidal (_flag_tidal)
# fields, and light_alpha (_light_transition). NOTE: a BvH or flattened galaxy's stored om / beta / r_a are then
# unused values.
_NOT_STORED = ("light_alpha", "equilibrium_df", "bvh", "bvh_beta0", "bvh_beta_inf", "bvh_r_a", "bvh_delta", "flattened",
               "flat_q", "flat_beta_z", "tidal", "tidal_rt")
PARAM_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Galaxy) if f.name not in _NOT_STORED)
"""Names of the entries of :meth:`Galaxy.params_vector`."""


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return float(lo + (hi - lo) * rng.random())


def _log_uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return float(np.exp(np.log(lo) + (np.log(hi) - np.log(lo)) * rng.random()))


def draw_galaxy(suite: SuiteSpec, feedback: FeedbackSpec, seed: int | np.random.SeedSequence) -> Galaxy:
    """Draw one galaxy of a suite × feedback cell from ``seed`` alone.

    Every random variable is drawn in a fixed order whether or not it is used (e.g. both a constant beta and an
    Osipkov–Merritt r_a), so the same seed gives the same halo, stars and gas under any feedback model: the cusp
    and core versions of a galaxy differ only in the core (n) and the gas non-equilibrium amplitudes. Options added
    later (Baes & van Hese anisotropy, equilibrium-DF velocities) draw from their own children of the seed, so a
    suite that does not use them gives the same galaxies as before they existed.

    Parameters
    ----------
    suite, feedback : SuiteSpec, FeedbackSpec
        Recipes (see :func:`galmass.mocks.suites.load_suite` / ``load_feedback``).
    seed : int or numpy.random.SeedSequence
        The only source of randomness.
    """
    if not isinstance(suite, SuiteSpec) or not isinstance(feedback, FeedbackSpec):
        raise ValueError(f"draw_galaxy needs a SuiteSpec and a FeedbackSpec, got {type(suite).__name__}, "
                         f"{type(feedback).__name__}. HINT: use load_suite(name) / load_feedback(name)")
    rng = np.random.default_rng(seed)
    log_m200 = _uniform(rng, suite.log10_m200_range)
    m200 = 10.0**log_m200
    r200 = float(r200_from_m200(m200))
    c200 = float(c200_dutton_maccio(m200)) * 10.0 ** (suite.c200_offset_dex + suite.c200_scatter_dex * rng.normal())
    mstar = float(smhm_moster(m200, suite.smhm_n, suite.smhm_log_m1, suite.smhm_beta, suite.smhm_gamma))
    mstar *= 10.0 ** (suite.smhm_scatter_dex * rng.normal())
    a = float(size_kravtsov(r200, suite.size_k)) * 10.0 ** (suite.size_scatter_dex * rng.normal())
    om = bool(rng.random() < suite.om_fraction)
    r_a = a * _log_uniform(rng, suite.om_ra_over_rh_range)
    beta = _uniform(rng, suite.beta_range)
    n = _uniform(rng, feedback.n_range)  # 'nfw' requires n_range = [0, 0], so n = 0 (and one draw used)
    m_gas = mstar * _log_uniform(rng, suite.gas_to_stellar_range)
    r_d = a * _uniform(rng, suite.gas_rd_over_rh_range)
    sigma_gas = _uniform(rng, suite.gas_sigma_kms_range)
    link = 1.0 + feedback.gas_core_link * (n - 0.5)  # 1 unless a recipe asks for a (weak) link
    v_rad = link * _uniform(rng, feedback.radial_flow_range) * (1.0 if rng.random() < 0.5 else -1.0)
    m2_frac, m2_phase = link * _uniform(rng, feedback.m2_range), 2.0 * np.pi * rng.random()
    m1_frac, m1_phase = link * _uniform(rng, feedback.lopsided_range), 2.0 * np.pi * rng.random()
    normal = _random_unit_vector(rng)
    r_c = _uniform(rng, feedback.eta_range) * a
    halo_shape = (_uniform(rng, feedback.transition_range), feedback.outer_slope,
                  _uniform(rng, feedback.inner_slope_range))
    light_beta, light_gamma = _uniform(rng, suite.light_outer_slope_range), _uniform(rng, suite.light_inner_slope_range)
    galaxy = Galaxy(
        m200=m200, c200=c200, r200=r200, mstar=mstar, a=a, om=om, beta=beta, r_a=r_a, n=n, r_c=r_c,
        m_gas=m_gas, r_d=r_d, sigma_gas=sigma_gas, v_rad_frac=v_rad, m2_frac=m2_frac, m2_phase=float(m2_phase),
        m1_frac=m1_frac, m1_phase=float(m1_phase),
        disc_nx=float(normal[0]), disc_ny=float(normal[1]), disc_nz=float(normal[2]),
        dc14=feedback.profile == "dc14", zhao=feedback.profile == "zhao", halo_alpha=halo_shape[0],
        halo_beta=halo_shape[1], halo_gamma=halo_shape[2], light_beta=light_beta, light_gamma=light_gamma,
    )
    # The light profile's transition and the tidal taper first (they change which DFs exist); then BvH, then
    # flattening, then the DF: each later option applies only to galaxies the earlier ones left alone.
    galaxy = _flag_bvh(_flag_tidal(_light_transition(galaxy, suite, seed), suite, seed), suite, seed)
    return _flag_equilibrium_df(_flag_flattened(galaxy, suite, seed), suite, seed)


def _random_unit_vector(rng: np.random.Generator, n: int | None = None) -> NDArray[np.float64]:
    """Isotropic unit vector(s): cos(theta) uniform in [-1, 1], phi uniform in [0, 2 pi)."""
    size = 1 if n is None else n
    cos_t = 2.0 * rng.random(size) - 1.0
    phi = 2.0 * np.pi * rng.random(size)
    sin_t = np.sqrt(1.0 - cos_t**2)
    out = np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=-1)
    return out[0] if n is None else out


def _spherical_density(galaxy: Galaxy) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
    """The stars' spherical number-density profile (closed-form Plummer for the default shape)."""
    if galaxy.plummer:
        return lambda r: plummer_density(r, galaxy.a)
    return galaxy.tracer.density


@functools.lru_cache(maxsize=32)
def _taper_table(galaxy: Galaxy) -> NDArray[np.float64]:
    """A truncated halo's ln M_t table (cached: ~35 mass calls per observed galaxy would each rebuild it)."""
    return exp_taper_table(galaxy._isolated_dm_mass, galaxy.tidal_rt)


@functools.lru_cache(maxsize=32)
def jeans_solution(galaxy: Galaxy) -> JeansSolution:
    """sigma_r^2(r) of the spherical stars in the galaxy's total mass (cached: Galaxy is frozen and hashable)."""
    return solve_jeans(galaxy.mass, _spherical_density(galaxy), scale=galaxy.a, **galaxy.anisotropy_kwargs())


@functools.lru_cache(maxsize=8)
def axisymmetric_solution(galaxy: Galaxy) -> AxisymmetricJeans:
    """sigma_z^2(R, z), <v_phi^2>(R, z) of a flattened galaxy's stars in its (spherical) total mass (cached)."""
    if not galaxy.flattened:
        raise ValueError("axisymmetric_solution needs a flattened galaxy (Galaxy.flattened)")
    return solve_axisymmetric_jeans(galaxy.mass, _spherical_density(galaxy), scale=galaxy.a, q=galaxy.flat_q,
                                    beta_z=galaxy.flat_beta_z)


_DF_SPAWN_KEY = 0x6466
"""Spawn key ('df') of the seed child that decides ``Galaxy.equilibrium_df``: far above the children callers
spawn themselves (0, 1, ...), so it is independent of every other stream."""

_BVH_SPAWN_KEY = 0x627668
"""Spawn key ('bvh') of the seed child that decides ``Galaxy.bvh`` and draws its four parameters."""

_FLAT_SPAWN_KEY = 0x666C6174
"""Spawn key ('flat') of the seed child that decides ``Galaxy.flattened`` and draws q and beta_z."""


_TIDAL_SPAWN_KEY = 0x7469646C
"""Spawn key ('tidl') of the seed child that decides ``Galaxy.tidal`` and draws r_t."""

_LIGHT_SPAWN_KEY = 0x6C696768
"""Spawn key ('ligh') of the seed child that draws ``Galaxy.light_alpha``."""


def _child_rng(seed: int | np.random.SeedSequence, key: int) -> np.random.Generator:
    """Generator on the child of ``seed`` with spawn key ``key``, built without advancing the caller's sequence."""
    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    child = np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, key), pool_size=seq.pool_size)
    return np.random.default_rng(child)


def _flag_bvh(galaxy: Galaxy, suite: SuiteSpec, seed: int | np.random.SeedSequence) -> Galaxy:
    """``galaxy``, with Baes & van Hese anisotropy for a fraction ``suite.bvh_fraction`` of galaxies.

    All five uniforms (choice, beta_0, beta_inf, r_a / R_h, delta) come in a fixed order from an independent child
    of the galaxy seed, never from draw_galaxy's main stream: with bvh_fraction = 0 nothing is drawn and the galaxy
    is unchanged, and with any fraction the galaxies not chosen are exactly those drawn with 0.
    """
    if suite.bvh_fraction <= 0.0:
        return galaxy
    rng = _child_rng(seed, _BVH_SPAWN_KEY)
    chosen = bool(rng.random() < suite.bvh_fraction)
    beta0, beta_inf = _uniform(rng, suite.bvh_beta0_range), _uniform(rng, suite.bvh_beta_inf_range)
    r_a = galaxy.a * _log_uniform(rng, suite.bvh_ra_over_rh_range)
    delta = _uniform(rng, suite.bvh_delta_range)
    if not chosen:
        return galaxy
    return dataclasses.replace(galaxy, bvh=True, bvh_beta0=beta0, bvh_beta_inf=beta_inf, bvh_r_a=r_a,
                               bvh_delta=delta)


def _light_transition(galaxy: Galaxy, suite: SuiteSpec, seed: int | np.random.SeedSequence) -> Galaxy:
    """``galaxy`` with ``light_alpha`` drawn uniformly in ``suite.light_transition_range`` from its own child of the
    seed; a range of [2, 2] (the default) draws nothing, so such suites keep every galaxy and star bit-identical."""
    lo, hi = suite.light_transition_range
    if lo == hi == 2.0:
        return galaxy
    return dataclasses.replace(galaxy, light_alpha=_uniform(_child_rng(seed, _LIGHT_SPAWN_KEY), (lo, hi)))


def _flag_tidal(galaxy: Galaxy, suite: SuiteSpec, seed: int | np.random.SeedSequence) -> Galaxy:
    """``galaxy``, with a tidally truncated halo for a fraction ``suite.tidal_fraction`` of galaxies.

    The two uniforms (choice, r_t / R_h) come in a fixed order from an independent child of the galaxy seed, as in
    :func:`_flag_bvh`: with tidal_fraction = 0 nothing is drawn and the galaxy is unchanged.
    """
    if suite.tidal_fraction <= 0.0:
        return galaxy
    rng = _child_rng(seed, _TIDAL_SPAWN_KEY)
    chosen = bool(rng.random() < suite.tidal_fraction)
    r_t = galaxy.a * _log_uniform(rng, suite.tidal_rt_over_rh_range)
    if not chosen:
        return galaxy
    return dataclasses.replace(galaxy, tidal=True, tidal_rt=r_t)


def _flag_flattened(galaxy: Galaxy, suite: SuiteSpec, seed: int | np.random.SeedSequence) -> Galaxy:
    """``galaxy``, flattened (oblate stars, axisymmetric Jeans) for a fraction ``suite.flattened_fraction``.

    The three uniforms (choice, q, beta_z) come in a fixed order from an independent child of the galaxy seed, as
    in :func:`_flag_bvh`: with flattened_fraction = 0 nothing is drawn. Baes & van Hese galaxies stay spherical.
    """
    if suite.flattened_fraction <= 0.0:
        return galaxy
    rng = _child_rng(seed, _FLAT_SPAWN_KEY)
    chosen = bool(rng.random() < suite.flattened_fraction)
    q, beta_z = _uniform(rng, suite.flattening_q_range), _uniform(rng, suite.flattening_beta_z_range)
    if not chosen or galaxy.bvh:
        return galaxy
    return dataclasses.replace(galaxy, flattened=True, flat_q=q, flat_beta_z=beta_z)


def _flag_equilibrium_df(galaxy: Galaxy, suite: SuiteSpec, seed: int | np.random.SeedSequence) -> Galaxy:
    """``galaxy``, with ``equilibrium_df`` set for a fraction ``suite.df_fraction`` of those that have such a DF.

    The deciding uniform comes from an independent child of the galaxy seed (built with a fixed spawn key, so the
    caller's SeedSequence is not advanced), never from draw_galaxy's main stream, which draws every variable in a
    fixed order: with df_fraction = 0 nothing is drawn and the galaxy is unchanged. Eligible are Osipkov–Merritt
    and beta = 0 galaxies (with ``suite.df_constant_beta`` also constant-beta ones, with ``suite.df_isotropise``
    constant-beta ones made isotropic) whose DF is
    non-negative (:func:`_stellar_df` raises otherwise: a cored light profile in
    a central cusp - NFW, or the gas disc, whose spherical M(<r) ∝ r^2 acts as one - has f(E) < 0 for the most
    bound energies) and that are neither Baes & van Hese nor flattened; the others keep Jeans-Gaussian velocities.
    """
    if suite.df_fraction <= 0.0:
        return galaxy
    chosen = bool(_child_rng(seed, _DF_SPAWN_KEY).random() < suite.df_fraction)
    if not chosen or galaxy.bvh or galaxy.flattened:
        return galaxy
    candidate = galaxy
    if not (galaxy.om or galaxy.beta == 0.0 or suite.df_constant_beta):
        if not suite.df_isotropise:
            return galaxy
        candidate = dataclasses.replace(galaxy, beta=0.0)  # SuiteSpec.df_isotropise: the isotropic DF instead
    try:
        _stellar_df(candidate)  # cached for sample_stars
    except ValueError:
        return galaxy
    return dataclasses.replace(candidate, equilibrium_df=True)


@functools.lru_cache(maxsize=4)
def _stellar_df(galaxy: Galaxy) -> EddingtonDF:
    """Equilibrium DF of the galaxy's stars in its total mass: Osipkov–Merritt f(Q) when ``om``, else f(E, L) =
    L^(-2 beta) f_E(E) (isotropic f(E) for beta = 0).

    Cached (0.1-0.25 s to build, ~4 MB). Raises ValueError for Baes & van Hese anisotropy, a constant beta outside
    (-1/2, 1/2), or a DF that is negative somewhere (:func:`galmass.physics.df.eddington_df`).
    """
    if galaxy.bvh or not (galaxy.om or -0.5 < galaxy.beta < 0.5):
        what = "Baes & van Hese anisotropy" if galaxy.bvh else f"constant beta = {galaxy.beta}"
        raise ValueError(f"no equilibrium DF for {what}: Osipkov–Merritt or constant -1/2 < beta < 1/2 only")
    if galaxy.om:
        return eddington_df(galaxy.mass, _spherical_density(galaxy), galaxy.a, r_a=galaxy.r_a)
    return eddington_df(galaxy.mass, _spherical_density(galaxy), galaxy.a, beta=galaxy.beta)


def sample_stars(
    galaxy: Galaxy, n: int, rng: np.random.Generator
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Sample n stars: Plummer or two-power positions and Gaussian velocities with the spherical-Jeans dispersions.

    sigma_r(r) solves the Jeans equation in the total mass; sigma_theta = sigma_phi = sigma_r sqrt(1 - beta(r)),
    with beta(r) the galaxy's constant, Osipkov–Merritt or Baes & van Hese anisotropy.
    With ``galaxy.equilibrium_df`` the velocities come instead from the equilibrium DF at the same positions
    (:func:`_stellar_df`), so the LOS velocity distributions are not Gaussian. With ``galaxy.flattened`` the
    positions are squashed along z by ``flat_q`` and the velocities follow the axisymmetric Jeans equations
    (:func:`axisymmetric_solution`).

    Returns
    -------
    pos : ndarray [n, 3]
        Positions [kpc] (galaxy frame, centred).
    vel : ndarray [n, 3]
        Velocities [km/s] (mean zero).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    u = rng.random(n)
    r = plummer_radius_from_fraction(u, galaxy.a) if galaxy.plummer else galaxy.tracer.sample_radii(u)
    rhat = _random_unit_vector(rng, n)
    if galaxy.flattened:
        pos = r[:, None] * rhat * np.array([1.0, 1.0, galaxy.flat_q])
        return pos, sample_axisymmetric_velocities(axisymmetric_solution(galaxy), pos, rng)
    if galaxy.equilibrium_df:  # same positions, velocities from the equilibrium DF: non-Gaussian LOSVDs
        df = _stellar_df(dataclasses.replace(galaxy, equilibrium_df=False))
        return r[:, None] * rhat, df.velocities(r, rhat, rng)
    sol = jeans_solution(galaxy)
    sigma_r = sol.sigma_r(r)
    # Clip: a Baes & van Hese beta_inf = 1 can round to 1 + 1 ulp far out (a no-op for the other models, beta < 1).
    sigma_t = sigma_r * np.sqrt(np.clip(1.0 - sol.beta(r), 0.0, None))
    g = rng.standard_normal((n, 3))
    # Split an isotropic unit Gaussian into its radial part and the two tangential components, then scale each.
    g_r = np.einsum("ij,ij->i", g, rhat)
    radial = g_r[:, None] * rhat
    vel = sigma_r[:, None] * radial + sigma_t[:, None] * (g - radial)
    return r[:, None] * rhat, vel


def _disc_basis(normal: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Two unit vectors spanning the plane perpendicular to ``normal`` (right-handed with it)."""
    ref = np.array([0.0, 0.0, 1.0]) if abs(normal[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(ref, normal)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(normal, e1)
    return e1, e2


def sample_gas(
    galaxy: Galaxy, n: int, rng: np.random.Generator
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Sample n equal-mass gas cells of the rotating, razor-thin exponential disc.

    In the disc plane (cylindrical R, phi):
      v_c^2 = G M_total(<R) / R (spherical approximation for the disc's own contribution),
      v_phi = sqrt(max(v_c^2 - sigma^2 R / R_d, 0)) (asymmetric drift of an exponential disc with constant sigma),
      v_R   = v_rad_frac v_c                          (radial in/outflow),
      plus v_c [A2 cos 2(phi - phi2) + A1 cos(phi - phi1)] on v_phi and the matching sines on v_R
      (m = 2 oval distortion and m = 1 lopsidedness), and isotropic turbulence sigma on all three components.

    Returns
    -------
    pos : ndarray [n, 3]
        Positions [kpc] in the galaxy frame (the disc plane is perpendicular to ``galaxy.disc_normal``).
    vel : ndarray [n, 3]
        Velocities [km/s].
    mass : ndarray [n]
        Cell masses [Msun] (each M_gas / n).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    R = rng.gamma(2.0, galaxy.r_d, n)  # Sigma ~ exp(-R/R_d) => p(R) ~ R exp(-R/R_d)
    phi = 2.0 * np.pi * rng.random(n)
    turb = galaxy.sigma_gas * rng.standard_normal((n, 3))
    R_safe = np.maximum(R, 1e-12 * galaxy.r_d)
    v_c = np.sqrt(G * galaxy.mass(R_safe) / R_safe)
    v_phi = np.sqrt(np.clip(v_c**2 - galaxy.sigma_gas**2 * R / galaxy.r_d, 0.0, None))
    d2, d1 = 2.0 * (phi - galaxy.m2_phase), phi - galaxy.m1_phase
    v_phi = v_phi + v_c * (galaxy.m2_frac * np.cos(d2) + galaxy.m1_frac * np.cos(d1))
    v_R = v_c * (galaxy.v_rad_frac + galaxy.m2_frac * np.sin(d2) + galaxy.m1_frac * np.sin(d1))
    cos_p, sin_p = np.cos(phi), np.sin(phi)
    e1, e2 = _disc_basis(galaxy.disc_normal)
    normal = galaxy.disc_normal
    pos = (R * cos_p)[:, None] * e1 + (R * sin_p)[:, None] * e2
    v1 = v_R * cos_p - v_phi * sin_p + turb[:, 0]
    v2 = v_R * sin_p + v_phi * cos_p + turb[:, 1]
    vel = v1[:, None] * e1 + v2[:, None] * e2 + turb[:, 2:3] * normal
    mass = np.full(n, galaxy.m_gas / n)
    return pos, vel, mass
