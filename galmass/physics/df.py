"""Stellar kinematics from an equilibrium distribution function (galpy), the independent check of the Jeans path.

galmass's default stellar velocities are Gaussians with the spherical-Jeans dispersions
(:func:`galmass.mocks.galaxy.sample_stars`): fast, but only the second moments are right. Here the same tracer
(a Plummer sphere of scale a) in the same total mass M(<r) is sampled from an exact equilibrium distribution
function with galpy (Bovy 2015, ApJS 216, 29):

* isotropic:              ``galpy.df.eddingtondf``      f(E)           (Eddington 1916),
* Osipkov–Merritt radial: ``galpy.df.osipkovmerrittdf`` f(Q = E + L^2 / 2 r_a^2),
* constant beta:          ``galpy.df.constantbetadf``   f = L^(-2 beta) f_1(E)  (needs the ``jax`` package).

galpy's constantbetadf builds f_1(E) with jax-differentiated integrals; on this project's 2-core test machine its
first ``sample`` call took 140 s (beta = -0.4) to 570 s (beta = -0.5) before drawing a single star, too slow for
the test suite. For the tangential case beta = -1/2 the inversion is closed-form (Cuddeford 1991; An & Evans 2006):
with rho~(Psi) = r^(2 beta) nu = nu / r,

    nu / r = 2 pi^2 int_0^Psi f_1(E) (Psi - E) dE   =>   f_1(E) = (1 / 2 pi^2) d^2 rho~ / dPsi^2 |_(Psi = E),

and :func:`sample_tangential_df` samples it directly (``engine="auto"`` uses it for beta = -0.5): at radius r the
energy has density f_1(E) (Psi - E) on [0, Psi(r)] and the angle eta between v and r-hat has density sin^2 eta.

The potential is built from the tabulated M(<r) with ``interpSphericalPotential`` (radial force -G M(<r) / r^2 on
a log grid, potential zero-point from integrating that force outwards), the tracer density is galpy's
``PlummerPotential``. galpy works in "natural units": lengths in units of a, velocities in units of
V = sqrt(G M(<a) / a); this module converts back to kpc and km/s.

galpy draws its random numbers from NumPy's global generator; :func:`sample_df` seeds that generator from the
caller's ``numpy.random.Generator`` and restores its previous state afterwards, so results depend on the seed alone.

Non-Gaussian mocks (``SuiteSpec.df_fraction``) need the isotropic and Osipkov–Merritt DFs of ANY tracer
(two-power light profiles, not only Plummer) and fast: galpy's eddingtondf took 0.8-2.2 s per galaxy for 20,000
Plummer stars on the 2-core machine. :func:`eddington_df` inverts Eddington's / Osipkov's formula in numpy
(product integration of the Abel kernel on a 3000-point log grid, ~0.1-0.25 s) and samples velocities at given
positions by direct inversion of tabulated speed CDFs (~40 ms for 20,000 stars); ``sample_df(engine="eddington")``
uses it for the Plummer tracer. Checked against the 2nd- and 4th-order Jeans equations in tests/test_losvd.py.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import dataclass
from math import gamma
from typing import Callable, Iterator

import numpy as np
from numpy.typing import ArrayLike, NDArray

from galmass.physics.constants import G

__all__ = ["galpy_available", "sample_df", "sample_tangential_df", "numpy_global_seed", "DF_RMAX_SCALES", "EddingtonDF",
           "eddington_df"]

Profile = Callable[[NDArray[np.float64]], NDArray[np.float64]]

DF_RMAX_SCALES: float = 1e3
"""The DF is truncated at r = 1000 a (E = Phi(1000 a)); a Plummer sphere has a fraction 1.5e-6 of its stars
beyond (1 - (1 + 1e-6)^-1.5), far below any test's noise."""


def galpy_available(anisotropy: str = "isotropic") -> bool:
    """True when galpy (and, for 'constant_beta', jax) can be imported."""
    try:
        import galpy.df  # noqa: F401
    except ImportError:
        return False
    if anisotropy == "constant_beta":
        try:
            import jax  # noqa: F401
        except ImportError:
            return False
    return True


@contextlib.contextmanager
def numpy_global_seed(rng: np.random.Generator) -> Iterator[None]:
    """galpy draws from NumPy's global generator: seed it from ``rng``, restore it afterwards."""
    state = np.random.get_state()
    np.random.seed(int(rng.integers(0, 2**32 - 1)))
    try:
        yield
    finally:
        np.random.set_state(state)


def _potential(mass: Profile, a: float, v_unit: float, r_max: float, n_grid: int):
    """galpy interpSphericalPotential (natural units) with radial force -G M(<r)/r^2, zero at infinity."""
    from galpy.potential import interpSphericalPotential

    r_grid = np.geomspace(1e-4, r_max, n_grid)  # [a]
    r_kpc = r_grid * a
    m = np.asarray(mass(r_kpc), dtype=np.float64)
    force = -G * m / r_kpc**2 * a / v_unit**2  # natural units: V^2 / a
    # Phi(r_0) = Phi(r_max) - int_{r_0}^{r_max} |F| dr, with Phi(r_max) = -G M(r_max)/r_max (mass beyond ignored:
    # only potential differences inside r_max enter a DF truncated there).
    lnr = np.log(r_grid)
    integrand = -force * r_grid
    inner = np.sum(0.5 * (integrand[1:] + integrand[:-1]) * np.diff(lnr))
    phi0 = -G * m[-1] / r_kpc[-1] / v_unit**2 - inner
    f_interp = lambda r: float(np.interp(np.log(r), lnr, force))  # noqa: E731  (galpy calls it per radius)
    return interpSphericalPotential(rforce=f_interp, rgrid=r_grid, Phi0=phi0)


def sample_df(
    mass: Profile,
    a: float,
    n: int,
    rng: np.random.Generator,
    *,
    beta: float = 0.0,
    r_a: float | None = None,
    n_grid: int = 2001,
    engine: str = "auto",
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Sample n Plummer stars from an equilibrium DF in the total mass profile ``mass``.

    Parameters
    ----------
    mass : callable
        Total M(<r) [Msun] of r [kpc] (vectorised).
    a : float
        Plummer scale radius [kpc] of the tracer.
    n : int
        Number of stars, >= 1.
    rng : numpy.random.Generator
        The only source of randomness.
    beta : float
        Constant anisotropy (used when ``r_a`` is None): 0 selects Eddington's isotropic DF, other values galpy's
        constantbetadf (needs jax). beta > 0 with a cored tracer has no positive DF (An & Evans 2006).
    r_a : float or None
        Osipkov–Merritt anisotropy radius [kpc]; r_a must not be too small (r_a >~ 0.75 a for a Plummer tracer in
        a Plummer potential; somewhat more in a dark halo) or the DF turns negative.
    n_grid : int
        Points of the potential's radial grid (1e-4 .. 1e3 a, log-spaced).
    engine : 'auto', 'galpy' or 'eddington'
        'auto' uses :func:`sample_tangential_df` for beta = -0.5 (closed-form inversion, fast) and galpy otherwise;
        'galpy' always uses galpy; 'eddington' the numpy inversion :func:`eddington_df` (isotropic or
        Osipkov–Merritt only).

    Returns
    -------
    pos : ndarray [n, 3]
        Positions [kpc].
    vel : ndarray [n, 3]
        Velocities [km/s].

    Raises
    ------
    ValueError
        Bad input (the message gives the value and a hint).
    ImportError
        galpy (or jax for constant beta != 0) is not installed.
    """
    if not (np.isfinite(a) and a > 0):
        raise ValueError(f"a must be > 0 [kpc], got {a}. HINT: pass the Plummer scale radius")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if r_a is not None and not (np.isfinite(r_a) and r_a > 0):
        raise ValueError(f"r_a must be > 0 [kpc], got {r_a}. HINT: pass r_a=None for constant beta")
    if r_a is not None and beta != 0.0:
        raise ValueError(f"give either constant beta ({beta}) or r_a ({r_a}), not both")
    if not beta < 1.0:
        raise ValueError(f"constant beta must be < 1, got {beta}")
    if engine not in ("auto", "galpy", "eddington"):
        raise ValueError(f"engine must be 'auto', 'galpy' or 'eddington', got {engine!r}")
    if engine == "eddington":
        return _sample_plummer_eddington(mass, a, n, rng, beta=beta, r_a=r_a)
    if engine == "auto" and r_a is None and beta == -0.5:
        return sample_tangential_df(mass, a, n, rng)
    from galpy.df import eddingtondf, osipkovmerrittdf
    from galpy.potential import PlummerPotential

    v_unit = float(np.sqrt(G * float(mass(np.asarray(a))) / a))
    with warnings.catch_warnings():
        # galpy warns about rmin grids and tiny negative round-off of f(E) at the truncation energy.
        warnings.simplefilter("ignore")
        pot = _potential(mass, a, v_unit, DF_RMAX_SCALES, n_grid)
        dens = PlummerPotential(amp=1.0, b=1.0)
        if r_a is not None:
            df = osipkovmerrittdf(pot=pot, denspot=dens, ra=r_a / a, rmax=DF_RMAX_SCALES)
        elif beta == 0.0:
            df = eddingtondf(pot=pot, denspot=dens, rmax=DF_RMAX_SCALES)
        else:
            from galpy.df import constantbetadf

            df = constantbetadf(pot=pot, denspot=dens, beta=beta, rmax=DF_RMAX_SCALES)
        with numpy_global_seed(rng):
            R, vR, vT, z, vz, phi = df.sample(n=n, return_orbit=False)
    R, vR, vT, z, vz, phi = (np.asarray(q, dtype=np.float64) for q in (R, vR, vT, z, vz, phi))
    c, s = np.cos(phi), np.sin(phi)
    pos = np.stack([R * c, R * s, z], axis=-1) * a
    vel = np.stack([vR * c - vT * s, vR * s + vT * c, vz], axis=-1) * v_unit
    return pos, vel


def sample_tangential_df(
    mass: Profile, a: float, n: int, rng: np.random.Generator, *, n_r: int = 4000, n_e: int = 2048
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Sample n Plummer stars from the exact constant-beta = -1/2 DF f = L f_1(E) in the mass profile ``mass``.

    Parameters
    ----------
    mass : callable
        Total M(<r) [Msun] of r [kpc].
    a : float
        Plummer scale radius [kpc].
    n : int
        Number of stars.
    rng : numpy.random.Generator
        The only source of randomness.
    n_r, n_e : int
        Radial grid (1e-5 .. 1e5 a, log) and energy-fraction grid of the tabulated inverse CDFs.

    Returns
    -------
    pos, vel : ndarray [n, 3]
        Positions [kpc] and velocities [km/s].

    Raises
    ------
    ValueError
        If f_1 turns negative (the tracer cannot be in equilibrium with that anisotropy in that potential).
    """
    from galmass.physics.profiles import plummer_density, plummer_radius_from_fraction

    if not (np.isfinite(a) and a > 0) or n < 1:
        raise ValueError(f"need a > 0 [kpc] and n >= 1, got a={a}, n={n}")
    lnr = np.linspace(np.log(1e-5 * a), np.log(1e5 * a), n_r)
    r = np.exp(lnr)
    m = np.asarray(mass(r), dtype=np.float64)
    g = G * m / r**2  # |dPsi/dr|
    # Psi(r) = int_r^inf G M / r'^2 dr' (trapezoid in ln r, plus the point-mass tail G M(r_max) / r_max).
    seg = 0.5 * (g[1:] * r[1:] + g[:-1] * r[:-1]) * np.diff(lnr)
    psi = np.concatenate([np.cumsum(seg[::-1])[::-1], [0.0]]) + G * m[-1] / r[-1]
    rho_t = plummer_density(r, a) / r
    # d rho~/dPsi = (d rho~/dr) / (dPsi/dr) = -(d rho~/d ln r) / (g r); then once more.
    d1 = -np.gradient(rho_t, lnr) / (g * r)
    d2 = -np.gradient(d1, lnr) / (g * r)
    f1 = d2 / (2.0 * np.pi**2)
    inner = slice(5, -5)  # one-sided differences at the grid ends are not used
    if np.any(f1[inner] < -1e-8 * np.max(np.abs(f1[inner]))):
        raise ValueError("the beta = -1/2 DF is negative somewhere for this potential and Plummer tracer. HINT: "
                         "use the Jeans path, or a less tangential anisotropy")
    psi_i, f1_i = psi[inner][::-1], np.clip(f1[inner][::-1], 0.0, None)  # increasing Psi (decreasing r)

    def f1_of(e: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.interp(e, psi_i, f1_i)

    # Inverse CDF of q = E / Psi(r) with density f_1(q Psi)(1 - q), tabulated on a grid of radii.
    r_tab = np.exp(np.linspace(np.log(1e-3 * a), np.log(1e3 * a), 241))
    psi_tab = np.interp(np.log(r_tab), lnr, psi)
    q = np.linspace(0.0, 1.0, n_e)
    dens = f1_of(q[None, :] * psi_tab[:, None]) * (1.0 - q[None, :])
    cdf = np.concatenate([np.zeros((len(r_tab), 1)), np.cumsum(0.5 * (dens[:, 1:] + dens[:, :-1]), axis=1)], axis=1)
    cdf /= cdf[:, -1:]
    u_grid = np.linspace(0.0, 1.0, 2049)
    inv = np.stack([np.interp(u_grid, c, q) for c in cdf])  # [n_r_tab, n_u]

    radius = plummer_radius_from_fraction(rng.random(n), a)
    u = rng.random(n)
    x = np.clip((np.log(radius) - np.log(r_tab[0])) / (np.log(r_tab[1]) - np.log(r_tab[0])), 0, len(r_tab) - 1.001)
    i0 = x.astype(np.int64)
    w = x - i0
    ju = u * (len(u_grid) - 1)
    j0 = np.minimum(ju.astype(np.int64), len(u_grid) - 2)
    wu = ju - j0

    def at(i: NDArray[np.int64]) -> NDArray[np.float64]:
        return (1 - wu) * inv[i, j0] + wu * inv[i, j0 + 1]

    q_s = (1 - w) * at(i0) + w * at(i0 + 1)
    psi_r = np.interp(np.log(radius), lnr, psi)
    speed = np.sqrt(2.0 * psi_r * (1.0 - q_s))
    # eta from sin^2(eta) on [0, pi] by rejection (acceptance 1/2).
    eta = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        e = np.pi * rng.random(todo.size)
        ok = rng.random(todo.size) < np.sin(e) ** 2
        eta[todo[ok]] = e[ok]
        todo = todo[~ok]
    psi_ang = 2.0 * np.pi * rng.random(n)
    cos_t = 2.0 * rng.random(n) - 1.0
    phi = 2.0 * np.pi * rng.random(n)
    sin_t = np.sqrt(1.0 - cos_t**2)
    rhat = np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=-1)
    that = np.stack([cos_t * np.cos(phi), cos_t * np.sin(phi), -sin_t], axis=-1)
    phat = np.stack([-np.sin(phi), np.cos(phi), np.zeros(n)], axis=-1)
    v_r = speed * np.cos(eta)
    v_t = speed * np.sin(eta)
    vel = v_r[:, None] * rhat + (v_t * np.cos(psi_ang))[:, None] * that + (v_t * np.sin(psi_ang))[:, None] * phat
    return radius[:, None] * rhat, vel


# --- Eddington / Osipkov–Merritt inversion in numpy, for any tracer density ---------------------------------------


@dataclass(frozen=True, eq=False)
class EddingtonDF:
    """Tabulated equilibrium DF f(Q) of a spherical tracer (isotropic Eddington or Osipkov–Merritt) and its sampler.

    Build it with :func:`eddington_df`. Q = Psi - v_r^2/2 - (1 + r^2/r_a^2) v_t^2/2 (Q = E without r_a) with
    Psi the relative potential [km^2/s^2]; f is unnormalised.
    """

    lnr: NDArray[np.float64]
    """ln r [ln kpc] of the potential grid (increasing)."""
    psi: NDArray[np.float64]
    """Relative potential Psi = -Phi on that grid [km^2/s^2] (decreasing)."""
    q: NDArray[np.float64]
    """Q grid [km^2/s^2] (increasing) where f is tabulated."""
    f: NDArray[np.float64]
    """f(Q) on ``q`` (>= 0; negative round-off clipped)."""
    r_a: float | None
    """Osipkov–Merritt anisotropy radius [kpc], None for isotropic."""
    lnr_tab: NDArray[np.float64]
    """ln r of the rows of ``cdf`` (uniform)."""
    x: NDArray[np.float64]
    """Grid of x = w^2 / (2 Psi(r)) in [0, 1], w the stretched speed (see :meth:`velocities`)."""
    cdf: NDArray[np.float64]
    """[n_rows, n_x] cumulative distribution of x at each row radius (0 .. 1)."""
    beta: float = 0.0
    """Constant anisotropy beta of a Cuddeford (1991) DF f(E, L) = L^(-2 beta) f_E(E) (0: isotropic or
    Osipkov–Merritt; then ``f`` is f(Q), else f_E)."""

    def psi_at(self, r: ArrayLike) -> NDArray[np.float64]:
        """Psi(r) [km^2/s^2] at radii r [kpc] (held at the grid ends)."""
        return np.interp(np.log(np.asarray(r, dtype=np.float64)), self.lnr, self.psi)

    def _quantile(self, i: NDArray[np.int64], u: NDArray[np.float64]) -> NDArray[np.float64]:
        """x with CDF u in row i (linear interpolation within the x grid). Rows are searched in one flat array:
        row k's CDF is offset by 2 k so the concatenation stays sorted."""
        n_x = len(self.x)
        flat = (self.cdf + 2.0 * np.arange(len(self.cdf))[:, None]).ravel()
        k = np.clip(np.searchsorted(flat, u + 2.0 * i, side="right") - 1 - i * n_x, 0, n_x - 2)
        c0, c1 = self.cdf[i, k], self.cdf[i, k + 1]
        t = np.where(c1 > c0, (u - c0) / np.where(c1 > c0, c1 - c0, 1.0), 0.0)
        return self.x[k] + np.clip(t, 0.0, 1.0) * (self.x[k + 1] - self.x[k])

    def velocities(self, r: NDArray[np.float64], rhat: NDArray[np.float64],
                   rng: np.random.Generator) -> NDArray[np.float64]:
        """Velocities [km/s] of stars at radii r [kpc] with unit position vectors rhat [n, 3], drawn from f.

        At fixed r, u = (v_r, sqrt(1 + r^2/r_a^2) v_t) is isotropic with density f(Psi - |u|^2/2) (the Jacobian
        d^3u / d^3v is constant there), so x = w^2 / (2 Psi) is drawn by inverting the tabulated CDFs of the two
        neighbouring rows (exactly, piecewise linear in x) and interpolating the two quantiles linearly in ln r, and
        the direction of u uniformly on the sphere; then v_t = u_t / sqrt(1 + r^2/r_a^2).
        Draws 3 n uniforms from ``rng``.
        """
        n = len(r)
        u = rng.random(n)
        if self.beta != 0.0:
            return self._constant_beta_velocities(r, rhat, u, rng)
        w = self._speeds(r, u)
        cos_t = 2.0 * rng.random(n) - 1.0
        phi = 2.0 * np.pi * rng.random(n)
        sin_t = np.sqrt(1.0 - cos_t**2)
        uvec = w[:, None] * np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=-1)
        u_r = np.einsum("ij,ij->i", uvec, rhat)[:, None] * rhat
        stretch = 1.0 if self.r_a is None else np.sqrt(1.0 + (r / self.r_a) ** 2)[:, None]
        return u_r + (uvec - u_r) / stretch

    def _speeds(self, r: NDArray[np.float64], u: NDArray[np.float64]) -> NDArray[np.float64]:
        """Speeds w [km/s] with CDF u at radii r: x = w^2/(2 Psi) from the two neighbouring rows' quantiles,
        interpolated linearly in ln r."""
        lo, step = self.lnr_tab[0], self.lnr_tab[1] - self.lnr_tab[0]
        xi = np.clip((np.log(r) - lo) / step, 0.0, len(self.lnr_tab) - 1.000001)
        i0 = xi.astype(np.int64)
        wi = xi - i0
        x = (1.0 - wi) * self._quantile(i0, u) + wi * self._quantile(i0 + 1, u)
        return np.sqrt(2.0 * self.psi_at(r) * x)

    def _constant_beta_velocities(self, r: NDArray[np.float64], rhat: NDArray[np.float64], u: NDArray[np.float64],
                                  rng: np.random.Generator) -> NDArray[np.float64]:
        """Velocities for f(E, L) = L^(-2 beta) f_E(E): at fixed r, with v_r = w cos(eta), v_t = w sin(eta), the
        density w^(2 - 2 beta) f_E(Psi - w^2/2) sin^(1 - 2 beta)(eta) separates, so the speed comes from the table
        (whose x-density is x^(1/2 - beta) f_E) and eta from its own CDF; the tangential direction is uniform.
        Draws 3 n uniforms from ``rng`` (``u`` being the first n)."""
        n = len(r)
        w = self._speeds(r, u)
        eta_grid, eta_cdf = _polar_angle_cdf(self.beta)
        eta = np.interp(rng.random(n), eta_cdf, eta_grid)
        psi_t = 2.0 * np.pi * rng.random(n)
        ref = np.where(np.abs(rhat[:, 2:3]) < 0.9, np.array([[0.0, 0.0, 1.0]]), np.array([[1.0, 0.0, 0.0]]))
        e1 = np.cross(rhat, ref)
        e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
        e2 = np.cross(rhat, e1)
        tangential = np.cos(psi_t)[:, None] * e1 + np.sin(psi_t)[:, None] * e2
        return (w * np.cos(eta))[:, None] * rhat + (w * np.sin(eta))[:, None] * tangential


@functools.lru_cache(maxsize=64)
def _polar_angle_cdf(beta: float, n: int = 4097) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(eta grid on [0, pi], CDF of the density sin^(1 - 2 beta)(eta)) for inverse-CDF sampling (trapezoid; the
    density is sin to a positive power for beta < 1/2)."""
    eta = np.linspace(0.0, np.pi, n)
    dens = np.abs(np.sin(eta)) ** (1.0 - 2.0 * beta)  # beta < 1/2: a positive power, 0 at both ends
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(eta))])
    return eta, cdf / cdf[-1]


def _relative_potential(mass: Profile, lnr: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Psi(r) = int_r^inf G M / r'^2 dr' [km^2/s^2] (trapezoid in ln r plus the point-mass tail G M(r_max)/r_max)
    and g r = G M / r [km^2/s^2] (= -dPsi/d ln r) on the grid."""
    r = np.exp(lnr)
    gr = G * np.asarray(mass(r), dtype=np.float64) / r
    seg = 0.5 * (gr[1:] + gr[:-1]) * np.diff(lnr)
    return np.concatenate([np.cumsum(seg[::-1])[::-1], [0.0]]) + gr[-1], gr


def _product_integral(psi: NDArray[np.float64], j: NDArray[np.int64],
                      segment: Callable[[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]],
                                        NDArray[np.float64]]) -> NDArray[np.float64]:
    """Sum over the grid segments with Psi <= Q_j = psi[j] of ``segment(u0, u1, dpsi)``, the exact integral of a
    linear h times the Abel kernel over each segment, in u = Q - Psi (u1 at psi[k], u0 at psi[k + 1], both clipped
    at 0; dpsi = psi[k] - psi[k + 1] > 0). Chunks of 128 Q keep the [n_Q, n_r] temporaries small."""
    out = np.empty(len(j))
    dpsi = psi[:-1] - psi[1:]
    for start in range(0, len(j), 128):
        jj = j[start:start + 128]
        q = psi[jj][:, None]
        u1 = np.clip(q - psi[None, :-1], 0.0, None)
        u0 = np.clip(q - psi[None, 1:], 0.0, None)
        term = segment(u0, u1, dpsi)
        active = np.arange(len(dpsi))[None, :] >= jj[:, None]  # segments with Psi <= Q
        out[start:start + 128] = np.sum(np.where(active, term, 0.0), axis=1)
    return out


def _eddington_integral(psi: NDArray[np.float64], h: NDArray[np.float64], j: NDArray[np.int64]) -> NDArray[np.float64]:
    """f(Q_j) = (1 / sqrt(8) pi^2) int_0^Q h(Psi) dPsi / sqrt(Q - Psi) at Q_j = psi[j] (Binney & Tremaine 2008, eq.
    4.46b with the boundary term d nu/d Psi |_0 = 0), h = d^2 nu_Q / d Psi^2 on the grid.

    Product integration: h is linear in Psi on each grid segment and the 1/sqrt kernel is integrated exactly, so
    the endpoint singularity costs nothing. In u = Q - Psi, a segment [u1, u0] (u0 > u1 >= 0) contributes
    D [2 h(u1) + (2/3) (h(u0) - h(u1)) (u0 + sqrt(u0 u1) - 2 u1) / (u0 - u1)] with D = sqrt(u0) - sqrt(u1),
    written without cancellation. The part of Psi below the grid (r > r_max) is neglected.
    """
    def segment(u0: NDArray[np.float64], u1: NDArray[np.float64], dpsi: NDArray[np.float64]) -> NDArray[np.float64]:
        s0, s1 = np.sqrt(u0), np.sqrt(u1)
        d = dpsi / np.where(s0 + s1 > 0, s0 + s1, 1.0)
        return d * (2.0 * h[:-1] + (2.0 / 3.0) * (h[1:] - h[:-1]) * (u0 + s0 * s1 - 2.0 * u1) / dpsi)

    return _product_integral(psi, j, segment) / (np.sqrt(8.0) * np.pi**2)


def _cuddeford_integral(psi: NDArray[np.float64], h: NDArray[np.float64], j: NDArray[np.int64],
                        beta: float) -> NDArray[np.float64]:
    """f_E(E_j) at E_j = psi[j] of the constant-beta DF f(E, L) = L^(-2 beta) f_E(E) (Cuddeford 1991), -1/2 < beta <
    1/2, with h = d^2 g / d Psi^2 on the grid and g = r^(2 beta) nu as a function of Psi.

    nu r^(2 beta) = C int_0^Psi f_E(E) (Psi - E)^(1/2 - beta) dE, C = 2^(3/2 - beta) pi^(3/2) Gamma(1 - beta) /
    Gamma(3/2 - beta); one derivative gives an Abel equation of index mu = 1/2 + beta, whose inversion is
    f_E(E) = sin(pi mu) / (pi C (1/2 - beta)) int_0^E h(Psi) (E - Psi)^(mu - 1) dPsi (boundary terms vanish for a
    tracer falling faster than r^-3). beta = 0 is Eddington's formula (:func:`_eddington_integral`, which the
    isotropic DF keeps). Product integration as there: h linear in Psi on each segment, the power kernel exact.
    """
    mu = 0.5 + beta
    norm = np.sin(np.pi * mu) / (np.pi * 2.0 ** (1.5 - beta) * np.pi**1.5 * gamma(1.0 - beta) / gamma(1.5 - beta)
                                 * (0.5 - beta))

    def segment(u0: NDArray[np.float64], u1: NDArray[np.float64], dpsi: NDArray[np.float64]) -> NDArray[np.float64]:
        p0, p1 = u0**mu, u1**mu
        slope = (h[1:] - h[:-1]) / dpsi
        return h[:-1] * (p0 - p1) / mu + slope * ((u0 * p0 - u1 * p1) / (mu + 1.0) - u1 * (p0 - p1) / mu)

    return norm * _product_integral(psi, j, segment)


def eddington_df(
    mass: Profile, density: Profile, scale: float, *, r_a: float | None = None, beta: float = 0.0, n_r: int = 3000,
    stride: int = 3, n_rows: int = 241, n_x: int = 2048,
) -> EddingtonDF:
    """Invert Eddington's formula (isotropic), Osipkov's and Merritt's (r_a given) or Cuddeford's for a constant
    anisotropy (beta given) for a tracer in M(<r).

    Parameters
    ----------
    mass : callable
        Total M(<r) [Msun] of r [kpc], vectorised.
    density : callable
        Tracer density nu(r) [any normalisation], vectorised over r [kpc]; nu must fall faster than r^-3 (r^-4
        bounds the Osipkov–Merritt boundary term at Psi = 0).
    scale : float
        Tracer scale radius [kpc]: the potential grid spans 1e-5 .. 1e5 scale, the sampling table 1e-3 .. 1e3.
    r_a : float or None
        Osipkov–Merritt radius [kpc]: nu is replaced by nu_Q = (1 + r^2/r_a^2) nu (Merritt 1985, AJ 90, 1027).
    beta : float
        Constant anisotropy, -1/2 < beta < 1/2 (0: isotropic): f(E, L) = L^(-2 beta) f_E(E) (Cuddeford 1991, MNRAS
        253, 414); not with r_a. A tracer with a central slope below 2 beta has no such DF (An & Evans 2006): the
        non-negativity check refuses it.
    n_r, stride : int
        Potential grid points; f is tabulated at every ``stride``-th one.
    n_rows, n_x : int
        Radii and x = w^2/(2 Psi) points of the sampling table.

    Raises
    ------
    ValueError
        If f is negative for energies bound inside 100 scale radii: the tracer has no such equilibrium DF in this
        potential (r_a too small; or a cored tracer in a central cusp, where f(E) < 0 at the most bound energies).
    """
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be > 0 [kpc], got {scale}")
    if r_a is not None and not (np.isfinite(r_a) and r_a > 0):
        raise ValueError(f"r_a must be > 0 [kpc] or None, got {r_a}")
    if not -0.5 < beta < 0.5 or (beta != 0.0 and r_a is not None):
        raise ValueError(f"beta must lie in (-1/2, 1/2) and not come with r_a, got beta={beta}, r_a={r_a}")
    lnr = np.linspace(np.log(1e-5 * scale), np.log(1e5 * scale), n_r)
    r = np.exp(lnr)
    psi, gr = _relative_potential(mass, lnr)
    nu_q = np.asarray(density(r), dtype=np.float64) * (1.0 if r_a is None else 1.0 + (r / r_a) ** 2)
    if beta != 0.0:
        nu_q = nu_q * r ** (2.0 * beta)
    # d nu/d Psi = (d nu / d ln r) / (d Psi / d ln r); d ln nu / d ln r is smooth where nu spans many decades.
    dnu = nu_q * np.gradient(np.log(nu_q), lnr) / -gr
    h = np.gradient(dnu, lnr) / -gr
    # Q from Psi(3e-4 scale) outwards: nearer the centre Psi(0) - Psi ~ r^2 makes the numerical h noisy, and the
    # sampling table starts at 1e-3 scale (f beyond q[-1] is held; stars there are a fraction < 1e-7).
    j = np.arange(np.searchsorted(lnr, np.log(3e-4 * scale)), n_r - 2, stride)[::-1]
    f = _eddington_integral(psi, h, j) if beta == 0.0 else _cuddeford_integral(psi, h, j, beta)
    q = psi[j]
    bound = q >= psi[np.searchsorted(lnr, np.log(100.0 * scale))]
    # Negative relative to the LOCAL size of f (11-point window), not its maximum: f spans tens of decades, and an
    # Osipkov–Merritt DF with small r_a dips below zero where f is ~1e-10 of its central value.
    local = np.max(np.lib.stride_tricks.sliding_window_view(np.pad(np.abs(f), 5, mode="edge"), 11), axis=1)
    if np.any(f[bound] < -1e-3 * local[bound]):
        kind = ("isotropic" if beta == 0.0 else f"constant-beta ({beta:.3g})") if r_a is None else \
            f"Osipkov–Merritt (r_a = {r_a:.3g} kpc)"
        raise ValueError(f"the {kind} DF is negative for this tracer and potential. HINT: use the Jeans path, or a "
                         "larger r_a")
    f = np.clip(f, 0.0, None)
    lnr_tab, x, cdf = _velocity_table(lnr, psi, q, f, scale, n_rows, n_x, beta)
    return EddingtonDF(lnr=lnr, psi=psi, q=q, f=f, r_a=None if r_a is None else float(r_a), lnr_tab=lnr_tab, x=x,
                       cdf=cdf, beta=float(beta))


def _velocity_table(lnr: NDArray[np.float64], psi: NDArray[np.float64], q: NDArray[np.float64],
                    f: NDArray[np.float64], scale: float, n_rows: int, n_x: int, beta: float = 0.0
                    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """CDFs of x = w^2/(2 Psi) in [0, 1], density x^(1/2 - beta) f(Psi (1 - x)) (sqrt(x) f for the isotropic and
    Osipkov–Merritt DFs), on rows of ln r (uniform): (ln r, x, cdf).

    The CDF is sampled by direct inversion: a uniform-probability quantile table interpolated linearly overshot
    the variance by 0.7 % at 0.1 scale (convex quantile tails) for a cuspy tracer in a core."""
    lnr_tab = np.linspace(np.log(1e-3 * scale), np.log(1e3 * scale), n_rows)
    psi_tab = np.interp(lnr_tab, lnr, psi)
    # x is geometric below 1e-2: where a cuspy tracer sits in a cored potential, sigma^2 ~ r^gamma << Psi(0) near
    # the centre and the speeds crowd into x << 1 (a uniform grid there was off by 10 % in sigma_r^2 at 0.1 scale).
    n_geo = n_x // 4
    x = np.concatenate([[0.0], np.geomspace(1e-12, 1e-2, n_geo, endpoint=False),
                        np.linspace(1e-2, 1.0, n_x - n_geo - 1)])
    weight = np.sqrt(x) if beta == 0.0 else x ** (0.5 - beta)  # w^(2 - 2 beta) dw in x
    dens = weight[None, :] * np.interp(psi_tab[:, None] * (1.0 - x[None, :]), q, f, left=0.0)
    cdf = np.concatenate([np.zeros((n_rows, 1)), np.cumsum(0.5 * (dens[:, 1:] + dens[:, :-1]) * np.diff(x), axis=1)],
                         axis=1)
    cdf /= cdf[:, -1:]
    return lnr_tab, x, cdf


def _sample_plummer_eddington(mass: Profile, a: float, n: int, rng: np.random.Generator, *, beta: float,
                              r_a: float | None) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``sample_df(engine="eddington")``: Plummer positions, then velocities from :func:`eddington_df`."""
    from galmass.physics.profiles import plummer_density, plummer_radius_from_fraction

    if beta != 0.0:
        raise ValueError(f"engine 'eddington' has isotropic and Osipkov–Merritt DFs only, got beta={beta}")
    df = eddington_df(mass, lambda r: plummer_density(r, a), a, r_a=r_a)
    radius = plummer_radius_from_fraction(rng.random(n), a)
    cos_t = 2.0 * rng.random(n) - 1.0
    phi = 2.0 * np.pi * rng.random(n)
    sin_t = np.sqrt(1.0 - cos_t**2)
    rhat = np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=-1)
    return radius[:, None] * rhat, df.velocities(radius, rhat, rng)
