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
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterator

import numpy as np
from numpy.typing import NDArray

from galmass.physics.constants import G

__all__ = ["galpy_available", "sample_df", "sample_tangential_df", "numpy_global_seed", "DF_RMAX_SCALES"]

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
    engine : 'auto' or 'galpy'
        'auto' uses :func:`sample_tangential_df` for beta = -0.5 (closed-form inversion, fast) and galpy otherwise;
        'galpy' always uses galpy.

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
    if engine not in ("auto", "galpy"):
        raise ValueError(f"engine must be 'auto' or 'galpy', got {engine!r}")
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
