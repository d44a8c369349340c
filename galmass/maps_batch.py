"""The model inputs of many star catalogues at once, bit-identical to :func:`galmass.maps.observation_to_sample`.

``galmass predict`` makes the maps of thousands of catalogues of ~100 stars. One catalogue at a time, numpy's
per-call overhead on 100-element arrays costs ~0.7 ms each (of CPU); here catalogues with the same number of stars
go through every step together as the rows of one [G, N] array (each row's members, after the velocity clipping,
packed to its front): ~0.15-0.2 ms each. Every number equals the per-catalogue path's bit for bit, because only
operations that give the same bits per row are used:

* elementwise arithmetic and comparisons (the same operands give the same result, whatever the array's shape);
* reductions along the last axis of a C-contiguous 2-D array (numpy sums each row pairwise exactly as a 1-D array
  of that length), and np.median / np.quantile along it (a partition, then the same interpolation);
* reductions over a subset of a row (the members, an aperture, a radius bin): the subset is packed to the front of
  its row in its original order and rows with equally many entries are reduced together as one [g, k] array, since
  a pairwise sum's rounding depends on k, not only on the numbers (:func:`_by_count`);
* histograms by one np.bincount over row-offset pixel indices (each pixel adds its tracers in the same order);
* what the per-catalogue code computes on Python floats stays a Python float per row (``sigma ** 2`` calls libm's
  pow, which differs from ``x * x`` in the last bit for ~0.1 % of values); np.cov's BLAS dot stays one call per
  catalogue, and the 2x2 eigenvalues one LAPACK call per matrix (numpy's stacked eigvalsh loops over them).

Everything else takes :func:`observation_to_sample` itself, one catalogue at a time: gas, fewer than
:data:`MIN_STARS` stars or members, a star count shared by fewer than :data:`MIN_GROUP` catalogues, inputs it would
refuse (its error message is then its own) or values beyond :data:`LIMIT`. ``tests/test_maps_batch.py`` checks the
equality array by array.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from galmass.maps import observation_to_sample

__all__ = ["observations_to_samples", "MIN_STARS", "MIN_GROUP", "LIMIT"]

MIN_STARS = 8
"""Catalogues (and member lists) with fewer stars take the per-catalogue path: its small-N branches (membership
keeps all of <= 3 stars, no covariance below 3, no variance below 2) are its own."""
MIN_GROUP = 4
"""Star counts shared by fewer catalogues take the per-catalogue path (a batch of 1-3 rows is no faster)."""
LIMIT = 1e30
"""Positions [kpc], velocities and errors [km/s] beyond this in size take the per-catalogue path (where squares
could overflow, Python's float power raises; the batch never meets such values)."""

Stars = tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]
Arrays = tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]


def observations_to_samples(stars: Sequence[Stars], *, npix: int, extent_rh: float, vmax_sigma: float,
                            membership_clip: float = 0.0, recentre: bool = False
                            ) -> list[dict[str, Any] | ValueError]:
    """``observation_to_sample(x_kpc, y_kpc, v_kms, v_err_kms, None, ...)`` of each star catalogue (no gas), or the
    ValueError that call raises, in input order; bit-identical to the call, ~4x faster for many catalogues.

    ``stars``: (x_kpc [N], y_kpc [N], v_kms [N], v_err_kms [N] or scalar) per catalogue; the keyword arguments are
    observation_to_sample's (map size, extents in R_h and σ, the observer's membership clip and recentring).
    """
    kw: dict[str, Any] = dict(npix=npix, extent_rh=extent_rh, vmax_sigma=vmax_sigma,
                              membership_clip=membership_clip, recentre=recentre)
    out: list[Any] = [None] * len(stars)
    clean = [_clean(s) for s in stars] if npix >= 1 and extent_rh > 0 and vmax_sigma > 0 else [None] * len(stars)
    for idx in _groups([c[0].size if c is not None else 0 for c in clean]):
        x, y, v, err = (np.stack([clean[i][j] for i in idx]) for j in range(4))  # type: ignore[index]
        fine = np.flatnonzero(_usable(x, y, v, err))  # the others: the per-catalogue path
        if fine.size == 0:
            continue
        keep = _membership_rows(v[fine], err[fine], float(membership_clip))
        order, k = _packed(keep)  # each row's members first, in their order: a[i][keep[i]] = packed[i, :k[i]]
        rows = _observe_rows(*(np.take_along_axis(a[fine], order, axis=1) for a in (x, y, v, err)), k,
                             npix=int(npix), extent=float(extent_rh), vmax=float(vmax_sigma), recentre=bool(recentre))
        for r, i in enumerate(np.asarray(idx)[fine].tolist()):
            if rows[r] is not None:
                out[i] = _ordered({**rows[r], "members": keep[r].copy()})  # type: ignore[dict-item]
    for i, res in enumerate(out):
        if res is None:  # the per-catalogue path: its own edge cases and error messages
            try:
                out[i] = observation_to_sample(*stars[i], None, **kw)
            except ValueError as err:
                out[i] = err
    return out


def _clean(s: Stars) -> Arrays | None:
    """(x, y, v, err) as float64 [N] the way observation_to_sample reads them, or None where the batch leaves the
    catalogue to it (a malformed input, a small catalogue)."""
    try:
        x, y, v = (np.asarray(a, dtype=np.float64).ravel() for a in s[:3])
        err = np.broadcast_to(np.asarray(s[3], dtype=np.float64), (x.size,))
    except (TypeError, ValueError):
        return None
    return (x, y, v, err) if x.size == y.size == v.size and x.size >= MIN_STARS else None


def _usable(*arrays: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Rows [G] whose values are all finite and below LIMIT in size, with errors (the last array) >= 0: the rows
    observation_to_sample accepts, less the absurd values left to it."""
    ok = np.all(arrays[-1] >= 0, axis=1)
    for a in arrays:
        ok &= np.all(np.abs(a) < LIMIT, axis=1)  # False for NaN and inf too
    return ok


def _groups(sizes: list[int]) -> list[list[int]]:
    """Indices of the catalogues that share a size (>= MIN_STARS), for groups of at least MIN_GROUP."""
    by: dict[int, list[int]] = {}
    for i, n in enumerate(sizes):
        if n >= MIN_STARS:
            by.setdefault(n, []).append(i)
    return [idx for idx in by.values() if len(idx) >= MIN_GROUP]


_ORDER = ("maps_stars", "phase_stars", "summary_stars", "rh_kpc", "sigma_kms", "v_sys_kms", "centre_x_kpc",
          "centre_y_kpc", "n_members", "members", "maps_gas", "phase_gas", "vrms_gas_kms", "scalars")


def _ordered(res: dict[str, Any]) -> dict[str, Any]:
    """The keys in observation_to_sample's order (a caller iterating over the dict sees the same sequence)."""
    return {k: res[k] for k in _ORDER}


def _packed(mask: NDArray[np.bool_]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """(order, counts): per row, the column order that puts the True entries first (in their order), and their
    number. ``np.take_along_axis(a, order, axis=1)[i, :counts[i]]`` equals ``a[i][mask[i]]``."""
    return np.argsort(~mask, axis=1, kind="stable"), np.count_nonzero(mask, axis=1)


def _by_count(a: NDArray[np.float64], k: NDArray[np.intp], reduce: Callable[[NDArray[np.float64]], NDArray]
              ) -> NDArray[np.float64]:
    """``reduce`` (along axis 1, output [..., g]) of the first k[i] entries of each row [G, N] → [..., G]: rows
    with equal k together as one C-contiguous [g, k] array, which numpy reduces row by row as a 1-D array."""
    if np.all(k == a.shape[1]):
        return reduce(a)
    order = np.argsort(k, kind="stable")
    ks = k[order]
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]]).tolist()
    out: NDArray[np.float64] | None = None
    for start, stop in zip(starts, starts[1:] + [len(ks)]):
        rows = order[start:stop]
        part = reduce(a[rows, :ks[start]])
        if out is None:
            out = np.empty(part.shape[:-1] + (len(a),))
        out[..., rows] = part
    assert out is not None
    return out


def _prefix_sums(a: NDArray[np.float64], k: NDArray[np.intp]) -> NDArray[np.float64]:
    """Sum of the first k[i] entries of row i, bit-identical to ``np.sum`` of that 1-D slice.

    numpy sums pairwise (blocks of 8 accumulators, halves above 128 entries), so the rounding depends on the
    number of terms, not only on the numbers: hence rows are summed in groups of equal k.
    """
    return _by_count(a, k, lambda b: np.add.reduce(b, axis=1))


def _medians(a: NDArray[np.float64], k: NDArray[np.intp]) -> NDArray[np.float64]:
    """np.median of the first k[i] entries of each row [G, N] → [G]."""
    return _by_count(a, k, lambda b: np.median(b, axis=1))


def _radial_medians(a: NDArray[np.float64], k: NDArray[np.intp]) -> NDArray[np.float64]:
    """np.median of the first k[i] (>= 1) entries of each row [G, N] of distances (np.hypot's: >= 0, never -0.0,
    never NaN), from one sort of all rows instead of one np.median per member count.

    np.median averages the middle one or two order statistics with np.mean (np.add.reduce of the one or two, ÷ their
    number); those values do not depend on the sorting algorithm for such numbers (equal means bit-identical
    without -0.0), and the rows' means are the same reductions of [g, 1] or [g, 2] arrays.
    """
    if np.all(k == a.shape[1]):
        return np.median(a, axis=1)
    s = np.sort(np.where(np.arange(a.shape[1]) < k[:, None], a, np.inf), axis=1)  # the others sort last
    rows = np.arange(len(a))
    mid = np.stack([s[rows, (k - 1) // 2], s[rows, k // 2]], axis=1)  # the same order statistic twice for odd k
    odd = k % 2 == 1
    out = np.empty(len(a))
    out[odd] = np.add.reduce(mid[odd, :1], axis=1) / 1
    out[~odd] = np.add.reduce(mid[~odd], axis=1) / 2
    return out


def _dispersion(dv: NDArray[np.float64], err: NDArray[np.float64], k: NDArray[np.intp]) -> NDArray[np.float64]:
    """``galmass.maps.dispersion_stars`` [km/s] of the first k[i] (>= 2) velocities [km/s] and errors of each row,
    with its operations in its order (np.var with ddof=1, the error floor's power on Python floats)."""
    mean = _prefix_sums(dv, k) / k
    var = _prefix_sums((dv - mean[:, None]) ** 2, k) / (k - 1)
    mean_err = _prefix_sums(err, k) / k
    floor = np.array([(0.1 * m) ** 2 for m in mean_err.tolist()]) + 1e-6
    return np.sqrt(np.maximum(var - _prefix_sums(err**2, k) / k, floor))


def _membership_rows(v: NDArray[np.float64], err: NDArray[np.float64], clip: float, min_members: int = 3,
                     max_iter: int = 20) -> NDArray[np.bool_]:
    """``galmass.maps.membership`` of each row [G, N] of velocities and errors [km/s]: members [G, N] by iterative
    sigma clipping, each row stopping when its member set stops changing."""
    keep = np.ones(v.shape, dtype=bool)
    if clip <= 0 or v.shape[1] <= min_members:
        return keep
    centre = np.median(v, axis=1)
    sigma = np.maximum(1.4826 * np.median(np.abs(v - centre[:, None]), axis=1), 1e-3)
    active = np.arange(len(v))
    for _ in range(max_iter):
        if active.size == 0:
            break
        va, c = v[active], centre[active]
        s2 = np.array([s**2 for s in sigma[active].tolist()])  # Python's float power, as on one catalogue
        new = np.abs(va - c[:, None]) <= clip * np.sqrt(s2[:, None] + err[active] ** 2)
        for j in np.flatnonzero(new.sum(axis=1) < min_members):  # rare: the closest few, by numpy's own argsort
            new[j] = False
            new[j, np.argsort(np.abs(va[j] - c[j]))[:min_members]] = True
        moving = ~np.all(new == keep[active], axis=1)
        active, new = active[moving], new[moving]
        if active.size == 0:
            break
        keep[active] = new
        order, k = _packed(new)
        vm = np.take_along_axis(v[active], order, axis=1)
        centre[active] = _prefix_sums(vm, k) / k
        sigma[active] = _dispersion(vm - centre[active][:, None], np.take_along_axis(err[active], order, axis=1), k)
    return keep


def _centres_rows(x: NDArray[np.float64], y: NDArray[np.float64], k: NDArray[np.intp], clip: float = 2.0,
                  max_iter: int = 50) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``galmass.maps.estimate_centre`` of the first k[i] positions [kpc] of each row [G, N]: the shrinking-aperture
    centroids (cx, cy) [G] [kpc], each row stopping on its own criterion."""
    cx, cy = _medians(x, k), _medians(y, k)
    valid = np.arange(x.shape[1]) < k[:, None]
    active = np.arange(len(x))
    for _ in range(max_iter):
        if active.size == 0:
            break
        xa, ya = x[active], y[active]
        d = np.hypot(xa - cx[active][:, None], ya - cy[active][:, None])
        aperture = clip * _radial_medians(d, k[active])
        inside = (d <= aperture[:, None]) & valid[active]
        go = ~((aperture <= 0) | ~inside.any(axis=1))  # the others stop where they are
        active, aperture = active[go], aperture[go]
        order, n = _packed(inside[go])
        order, n = np.concatenate([order, order]), np.concatenate([n, n])  # x and y rows in one call
        nx, ny = np.split(_prefix_sums(np.take_along_axis(np.concatenate([xa[go], ya[go]]), order, axis=1), n) / n, 2)
        moved = np.hypot(nx - cx[active], ny - cy[active])
        cx[active], cy[active] = nx, ny
        active = active[~(moved < 1e-4 * aperture)]
    return cx, cy


def _observe_rows(x: NDArray[np.float64], y: NDArray[np.float64], v: NDArray[np.float64], err: NDArray[np.float64],
                  k: NDArray[np.intp], *, npix: int, extent: float, vmax: float, recentre: bool
                  ) -> list[dict[str, Any] | None]:
    """observation_to_sample's outputs (less "members") of G catalogues whose members are the first k[i] entries
    of each row [G, N] (positions [kpc], velocities and errors [km/s]); None for a row the per-catalogue path must
    handle (fewer than MIN_STARS members, a median radius not > 0, radius quartiles np.digitize would refuse)."""
    g = len(x)
    cx, cy = _centres_rows(x, y, k) if recentre else (np.zeros(g), np.zeros(g))
    x, y = x - cx[:, None], y - cy[:, None]
    radius = np.hypot(x, y)
    rh = _radial_medians(radius, k)
    ok = np.flatnonzero((rh > 0) & (k >= MIN_STARS))  # the others: the per-catalogue path (or its error)
    out: list[dict[str, Any] | None] = [None] * g
    if ok.size == 0:
        return out
    x, y, v, err, radius, rh, k = x[ok], y[ok], v[ok], err[ok], radius[ok], rh[ok], k[ok]
    valid = np.arange(x.shape[1]) < k[:, None]
    v_sys = _prefix_sums(v, k) / k
    dv = v - v_sys[:, None]
    sigma = _dispersion(dv, err, k)
    rr = radius / rh[:, None]
    maps = _sky_rows(x / rh[:, None], y / rh[:, None], dv, valid, npix, extent)  # unit weights (stars)
    phase = _phase_rows(rr, dv / sigma[:, None], valid, npix, extent, vmax)
    summary, good = _summary_rows(rr, dv, err, x / rh[:, None], y / rh[:, None], sigma, k)
    for r, i in enumerate(ok.tolist()):
        if not good[r]:
            continue
        rh_r, sigma_r, m = float(rh[r]), float(sigma[r]), int(k[r])
        out[i] = {"maps_stars": maps[r], "phase_stars": phase[r], "summary_stars": summary[r], "rh_kpc": rh_r,
                  "sigma_kms": sigma_r, "v_sys_kms": float(v_sys[r]), "centre_x_kpc": float(cx[i]),
                  "centre_y_kpc": float(cy[i]), "n_members": m,
                  "maps_gas": np.zeros((4, npix, npix), dtype=np.float32),
                  "phase_gas": np.zeros((1, npix, npix), dtype=np.float32), "vrms_gas_kms": 0.0,
                  # per row, the same scalar np.log10 calls as one catalogue (no vectorised log10's rounding)
                  "scalars": np.array([np.log10(rh_r), np.log10(sigma_r), 0.0, np.log10(m)], dtype=np.float32)}
    return out


def _pixels(ix: NDArray[np.int64], iy: NDArray[np.int64], valid: NDArray[np.bool_], npix: int
            ) -> tuple[NDArray[np.intp], NDArray[np.bool_], NDArray[np.int64], NDArray[np.float64]]:
    """From pixel columns and rows [G, N] of tracers (the ``valid`` ones): the flat index row × npix² + pixel of
    those inside the map (row-major: each catalogue's tracers in their own order), which tracers those are [G, N],
    tracers per pixel [G·npix²] and inside each row's map [G] (float64).

    With unit weights a sum of weights is a count, exact in any order (integers < 2^53): sky_maps' and
    phase_map's weight sums and totals are these counts.
    """
    keep = (ix >= 0) & (ix < npix) & (iy >= 0) & (iy < npix) & valid
    offset = np.arange(len(ix))[:, None] * (npix * npix)
    flat = (iy * npix + ix + offset)[keep]
    return flat, keep, np.bincount(flat, minlength=len(ix) * npix * npix), keep.sum(axis=1).astype(np.float64)


def _sky_rows(u: NDArray[np.float64], w: NDArray[np.float64], v: NDArray[np.float64], valid: NDArray[np.bool_],
              npix: int, extent: float) -> NDArray[np.float32]:
    """``galmass.maps.sky_maps(u, w, v, ones)`` (no beam) of the valid entries of each row [G, N] of positions
    [R_h] and velocities [km/s]: [G, 4, npix, npix] float32, computed on the occupied pixels only (the others are
    0 in every channel)."""
    g, npx = len(u), npix * npix
    ix = np.floor((np.clip(u, -2 * extent, 2 * extent) + extent) * (npix / (2.0 * extent))).astype(np.int64)
    iy = np.floor((np.clip(w, -2 * extent, 2 * extent) + extent) * (npix / (2.0 * extent))).astype(np.int64)
    flat, keep, count, total = _pixels(ix, iy, valid, npix)
    vk = v[keep]
    f = np.flatnonzero(count)  # occupied: sw > 0
    sw = count[f].astype(np.float64)
    swv = np.bincount(flat, weights=vk, minlength=g * npx)[f]  # weights 1 · v = v exactly: the same sums
    swv2 = np.bincount(flat, weights=vk * vk, minlength=g * npx)[f]
    mean = swv / sw
    var = swv2 / sw - mean**2
    row, pix = np.divmod(f, npx)
    at = row * (4 * npx) + pix  # channel 0 of that pixel in the flat [G, 4, npx] output
    out = np.zeros(g * 4 * npx, dtype=np.float32)  # float64 → float32 on assignment: astype's rounding
    out[at] = sw / total[row]
    out[at + npx] = mean
    out[at + 2 * npx] = np.where(count[f] >= 2, np.sqrt(np.clip(var, 0.0, None)), 0.0)
    out[at + 3 * npx] = 1.0
    return out.reshape(g, 4, npix, npix)


def _phase_rows(radius: NDArray[np.float64], vel: NDArray[np.float64], valid: NDArray[np.bool_], npix: int,
                extent: float, vmax: float) -> NDArray[np.float32]:
    """``galmass.maps.phase_map(radius, vel, ones)`` of the valid entries of each row [G, N] of radii [R_h] and
    velocities [σ★]: [G, 1, npix, npix] float32."""
    g = len(radius)
    ix = np.floor(np.clip(radius, -extent, 2 * extent) * (npix / extent)).astype(np.int64)
    iy = np.floor((np.clip(vel, -2 * vmax, 2 * vmax) + vmax) * (npix / (2.0 * vmax))).astype(np.int64)
    _, _, count, total = _pixels(ix, iy, valid, npix)
    f = np.flatnonzero(count)
    out = np.zeros(len(count), dtype=np.float32)
    out[f] = count[f] / total[f // (npix * npix)]
    return out.reshape(g, 1, npix, npix)


def _summary_rows(r: NDArray[np.float64], dv: NDArray[np.float64], err: NDArray[np.float64], x: NDArray[np.float64],
                  y: NDArray[np.float64], sigma: NDArray[np.float64], k: NDArray[np.intp]
                  ) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """``galmass.maps.summary_statistics`` of the first k[i] entries of each row [G, N] (radii and positions [R_h],
    velocities and errors [km/s]; σ★ [G] [km/s]): ([G, 10] float32, which rows are valid: not the ones whose
    radius quartiles np.digitize would refuse)."""
    g = len(r)
    valid = np.arange(r.shape[1]) < k[:, None]
    q = _by_count(r, k, lambda b: np.quantile(b, [0.25, 0.5, 0.75, 0.9], axis=1))  # [4, G]
    good = (q[0] <= q[1]) & (q[1] <= q[2])  # np.digitize needs monotonic bins; then it counts the bins <= R
    bins = (r >= q[0][:, None]).astype(np.int64) + (r >= q[1][:, None]) + (r >= q[2][:, None])
    ratios = np.ones(4 * g)  # the four radius quartiles' dispersions ÷ σ★, stacked [bin, row]
    order, n = _packed(np.concatenate([(bins == b) & valid for b in range(4)]))
    two = np.flatnonzero(n >= 2)  # fewer than two stars: ratio 1
    rows = two % g
    ratios[two] = _dispersion(np.take_along_axis(dv[rows], order[two], axis=1),
                              np.take_along_axis(err[rows], order[two], axis=1), n[two]) / sigma[rows]
    s2 = np.array([s**2 for s in sigma.tolist()])  # Python's float power, as on one catalogue
    z = dv / np.sqrt(s2[:, None] + err**2)
    m2 = _prefix_sums(z**2, k) / k
    kurt = (_prefix_sums(z**4, k) / k) / np.maximum(np.array([a**2 for a in m2]), 1e-12)  # np.float64's power
    ev = np.sort(np.linalg.eigvalsh(_covariances(x, y, k)), axis=1)
    ellipticity = 1.0 - np.sqrt(np.maximum(ev[:, 0], 0.0) / np.maximum(ev[:, 1], 1e-12))
    cols = [*ratios.reshape(4, g), q[0], q[2], q[3], kurt, (_prefix_sums(err, k) / k) / sigma, ellipticity]
    return np.stack(cols, axis=1).astype(np.float32), good


def _covariances(x: NDArray[np.float64], y: NDArray[np.float64], k: NDArray[np.intp]) -> NDArray[np.float64]:
    """``np.cov(np.vstack([x, y]))`` of the first k[i] (>= 3) entries of each row [G, N]: [G, 2, 2]. The means are
    row reductions; the products one BLAS dot per catalogue on a fresh (2, k) array, as np.cov makes them (BLAS's
    summation order is its own)."""
    xc, yc = x - (_prefix_sums(x, k) / k)[:, None], y - (_prefix_sums(y, k) / k)[:, None]
    out = np.empty((len(x), 2, 2))
    for i, m in enumerate(k.tolist()):
        a = np.vstack([xc[i, :m], yc[i, :m]])
        c = np.dot(a, a.T.conj())
        c *= np.true_divide(1, m - 1)
        out[i] = c
    return out
