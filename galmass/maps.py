"""Turn one projected tracer catalogue into the model inputs: sky maps, phase-space maps and scalars.

Used for mocks and, unchanged, for real catalogues (``galmass predict``): nothing here assumes a mock.

Sky maps (per tracer) are [4, H, W] with rows = y and columns = x, both from -extent_rh R_h to +extent_rh R_h
(row 0 / column 0 at -extent, i.e. ``imshow(origin="lower")`` orientation):

0. weight fraction per pixel (stars: counts; gas: mass), summing to 1 over the pixels that received tracers,
1. weighted mean v_los [km/s] (relative to the stars' systemic velocity),
2. weighted sigma_los [km/s] (0 where a pixel has fewer than 2 tracers),
3. mask: 1 where a pixel has >= 1 tracer.

Phase-space maps are [1, H, W]: rows = v_los / scale in [-vmax_sigma, vmax_sigma] (scale = sigma* for stars,
v_rms,gas for gas), columns = R / R_h in [0, extent_rh]; normalised to sum 1 (a PDF over the pixels).

Scalars [4] = (log10 R_h [kpc], log10 sigma* [km/s], log10 v_rms,gas [km/s] (0 without gas), log10 N*).

R_h is the median projected radius of the stars; tracers outside a map are dropped from that map only.

Beam smoothing (gas, optional): a radio/IFU map is the sky convolved with the beam. With ``beam_fwhm > 0`` the
pixel sums of weight, weight·v and weight·v² are convolved with a Gaussian of that FWHM (in R_h) before the moments
are taken, so the mean velocity is the beam-weighted mean and σ_los includes beam smearing of the velocity
gradient, as in an observed moment-2 map. The mask is then "smoothed weight fraction > ``BEAM_MASK_FRACTION``".
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["observation_to_sample", "sky_maps", "phase_map", "dispersion_stars", "estimate_centre", "membership",
           "summary_statistics", "BEAM_MASK_FRACTION"]

BEAM_MASK_FRACTION = 1e-4
"""With a beam, a pixel is detected (mask 1) when it holds more than this fraction of the total smoothed weight."""


def _as_1d(name: str, a: ArrayLike, n: int | None = None) -> NDArray[np.float64]:
    a = np.asarray(a, dtype=np.float64).ravel()
    if n is not None and a.size != n:
        raise ValueError(f"{name} has {a.size} entries, expected {n}. HINT: pass one value per tracer")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(a)))} non-finite values. HINT: drop those "
                         "tracers before calling observation_to_sample")
    return a


def dispersion_stars(v_kms: ArrayLike, v_err_kms: ArrayLike) -> float:
    """Error-corrected line-of-sight velocity dispersion [km/s] of stars.

    sigma = sqrt(max(var(v) - mean(err^2), (0.1 mean err)^2 + 1e-6)), with the unbiased variance (ddof = 1) when
    there are >= 2 stars. The floor keeps sigma > 0 (and its log finite) when errors dominate.
    """
    v = np.asarray(v_kms, dtype=np.float64)
    err = np.broadcast_to(np.asarray(v_err_kms, dtype=np.float64), v.shape)
    var = float(np.var(v, ddof=1)) if v.size >= 2 else 0.0
    floor = (0.1 * float(np.mean(err))) ** 2 + 1e-6
    return float(np.sqrt(max(var - float(np.mean(err**2)), floor)))


def estimate_centre(x_kpc: ArrayLike, y_kpc: ArrayLike, clip: float = 2.0, max_iter: int = 50
                    ) -> tuple[float, float]:
    """Centre of a star catalogue as an observer estimates it from the stars themselves [kpc].

    Start at the median position, then iterate the mean position of the stars within ``clip`` times their median
    distance from the current centre (a shrinking-aperture centroid: robust to foreground stars spread over the
    field and to a lopsided outskirt) until it moves by less than 1e-4 of that aperture.
    """
    x = _as_1d("x_kpc", x_kpc)
    y = _as_1d("y_kpc", y_kpc, x.size)
    if x.size == 0:
        raise ValueError("no stars given. HINT: estimate_centre needs at least one star")
    cx, cy = float(np.median(x)), float(np.median(y))
    for _ in range(max_iter):
        d = np.hypot(x - cx, y - cy)
        aperture = clip * float(np.median(d))
        inside = d <= aperture
        if aperture <= 0 or not inside.any():
            break
        nx, ny = float(x[inside].mean()), float(y[inside].mean())
        moved = np.hypot(nx - cx, ny - cy)
        cx, cy = nx, ny
        if moved < 1e-4 * aperture:
            break
    return cx, cy


def sky_maps(
    u: NDArray[np.float64], w: NDArray[np.float64], v: NDArray[np.float64], weight: NDArray[np.float64],
    *, npix: int, extent: float, beam_fwhm: float = 0.0,
) -> NDArray[np.float32]:
    """[4, npix, npix] sky map of tracers at (u, w) in units of R_h with velocities v [km/s] and weights.

    See the module docstring for the channels. Tracers with |u| or |w| >= extent are dropped. ``beam_fwhm`` is the
    FWHM of a Gaussian beam in the units of u, w (R_h); 0 means no smoothing.
    """
    if not (np.isfinite(beam_fwhm) and beam_fwhm >= 0):
        raise ValueError(f"beam_fwhm must be finite and >= 0 [R_h], got {beam_fwhm}. HINT: 0 disables the beam")
    out = np.zeros((4, npix, npix), dtype=np.float64)
    # Clip first so far-away tracers cannot overflow the integer cast; they land outside [0, npix) and are dropped.
    ix = np.floor((np.clip(u, -2 * extent, 2 * extent) + extent) * (npix / (2.0 * extent))).astype(np.int64)
    iy = np.floor((np.clip(w, -2 * extent, 2 * extent) + extent) * (npix / (2.0 * extent))).astype(np.int64)
    keep = (ix >= 0) & (ix < npix) & (iy >= 0) & (iy < npix)
    if not np.any(keep):
        return out.astype(np.float32)
    flat = iy[keep] * npix + ix[keep]
    wt, vk = weight[keep], v[keep]
    npx = npix * npix
    count = np.bincount(flat, minlength=npx)
    sw = np.bincount(flat, weights=wt, minlength=npx)
    swv = np.bincount(flat, weights=wt * vk, minlength=npx)
    swv2 = np.bincount(flat, weights=wt * vk * vk, minlength=npx)
    if beam_fwhm > 0:
        from scipy.ndimage import gaussian_filter

        # FWHM = 2 sqrt(2 ln 2) sigma; pixels are 2 extent / npix wide. Flux leaving the map edge is lost, as it
        # is for a telescope whose field of view is the map.
        sig_pix = beam_fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0))) * npix / (2.0 * extent)
        total_in = sw.sum()

        def smooth(a: NDArray[np.float64]) -> NDArray[np.float64]:
            return gaussian_filter(a.reshape(npix, npix), sig_pix, mode="constant", truncate=4.0).ravel()

        sw, swv, swv2 = smooth(sw), smooth(swv), smooth(swv2)
        detected = sw > BEAM_MASK_FRACTION * total_in
        sw = np.where(detected, sw, 0.0)
        count = np.where(detected, 2, 0)  # every detected pixel has a defined (beam-smeared) dispersion
    filled = sw > 0
    total = sw.sum()
    mean = np.zeros(npx)
    mean[filled] = swv[filled] / sw[filled]
    var = np.zeros(npx)
    var[filled] = swv2[filled] / sw[filled] - mean[filled] ** 2
    # Clip the round-off of E[v^2] - E[v]^2; a single tracer has no dispersion.
    sigma = np.where(count >= 2, np.sqrt(np.clip(var, 0.0, None)), 0.0)
    out[0] = (sw / total).reshape(npix, npix) if total > 0 else 0.0
    out[1] = mean.reshape(npix, npix)
    out[2] = sigma.reshape(npix, npix)
    out[3] = (count >= 1).reshape(npix, npix)
    return out.astype(np.float32)


def phase_map(
    radius: NDArray[np.float64], vel: NDArray[np.float64], weight: NDArray[np.float64],
    *, npix: int, extent: float, vmax: float,
) -> NDArray[np.float32]:
    """[1, npix, npix] PDF of (R/R_h in [0, extent] -> columns, v/scale in [-vmax, vmax] -> rows), summing to 1."""
    ix = np.floor(np.clip(radius, -extent, 2 * extent) * (npix / extent)).astype(np.int64)
    iy = np.floor((np.clip(vel, -2 * vmax, 2 * vmax) + vmax) * (npix / (2.0 * vmax))).astype(np.int64)
    keep = (ix >= 0) & (ix < npix) & (iy >= 0) & (iy < npix)
    hist = np.bincount(iy[keep] * npix + ix[keep], weights=weight[keep], minlength=npix * npix)
    total = hist.sum()
    if total > 0:
        hist = hist / total
    return hist.reshape(1, npix, npix).astype(np.float32)


def membership(v_kms: ArrayLike, v_err_kms: ArrayLike, clip: float, min_members: int = 3,
               max_iter: int = 20) -> NDArray[np.bool_]:
    """Members by iterative sigma clipping of line-of-sight velocities (the usual dSph membership step).

    Start from the median and 1.4826 × MAD (robust to a hot foreground), then repeat: keep stars with
    |v − mean| <= clip × sqrt(σ² + err²) where mean and σ (error-corrected, :func:`dispersion_stars`) are those of
    the current members, until the member set stops changing. ``clip`` = 0 keeps every star. At least
    ``min_members`` stars are always kept (the closest to the centre in velocity).
    """
    v = _as_1d("v_kms", v_kms)
    err = np.broadcast_to(np.asarray(v_err_kms, dtype=np.float64), v.shape)
    keep = np.ones(v.size, dtype=bool)
    if clip <= 0 or v.size <= min_members:
        return keep
    centre = float(np.median(v))
    sigma = max(1.4826 * float(np.median(np.abs(v - centre))), 1e-3)
    for _ in range(max_iter):
        new = np.abs(v - centre) <= clip * np.sqrt(sigma**2 + err**2)
        if new.sum() < min_members:
            new = np.zeros_like(keep)
            new[np.argsort(np.abs(v - centre))[:min_members]] = True
        if np.array_equal(new, keep):
            break
        keep = new
        centre = float(np.mean(v[keep]))
        sigma = dispersion_stars(v[keep] - centre, err[keep])
    return keep


def summary_statistics(R_over_rh: NDArray[np.float64], dv_kms: NDArray[np.float64], err: NDArray[np.float64],
                       x_over_rh: NDArray[np.float64], y_over_rh: NDArray[np.float64], sigma: float
                       ) -> NDArray[np.float32]:
    """Hand-made summaries of one catalogue (``galmass.datasets.schema.SUMMARY_NAMES``), scale-free.

    σ in the four radius quartiles ÷ σ (always populated, unlike fixed bins), the 25/75/90 % radii ÷ R_h, the
    velocity kurtosis (of v/sqrt(σ² + err²), 3 for a Gaussian), mean error ÷ σ and the positional ellipticity
    1 − b/a from the second moments of the positions.
    """
    q25, q50, q75, q90 = np.quantile(R_over_rh, [0.25, 0.5, 0.75, 0.9])  # one partition for both uses
    bins = np.digitize(R_over_rh, [q25, q50, q75])
    ratios = [dispersion_stars(dv_kms[bins == b], err[bins == b]) / sigma if np.sum(bins == b) >= 2 else 1.0
              for b in range(4)]
    z = dv_kms / np.sqrt(sigma**2 + err**2)
    kurt = float(np.mean(z**4) / max(np.mean(z**2) ** 2, 1e-12))
    cov = np.cov(np.vstack([x_over_rh, y_over_rh])) if x_over_rh.size >= 3 else np.eye(2)
    ev = np.sort(np.linalg.eigvalsh(cov))
    ellipticity = 1.0 - float(np.sqrt(max(ev[0], 0.0) / max(ev[1], 1e-12)))
    return np.array([*ratios, q25, q75, q90, kurt, float(np.mean(err)) / sigma, ellipticity], dtype=np.float32)


def observation_to_sample(
    x_kpc: ArrayLike,
    y_kpc: ArrayLike,
    v_kms: ArrayLike,
    v_err_kms: ArrayLike,
    gas: tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike] | None = None,
    *,
    npix: int,
    extent_rh: float,
    vmax_sigma: float,
    gas_beam_fwhm_rh: float = 0.0,
    membership_clip: float = 0.0,
    recentre: bool = False,
) -> dict[str, NDArray | float]:
    """Model inputs of one projected observation (stars, optionally gas), as an observer would make them.

    Steps: membership by velocity clipping (``membership_clip``, :func:`membership`; 0 keeps all stars) →
    centre on the members' own estimated centre (``recentre``, :func:`estimate_centre`; the gas is shifted by
    the same offset) → R_h, systemic velocity, error-corrected σ★ of the members → maps, scalars, summaries.

    Parameters
    ----------
    x_kpc, y_kpc : array [N*]
        Projected star positions [kpc] relative to the (assumed) galaxy centre.
    v_kms : array [N*]
        Observed line-of-sight velocities [km/s] (any systemic offset; it is removed with the members' mean).
    v_err_kms : float or array [N*]
        Velocity errors [km/s] (1-sigma), used to correct σ★ and in the membership step.
    gas : tuple (x_kpc, y_kpc, v_kms, mass_msun) of arrays [N_gas], or None
        Gas cells / pixels with the same centre and velocity zero point as the stars; None for no gas.
    npix, extent_rh, vmax_sigma : int, float, float
        Map size; sky maps span ±extent_rh R_h, phase maps R/R_h ∈ [0, extent_rh] and v/scale ∈ ±vmax_sigma.
    gas_beam_fwhm_rh : float
        FWHM of the Gaussian beam of the gas sky map [R_h]; 0 (default) bins the cells without smoothing.
    membership_clip, recentre : float, bool
        The observer's membership and centring steps (the training data's settings: ``data.membership_clip``,
        ``data.recentre``).

    Returns
    -------
    dict
        "maps_stars" [4,H,W], "phase_stars" [1,H,W], "maps_gas" [4,H,W], "phase_gas" [1,H,W], "scalars" [4],
        "summary_stars" [len(SUMMARY_NAMES)] (float32); floats "rh_kpc", "sigma_kms", "vrms_gas_kms" (0.0 without
        gas), "v_sys_kms", "centre_x_kpc", "centre_y_kpc"; "n_members" (int) and "members" (bool [N*]).
    """
    if npix < 1 or not extent_rh > 0 or not vmax_sigma > 0:
        raise ValueError(f"need npix >= 1, extent_rh > 0, vmax_sigma > 0; got {npix}, {extent_rh}, {vmax_sigma}")
    x = _as_1d("x_kpc", x_kpc)
    n = x.size
    if n < 1:
        raise ValueError("no stars given. HINT: observation_to_sample needs at least one star (>= 3 recommended)")
    y = _as_1d("y_kpc", y_kpc, n)
    v = _as_1d("v_kms", v_kms, n)
    err = np.broadcast_to(np.asarray(v_err_kms, dtype=np.float64), (n,))
    if not np.all(np.isfinite(err)) or np.any(err < 0):
        raise ValueError("v_err_kms must be finite and >= 0. HINT: use 0 for exact velocities")
    members = membership(v, err, membership_clip)
    x, y, v, err = x[members], y[members], v[members], err[members]
    cx, cy = estimate_centre(x, y) if recentre else (0.0, 0.0)
    x, y = x - cx, y - cy
    R = np.hypot(x, y)
    rh = float(np.median(R))
    if not rh > 0:
        raise ValueError(f"median projected radius of the stars is {rh} kpc; cannot scale maps. HINT: centre the "
                         "catalogue on the galaxy and check positions are not all zero")
    v_sys = float(np.mean(v))
    dv = v - v_sys
    sigma = dispersion_stars(dv, err)
    ones = np.ones(x.size)
    out: dict[str, NDArray | float] = {
        "maps_stars": sky_maps(x / rh, y / rh, dv, ones, npix=npix, extent=extent_rh),
        "phase_stars": phase_map(R / rh, dv / sigma, ones, npix=npix, extent=extent_rh, vmax=vmax_sigma),
        "summary_stars": summary_statistics(R / rh, dv, err, x / rh, y / rh, sigma),
        "rh_kpc": rh, "sigma_kms": sigma, "v_sys_kms": v_sys, "centre_x_kpc": cx, "centre_y_kpc": cy,
        "n_members": int(x.size), "members": members,
    }
    out.update(_gas_inputs(gas, (cx, cy), v_sys, rh, npix, extent_rh, vmax_sigma, gas_beam_fwhm_rh))
    log_vrms = np.log10(out["vrms_gas_kms"]) if gas is not None else 0.0
    out["scalars"] = np.array([np.log10(rh), np.log10(sigma), log_vrms, np.log10(x.size)], dtype=np.float32)
    return out


def _gas_inputs(gas: tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike] | None, centre: tuple[float, float],
                v_sys: float, rh: float, npix: int, extent: float, vmax: float, beam: float
                ) -> dict[str, NDArray | float]:
    """Gas sky and phase maps in the stars' frame (centre, systemic velocity, R_h); zeros without gas."""
    if gas is None:
        return {"maps_gas": np.zeros((4, npix, npix), dtype=np.float32),
                "phase_gas": np.zeros((1, npix, npix), dtype=np.float32), "vrms_gas_kms": 0.0}
    if len(gas) != 4:
        raise ValueError(f"gas must be (x_kpc, y_kpc, v_kms, mass), got {len(gas)} arrays")
    gx = _as_1d("gas x_kpc", gas[0]) - centre[0]
    ng = gx.size
    gy = _as_1d("gas y_kpc", gas[1], ng) - centre[1]
    gv = _as_1d("gas v_kms", gas[2], ng) - v_sys
    gm = _as_1d("gas mass", gas[3], ng)
    if ng == 0 or np.any(gm < 0) or not gm.sum() > 0:
        raise ValueError("gas needs >= 1 cell, masses >= 0 and a positive total. HINT: pass gas=None for no gas")
    # Mass-weighted rms about the stars' systemic velocity (rotation included: it is the gas velocity scale).
    vrms = max(float(np.sqrt(np.sum(gm * gv * gv) / np.sum(gm))), 1e-3)
    return {"maps_gas": sky_maps(gx / rh, gy / rh, gv, gm, npix=npix, extent=extent, beam_fwhm=beam),
            "phase_gas": phase_map(np.hypot(gx, gy) / rh, gv / vrms, gm, npix=npix, extent=extent, vmax=vmax),
            "vrms_gas_kms": vrms}
