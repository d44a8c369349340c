"""Observed catalogues as astronomers hold them: CSV files of stars (and gas) with sky or projected positions.

One file may hold one galaxy or many (a ``galaxy`` column). Columns, by name (case-sensitive, any order):

===================  =====================================================================================
``v_los_kms``        line-of-sight velocity [km/s] (any systemic offset) — required
``x_kpc, y_kpc``     projected positions [kpc], or
``R_kpc``            projected radius only [kpc] (stars; position angles are then drawn uniformly), or
``ra_deg, dec_deg``  sky positions [deg]; needs a distance (``distance_kpc`` column or ``--distance-kpc``)
``v_err_kms``        1-sigma velocity error [km/s] (0 if absent, with a warning)
``p_member``         membership probability in [0, 1] (each realisation keeps a star with this probability)
``galaxy``           galaxy name (text): one posterior per galaxy
``distance_kpc``     distance [kpc], constant per galaxy; ``distance_err_kpc`` its 1-sigma error
``mass_msun``        gas cells only: mass weight [Msun]
===================  =====================================================================================

Sky positions are projected onto the tangent plane at the catalogue centre (gnomonic projection; astropy's
SkyCoord would do the same but is not a dependency) and scaled by the distance. Any other column is an error
naming it, so that a misspelt ``v_err`` is never silently ignored.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = ["CatalogueError", "Catalogue", "read_catalogues", "tangent_plane_kpc", "KNOWN_COLUMNS"]

NUMERIC = ("v_los_kms", "x_kpc", "y_kpc", "R_kpc", "ra_deg", "dec_deg", "v_err_kms", "p_member", "distance_kpc",
           "distance_err_kpc", "mass_msun")
KNOWN_COLUMNS = ("galaxy",) + NUMERIC


class CatalogueError(ValueError):
    """A catalogue that cannot be used; the message names the file (and column) and what to do."""


@dataclass
class Catalogue:
    """One galaxy's tracers, positions in kpc on the plane of the sky relative to the catalogue's origin."""

    name: str
    x_kpc: NDArray[np.float64]
    y_kpc: NDArray[np.float64]
    v_kms: NDArray[np.float64]
    v_err_kms: NDArray[np.float64]
    p_member: NDArray[np.float64]
    mass: NDArray[np.float64] | None = None
    distance_kpc: float | None = None
    distance_err_kpc: float = 0.0
    notes: list[str] = field(default_factory=list)


def _table(path: Path) -> tuple[list[str], dict[str, NDArray], int]:
    """(header, columns by name, number of data rows) of a CSV catalogue; CatalogueError for what cannot be read."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CatalogueError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise CatalogueError(f"{path}: not a text (CSV) file") from None
    plain = _plain_table(text)
    if plain is not None:
        return plain
    header, rows = _read_rows(path, text)
    return header, _columns(path, header, rows), len(rows)


_NOT_PLAIN = (" ", "\t", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x00", '"', "#", "\n\n")
"""What makes a table not plain: whitespace other than the line breaks (fields would need stripping; str.splitlines
also breaks at some), quotes (csv quoting), comments, blank lines, NUL."""


def _plain_table(text: str) -> tuple[list[str], dict[str, NDArray], int] | None:
    """:func:`_table` of a plain table, ~2x faster, or None for any other (the csv module then reads it, and
    words every error).

    Plain: ASCII, none of :data:`_NOT_PLAIN`, known and distinct column names, as many fields on every line as in
    the header, numbers that parse and are finite. The csv module's rows are then ``line.split(",")`` and its
    fields need no strip, so the columns are the same strings, converted by the same ``np.array(..., float64)``.
    """
    if not text.isascii() or text.startswith("\n") or any(c in text for c in _NOT_PLAIN):
        return None
    head, _, body = text.partition("\n")
    body = body[:-1] if body.endswith("\n") else body
    header = head.split(",")
    ncol = len(header)
    if not body or any(h not in KNOWN_COLUMNS for h in header) or len(set(header)) != ncol:
        return None
    n_rows = _plain_rows(body, ncol)
    if n_rows is None:
        return None
    flat = body.replace("\n", ",").split(",")  # every field, row by row
    cols: dict[str, NDArray] = {}
    for j, name in enumerate(header):
        if name == "galaxy":
            cols[name] = np.array(flat[j::ncol], dtype=object)
            continue
        try:
            cols[name] = np.array(flat[j::ncol], dtype=np.float64)
        except ValueError:
            return None
        if not np.all(np.isfinite(cols[name])):
            return None
    return header, cols, n_rows


def _plain_rows(body: str, ncol: int) -> int | None:
    """The number of lines of ``body`` (ASCII, lines split by "\\n") when every line has ``ncol`` comma-separated
    fields, none longer than the csv module accepts; None otherwise. One pass of numpy over the bytes."""
    b = np.frombuffer(body.encode("ascii"), dtype=np.uint8)
    at = np.flatnonzero((b == ord(",")) | (b == ord("\n")))  # every separator, in order
    newline = np.flatnonzero(b[at] == ord("\n"))
    n_rows = newline.size + 1
    # ncol - 1 commas, then a line break (none after the last line): line breaks at separators ncol - 1, 2 ncol - 1…
    if at.size != n_rows * ncol - 1 or not np.array_equal(newline, np.arange(ncol - 1, at.size, ncol)):
        return None
    longest = int(np.diff(np.concatenate([[-1], at, [b.size]])).max()) - 1
    return n_rows if longest <= csv.field_size_limit() else None


def _read_rows(path: Path, text: str) -> tuple[list[str], list[list[str]]]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) < 2:
        raise CatalogueError(f"{path}: needs a header line and at least one row")
    rows = list(csv.reader(lines, skipinitialspace=True))
    header = [h.strip() for h in rows[0]]
    unknown = [h for h in header if h not in KNOWN_COLUMNS]
    if unknown:
        raise CatalogueError(f"{path}: unknown column(s) {unknown}. HINT: galmass reads {list(KNOWN_COLUMNS)} "
                             "(units in the name); rename or drop the others")
    if len(set(header)) != len(header):
        raise CatalogueError(f"{path}: a column name appears twice in the header {header}")
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise CatalogueError(f"{path}: line {i} of the data has {len(row)} fields, the header {len(header)}")
    return header, rows[1:]


def _columns(path: Path, header: list[str], rows: list[list[str]]) -> dict[str, NDArray]:
    cols: dict[str, NDArray] = {}
    for j, name in enumerate(header):
        raw = [r[j].strip() for r in rows]
        if name == "galaxy":
            cols[name] = np.array(raw, dtype=object)
            continue
        try:
            values = np.array(raw, dtype=np.float64)
        except ValueError:
            bad = next(k for k, s in enumerate(raw) if not _is_float(s))
            raise CatalogueError(f"{path}: column '{name}' row {bad + 1}: {raw[bad]!r} is not a number") from None
        if not np.all(np.isfinite(values)):
            bad = np.flatnonzero(~np.isfinite(values))[:5] + 1
            raise CatalogueError(f"{path}: column '{name}' has non-finite values in rows {bad.tolist()}")
        cols[name] = values
    return cols


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def tangent_plane_kpc(ra_deg: NDArray, dec_deg: NDArray, ra0_deg: float, dec0_deg: float, distance_kpc: float
                      ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Gnomonic (tangent-plane) projection about (ra0, dec0), scaled to kpc at ``distance_kpc``.

    x points east (increasing RA), y north. Exact for any field size short of 90 deg from the centre.
    """
    a, d = np.radians(ra_deg), np.radians(dec_deg)
    a0, d0 = np.radians(ra0_deg), np.radians(dec0_deg)
    cos_c = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    xi = np.cos(d) * np.sin(a - a0) / cos_c
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / cos_c
    return xi * distance_kpc, eta * distance_kpc


def _sky_centre(ra: NDArray, dec: NDArray) -> tuple[float, float]:
    """Median sky position [deg], RA taken about its circular mean (a field across RA = 0 stays together)."""
    ra0 = np.degrees(np.angle(np.mean(np.exp(1j * np.radians(ra)))))
    dra = (ra - ra0 + 180.0) % 360.0 - 180.0
    return float((ra0 + np.median(dra)) % 360.0), float(np.median(dec))


def _per_galaxy(path: Path, name: str, cols: dict[str, NDArray], kind: str, distance: tuple[float | None, float],
                centre_deg: tuple[float, float] | None, rng: np.random.Generator) -> Catalogue:
    where = f"{path} (galaxy {name!r})" if "galaxy" in cols else str(path)
    if "v_los_kms" not in cols:
        raise CatalogueError(f"{where}: missing column 'v_los_kms' (have {sorted(cols)})")
    n, notes = len(cols["v_los_kms"]), []
    d_kpc, d_err = _distance(where, cols, distance)
    if "x_kpc" in cols and "y_kpc" in cols:
        x, y = cols["x_kpc"], cols["y_kpc"]
    elif "ra_deg" in cols and "dec_deg" in cols:
        if d_kpc is None:
            raise CatalogueError(f"{where}: sky positions (ra_deg, dec_deg) need a distance. HINT: add a "
                                 "distance_kpc column or pass --distance-kpc (and --distance-err-kpc)")
        ra0, dec0 = centre_deg if centre_deg is not None else _sky_centre(cols["ra_deg"], cols["dec_deg"])
        x, y = tangent_plane_kpc(cols["ra_deg"], cols["dec_deg"], ra0, dec0, d_kpc)
        notes.append(f"sky positions projected about RA={ra0:.5f} deg, Dec={dec0:.5f} deg at D={d_kpc:.4g} kpc")
    elif "R_kpc" in cols and kind == "stars":
        phi = rng.uniform(0, 2 * np.pi, n)
        x, y = cols["R_kpc"] * np.cos(phi), cols["R_kpc"] * np.sin(phi)
        notes.append("only R_kpc given: position angles drawn uniformly (circularised sky map)")
    else:
        need = "x_kpc and y_kpc, ra_deg and dec_deg" + (", or R_kpc" if kind == "stars" else "")
        raise CatalogueError(f"{where}: missing position columns: need {need} (have {sorted(cols)})")
    err = cols.get("v_err_kms", np.zeros(n))
    if np.any(err < 0):
        raise CatalogueError(f"{where}: negative values in column 'v_err_kms'")
    if "v_err_kms" not in cols and kind == "stars":
        notes.append("no v_err_kms column: velocity errors taken as 0 (σ★ not error-corrected)")
    p = cols.get("p_member", np.ones(n))
    if np.any((p < 0) | (p > 1)):
        raise CatalogueError(f"{where}: column 'p_member' must lie in [0, 1] (a probability, not a percentage)")
    mass = cols.get("mass_msun") if kind == "gas" else None
    if mass is not None and np.any(mass < 0):
        raise CatalogueError(f"{where}: negative values in column 'mass_msun'")
    return Catalogue(name, np.asarray(x, float), np.asarray(y, float), cols["v_los_kms"], err, p, mass, d_kpc, d_err,
                     notes)


def _distance(where: str, cols: dict[str, NDArray], given: tuple[float | None, float]) -> tuple[float | None, float]:
    d, e = given
    for key in ("distance_kpc", "distance_err_kpc"):
        if key in cols and np.ptp(cols[key]) > 0:
            raise CatalogueError(f"{where}: column '{key}' must be constant within a galaxy")
    if "distance_kpc" in cols:
        d = float(cols["distance_kpc"][0])
    if "distance_err_kpc" in cols:
        e = float(cols["distance_err_kpc"][0])
    if d is not None and not d > 0:
        raise CatalogueError(f"{where}: distance must be > 0 kpc, got {d}")
    if not e >= 0 or (d is not None and e >= 0.5 * d):
        raise CatalogueError(f"{where}: distance error {e} kpc must be >= 0 and below half the distance {d}")
    return d, e


def read_catalogues(path: str | Path, kind: str = "stars", distance_kpc: float | None = None,
                    distance_err_kpc: float = 0.0, centre_deg: tuple[float, float] | None = None,
                    rng: np.random.Generator | None = None) -> dict[str, Catalogue]:
    """Read a star or gas catalogue into one :class:`Catalogue` per galaxy (ordered as first seen in the file).

    Raises CatalogueError naming the file, galaxy and column, with what to do, for anything it cannot use.
    """
    path = Path(path)
    if path.is_dir():
        return _read_directory(path, kind, distance_kpc, distance_err_kpc, centre_deg, rng)
    header, cols, n_rows = _table(path)
    rng = rng or np.random.default_rng(0)
    blocks = _galaxy_blocks(path, cols["galaxy"]) if "galaxy" in cols else [(path.stem, 0, n_rows)]
    out = {}
    for name, start, stop in blocks:  # slices of the contiguous blocks: one pass over the table, not one per galaxy
        sub = {k: v[start:stop] for k, v in cols.items()}
        out[name] = _per_galaxy(path, name, sub, kind, (distance_kpc, distance_err_kpc), centre_deg, rng)
    return out


def _galaxy_blocks(path: Path, galaxy: NDArray) -> list[tuple[str, int, int]]:
    """(name, first row, end row) of each galaxy's block of rows, in file order.

    A galaxy name in two separate blocks of rows is most likely two galaxies given one name: refused.
    """
    starts = np.flatnonzero(np.r_[True, galaxy[1:] != galaxy[:-1]])
    blocks = galaxy[starts]
    names, counts = np.unique(blocks, return_counts=True)
    if np.any(counts > 1):
        dup = str(names[counts > 1][0])
        rows = (starts[blocks == dup] + 1).tolist()
        raise CatalogueError(f"{path}: galaxy name {dup!r} appears in separate blocks of rows (starting at data rows "
                             f"{rows}). HINT: give each galaxy a unique name, or sort the table by galaxy")
    ends = np.r_[starts[1:], len(galaxy)]
    return [(str(n), int(a), int(b)) for n, a, b in zip(blocks, starts, ends)]


def _read_directory(directory: Path, kind: str, distance_kpc: float | None, distance_err_kpc: float,
                    centre_deg: tuple[float, float] | None, rng: np.random.Generator | None) -> dict[str, Catalogue]:
    """Every ``*.csv`` of a directory (sorted by name); a galaxy name found in two files is an error."""
    files = sorted(directory.glob("*.csv"))
    if not files:
        raise CatalogueError(f"{directory}: a directory without *.csv catalogues")
    out: dict[str, Catalogue] = {}
    seen: dict[str, Path] = {}
    for f in files:
        for name, cat in read_catalogues(f, kind, distance_kpc, distance_err_kpc, centre_deg, rng).items():
            if name in seen:
                raise CatalogueError(f"{f}: galaxy {name!r} is also in {seen[name]}. HINT: galaxy names must be "
                                     "unique across the files of a directory")
            seen[name], out[name] = f, cat
    return out
