"""Tipsy snapshots (gasoline / gasoline2 / ChaNGa, as NIHAO writes them) through pynbody: read into the same
:class:`~galmass.snapshots.gadget.Snapshot` that the Gadget reader returns, so ``galmass ingest`` reuses all of its
steps, and write (for the round-trip tests).

File layout (standard tipsy binary, as :mod:`pynbody.snapshot.tipsy` reads it):

* a 32-byte header: ``time`` (the scale factor a in comoving runs), ``nbodies``, ``ndim`` = 3, ``nsph``, ``ndark``,
  ``nstar`` (+ padding), big-endian (standard) or native;
* then the gas records (mass, pos[3], vel[3], rho, temp, eps, metals, phi), the dark-matter records (mass, pos,
  vel, eps, phi) and the star records (mass, pos, vel, metals, tform, eps, phi): float32, except pos / vel in
  float64 when the run's ``bDoublePos`` / ``bDoubleVel`` are set.
* **Units are not in the file**: the run's ``.param`` file gives them (pynbody looks for ``*.param`` next to the
  snapshot, then in its parent directory): ``dKpcUnit`` (code length in comoving kpc, the box side), ``dMsolUnit``
  (code mass in Msun), G = 1 (so the velocity and time units follow), ``dHubble0`` (H0 in code units), ``dOmega0``,
  ``dLambda`` and ``bComove`` (1: comoving run, header time = a). Without them pynbody falls back to G = 1, kpc,
  1e10 Msun, which is wrong for NIHAO; :func:`read_tipsy` refuses that and asks for the ``.param`` file or
  explicit :class:`TipsyUnits`.

:func:`read_tipsy` converts with pynbody's own unit system (``physical_units()``, then ``in_units('kpc')``,
``'km s**-1'``, ``'Msol'``, ``'Gyr'``): positions in physical kpc (still in the box frame, origin at the box
centre), peculiar velocities in km/s, masses in Msun. Families map onto Gadget particle types: gas → 0, dark matter
of the smallest particle mass → 1 (high resolution), heavier dark matter → 2 (a zoom's low-resolution region),
stars → 4 with ``formation_a`` = a(tform) of the snapshot's cosmology; tform <= 0 (ChaNGa's black holes carry
tform < 0) is kept as a non-positive ``formation_a``, i.e. "not a star", as Gadget's wind particles are.
"""

from __future__ import annotations

import gzip
import math
import struct
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from galmass.snapshots.gadget import Particles, Snapshot, SnapshotError

__all__ = ["TipsyUnits", "parse_tipsy_units", "is_tipsy", "tipsy_paramfile", "read_tipsy", "write_tipsy",
           "TIPSY_PARAM_KEYS"]

TIPSY_PARAM_KEYS = ("dKpcUnit", "dMsolUnit", "dHubble0", "dOmega0", "dLambda", "bComove")
"""The ``.param`` entries the reader needs (units, cosmology, and that the run is comoving)."""
_PARAM_MEANING = {"dKpcUnit": "code length [comoving kpc]", "dMsolUnit": "code mass [Msun]",
                  "dHubble0": "H0 in code units (gives h)", "dOmega0": "Omega_matter", "dLambda": "Omega_Lambda",
                  "bComove": "1 for a comoving (cosmological) run"}
_G_KPC = 4.30091727e-6
"""G [kpc (km/s)^2 / Msun]: only for the first guess of dHubble0 (pynbody's own value is then used)."""
_UNITS_HINT = ("HINT: put the run's .param file (gasoline/ChaNGa parameter file) next to the snapshot, or pass "
               "--paramfile RUN.param, or give the units explicitly: --tipsy-units "
               "length_kpc=L,mass_msun=M,h=H,omega_m=OM,omega_l=OL (dKpcUnit, dMsolUnit, h, Omega_m, Omega_Lambda)")


@dataclass(frozen=True)
class TipsyUnits:
    """Explicit units of a tipsy run whose ``.param`` file is missing (G = 1 in code units, comoving run)."""

    length_kpc: float
    """Code length unit [comoving kpc] (``dKpcUnit``, the box side)."""
    mass_msun: float
    """Code mass unit [Msun] (``dMsolUnit``)."""
    h: float
    """Hubble parameter h (H0 = 100 h km/s/Mpc)."""
    omega_m: float
    """Omega_matter."""
    omega_l: float
    """Omega_Lambda."""


def parse_tipsy_units(text: str) -> TipsyUnits:
    """'length_kpc=5e4,mass_msun=1.5e16,h=0.67,omega_m=0.32,omega_l=0.68' → TipsyUnits (all five required)."""
    names = ("length_kpc", "mass_msun", "h", "omega_m", "omega_l")
    values: dict[str, float] = {}
    for item in (p for p in text.replace(" ", "").split(",") if p):
        key, _, value = item.partition("=")
        try:
            values[key] = float(value)
        except ValueError:
            values[key] = float("nan")
    bad = [k for k in names if not (np.isfinite(values.get(k, np.nan)) and values.get(k, -1.0) > 0)]
    unknown = sorted(set(values) - set(names))
    if bad or unknown:
        raise ValueError(f"--tipsy-units {text!r}: missing or non-positive {bad}, unknown {unknown}. HINT: "
                         "--tipsy-units length_kpc=50000,mass_msun=1.5e16,h=0.671,omega_m=0.3175,omega_l=0.6825 "
                         "(dKpcUnit [comoving kpc], dMsolUnit [Msun], h, Omega_m, Omega_Lambda)")
    return TipsyUnits(**{k: values[k] for k in names})


def _open(path: Path) -> Any:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _header(path: Path) -> tuple[float, int, int, int, str] | None:
    """(time, ngas, ndark, nstar, byte order) of a tipsy file, or None when the 32 bytes are no tipsy header."""
    try:
        with _open(path) as fh:
            raw = fh.read(32)
    except OSError:
        return None
    if len(raw) != 32:
        return None
    for order in (">", "<"):
        t, n, ndim, ng, nd, ns, pad = struct.unpack(order + "diiiiii", raw)
        if ndim != 3 or min(ng, nd, ns) < 0:
            continue
        if n != ng + nd + ns:  # more than 2^31 particles: the high bytes live in the padding (as pynbody reads it)
            n, ng = n + ((pad & 0xFF) << 32), ng + ((pad & 0xFF00) << 24)
            nd, ns = nd + ((pad & 0xFF0000) << 16), ns + ((pad & 0xFF000000) << 8)
        if n == ng + nd + ns and n > 0 and np.isfinite(t):
            return float(t), ng, nd, ns, order
    return None


def is_tipsy(path: str | Path) -> bool:
    """True when ``path`` is a file that starts with a consistent tipsy header (3 dimensions, counts adding up)."""
    path = Path(path)
    return path.is_file() and _header(path) is not None


def _read_param(path: Path) -> dict[str, str]:
    """``key = value`` lines of a gasoline/ChaNGa .param file ('#' starts a comment), as pynbody parses them."""
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.split("#", 1)[0].partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def tipsy_paramfile(path: str | Path, paramfile: str | Path | None = None) -> Path | None:
    """The ``.param`` file of a tipsy snapshot: ``paramfile`` if given, else the one ``*.param`` next to the
    snapshot, else the one in its parent directory (pynbody's search order); None when there is none.

    Raises SnapshotError when ``paramfile`` does not exist or a directory holds several ``*.param`` files.
    """
    path = Path(path)
    if paramfile is not None:
        if not Path(paramfile).is_file():
            raise SnapshotError(f"{paramfile}: no such .param file (given for tipsy snapshot {path})")
        return Path(paramfile)
    for folder in (path.resolve().parent, path.resolve().parent.parent):
        found = sorted(folder.glob("*.param"))
        if len(found) > 1:
            raise SnapshotError(f"{path}: several .param files in {folder} ({[f.name for f in found]}); which one "
                                "holds the units is ambiguous. HINT: pass --paramfile RUN.param")
        if found:
            return found[0]
    return None


def _check_param(param: dict[str, str], where: Path, snapshot: Path) -> None:
    for key in TIPSY_PARAM_KEYS:
        try:
            value = float(param[key])
        except KeyError:
            raise SnapshotError(f"{snapshot}: its parameter file {where} has no '{key}' ({_PARAM_MEANING[key]}). "
                                f"{_UNITS_HINT}") from None
        except ValueError:
            raise SnapshotError(f"{snapshot}: '{key}' = {param[key]!r} in {where} is not a number") from None
        if key == "bComove" and value == 0:
            raise SnapshotError(f"{snapshot}: bComove = 0 in {where}: a non-cosmological run (header time is not a "
                                "scale factor), which galmass does not support (as for Gadget)")
        if key in ("dKpcUnit", "dMsolUnit", "dHubble0") and not (np.isfinite(value) and value > 0):
            raise SnapshotError(f"{snapshot}: '{key}' = {value} in {where} must be > 0 ({_PARAM_MEANING[key]})")


def _param_text(units: TipsyUnits, double_pos: bool, double_vel: bool, dhubble0: float | None = None) -> str:
    """A minimal gasoline .param for these units; dHubble0 from G = 1 code units unless given."""
    if dhubble0 is None:
        v_unit = math.sqrt(_G_KPC * units.mass_msun / units.length_kpc)  # [km/s] of G = 1 code units
        dhubble0 = 0.1 * units.h * units.length_kpc / v_unit  # H0 = 0.1 h km/s/kpc in code units
    return (f"# tipsy units for pynbody (written by galmass)\ndKpcUnit = {units.length_kpc!r}\n"
            f"dMsolUnit = {units.mass_msun!r}\ndHubble0 = {dhubble0!r}\ndOmega0 = {units.omega_m!r}\n"
            f"dLambda = {units.omega_l!r}\nbComove = 1\n" + "bDoublePos = 1\n" * double_pos
            + "bDoubleVel = 1\n" * double_vel)  # pynbody reads any value, even 0, as true: omit the false ones


def _expected_sizes(ng: int, nd: int, ns: int) -> dict[int, list[tuple[bool, bool]]]:
    """File size [bytes] → the (double pos, double vel) precisions of a standard tipsy file that give it."""
    out: dict[int, list[tuple[bool, bool]]] = {}
    for dp in (False, True):
        for dv in (False, True):
            pv = 3 * (8 if dp else 4) + 3 * (8 if dv else 4)
            out.setdefault(32 + ng * (pv + 24) + nd * (pv + 12) + ns * (pv + 20), []).append((dp, dv))
    return out


def _load(path: Path, param: Path) -> Any:
    import pynbody

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sim = pynbody.load(str(path), paramfile=str(param))
            for key in ("pos", "vel", "mass"):
                sim[key]  # load now (pynbody loads lazily), while the parameter file certainly exists
            if len(sim.star):
                sim.star["tform"]
    except Exception as err:  # noqa: BLE001 - pynbody raises many types; the message names the file
        raise SnapshotError(f"{path}: pynbody could not read the tipsy file ({type(err).__name__}: {err})") from None
    return sim


def _formation_a(sim: Any, tform_gyr: NDArray[np.float64]) -> NDArray[np.float64]:
    """Scale factor at cosmic time tform [Gyr] (snapshot cosmology, pynbody's age(z)); tform <= 0 is kept."""
    from pynbody.analysis import cosmology

    a_grid = np.geomspace(1e-3, 1.5, 600)
    ages = np.asarray(cosmology.age(sim, z=1.0 / a_grid - 1.0, unit="Gyr"), dtype=np.float64)
    out = np.array(tform_gyr, dtype=np.float64)
    pos = out > 0
    out[pos] = np.exp(np.interp(np.log(out[pos]), np.log(ages), np.log(a_grid)))
    return out


def _family_arrays(sim: Any, fam: str, n: int, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pos [kpc], vel [km/s], mass [Msun]) of one family, checked for shapes, finiteness and positive masses."""
    sub = getattr(sim, fam)
    arrays = (np.asarray(sub["pos"].in_units("kpc"), dtype=np.float64),
              np.asarray(sub["vel"].in_units("km s**-1"), dtype=np.float64),
              np.asarray(sub["mass"].in_units("Msol"), dtype=np.float64))
    for name, arr, shape in zip(("pos", "vel", "mass"), arrays, ((n, 3), (n, 3), (n,))):
        if arr.shape != shape:
            raise SnapshotError(f"{path}: {fam} '{name}' has shape {arr.shape}, but the header says {n} {fam} "
                                f"particles (expected {shape})")
        if not np.all(np.isfinite(arr)):
            raise SnapshotError(f"{path}: {fam} '{name}' holds non-finite values")
    if np.any(arrays[2] <= 0):
        raise SnapshotError(f"{path}: {fam} 'mass' holds non-positive masses")
    return arrays


def _resolve_units(path: Path, counts: tuple[int, int, int], paramfile: str | Path | None,
                   units: TipsyUnits | None, tmp: Path) -> Path:
    """The .param file pynbody is to read: the run's (checked), or one written to ``tmp`` for explicit units."""
    sizes = _expected_sizes(*counts)
    size = None if path.suffix == ".gz" else path.stat().st_size
    if size is not None and size not in sizes:
        raise SnapshotError(f"{path}: the file has {size} bytes, but its header (nsph, ndark, nstar) = {counts} "
                            f"implies one of {sorted(sizes)} (float or double positions/velocities). HINT: the "
                            "file is truncated or not a standard tipsy file")
    if units is not None:
        options = sizes.get(size, [(False, False)])  # pos-only and vel-only double give one size: pos is usual
        double = (True, False) if (True, False) in options else options[0]
        param = tmp / "units.param"
        param.write_text(_param_text(units, *double))
        return param
    param = tipsy_paramfile(path, paramfile)
    if param is None:
        raise SnapshotError(f"{path}: no unit information: no .param file (dKpcUnit, dMsolUnit, dHubble0, dOmega0, "
                            "dLambda, bComove) next to the snapshot or in its parent directory, and pynbody would "
                            f"silently use G = 1, kpc, 1e10 Msun. {_UNITS_HINT}")
    values = _read_param(param)
    _check_param(values, param, path)
    try:
        want = (float(values.get("bDoublePos", 0)) != 0, float(values.get("bDoubleVel", 0)) != 0)
    except ValueError:
        raise SnapshotError(f"{param}: bDoublePos / bDoubleVel must be 0 or 1") from None
    if size is not None:
        if want not in sizes[size]:
            raise SnapshotError(f"{path}: the file size implies (double pos, double vel) in {sizes[size]}, but "
                                f"{param} says bDoublePos, bDoubleVel = {want}. HINT: is it this run's .param?")
    return _pynbody_param(param, tmp)


def _pynbody_param(param: Path, tmp: Path) -> Path:
    """``param``, or a copy in ``tmp`` without its 'bDoublePos = 0' / 'bDoubleVel = 0' lines: pynbody tests the
    string values, so even "0" would make it read float64 positions / velocities."""
    keep, dropped = [], False
    for line in param.read_text(errors="replace").splitlines():
        key, _, value = line.split("#", 1)[0].partition("=")
        try:
            zero = key.strip() in ("bDoublePos", "bDoubleVel") and float(value) == 0
        except ValueError:
            zero = False
        dropped |= zero
        if not zero:
            keep.append(line)
    if not dropped:
        return param
    (tmp / param.name).write_text("\n".join(keep) + "\n")
    return tmp / param.name


def _cosmology(sim: Any, path: Path, units: TipsyUnits | None) -> tuple[float, float, float, float]:
    """(a, h, Omega_m, Omega_Lambda) from the snapshot properties (explicit units override h and the Omegas)."""
    props = sim.properties
    if units is not None:
        props["h"], props["omegaM0"], props["omegaL0"] = units.h, units.omega_m, units.omega_l
    try:
        a, h = float(props["a"]), float(props["h"])
        omega_m, omega_l = float(props["omegaM0"]), float(props["omegaL0"])
    except KeyError as err:
        raise SnapshotError(f"{path}: the snapshot has no property {err} (scale factor / cosmology from the header "
                            f"and the .param file). {_UNITS_HINT}") from None
    if not (np.isfinite(a) and 0 < a <= 1.0 + 1e-9):
        raise SnapshotError(f"{path}: header time a = {a} is not a scale factor in (0, 1]")
    if not (np.isfinite(h) and h > 0):
        raise SnapshotError(f"{path}: h = {h} (from dHubble0) must be > 0")
    return a, h, omega_m, omega_l


def read_tipsy(path: str | Path, *, paramfile: str | Path | None = None, units: TipsyUnits | None = None
               ) -> Snapshot:
    """Read a tipsy snapshot with pynbody into physical units (see the module docstring).

    Parameters
    ----------
    path : str or Path
        The tipsy file (``.gz`` too).
    paramfile : str or Path, optional
        The run's ``.param`` file (default: the one ``*.param`` next to the snapshot or in its parent directory).
    units : TipsyUnits, optional
        Explicit units when the ``.param`` file is lost (they take precedence over any ``.param`` file).

    Returns
    -------
    Snapshot
        ``a``, ``h`` and the Omegas from the snapshot properties; ``length_to_kpc`` = dKpcUnit × a (code length →
        physical kpc; centres in the file's units are in code lengths, box = 1, origin at the box centre);
        ``box_kpc`` = dKpcUnit × a; types 0 (gas), 1 (high-resolution DM), 2 (heavier DM), 4 (stars, with
        ``formation_a``), in physical kpc, km/s (peculiar) and Msun.

    Raises
    ------
    SnapshotError
        Not a tipsy file, no star family, a truncated file, missing unit information (the message names the
        missing ``.param`` entry and the fix), or arrays that contradict the header.
    """
    path = Path(path)
    head = _header(path) if path.is_file() else None
    if head is None:
        raise SnapshotError(f"{path}: not a tipsy file (no 32-byte header with ndim = 3 and nbodies = nsph + ndark "
                            "+ nstar)")
    _, ng, nd, ns, _ = head
    if ns == 0:
        raise SnapshotError(f"{path}: the tipsy file has no star family (header nstar = 0). HINT: galmass needs a "
                            "stellar tracer; is this a dark-matter-only run?")
    with tempfile.TemporaryDirectory() as tmp:
        sim = _load(path, _resolve_units(path, (ng, nd, ns), paramfile, units, Path(tmp)))
    a, h, omega_m, omega_l = _cosmology(sim, path, units)
    ctx = sim.conversion_context()
    length = float(sim["pos"].units.ratio("kpc", **ctx))
    box = float(sim.properties["boxsize"].ratio("kpc", **ctx)) if "boxsize" in sim.properties else 0.0
    sim.physical_units()
    snap = Snapshot(a=a, h=h, omega_m=omega_m, omega_l=omega_l, box_kpc=box, length_to_kpc=length)
    if ng:
        snap.types[0] = Particles(*_family_arrays(sim, "gas", ng, path))
    if nd:
        pos, vel, mass = _family_arrays(sim, "dm", nd, path)
        hires = mass <= mass.min() * (1.0 + 1e-5)  # float32 masses: equal ones are bit-identical
        snap.types[1] = Particles(pos[hires], vel[hires], mass[hires])
        if not hires.all():
            snap.types[2] = Particles(pos[~hires], vel[~hires], mass[~hires])
    pos, vel, mass = _family_arrays(sim, "star", ns, path)
    tform = np.asarray(sim.star["tform"].in_units("Gyr"), dtype=np.float64)
    if tform.shape != (ns,) or not np.all(np.isfinite(tform)):
        raise SnapshotError(f"{path}: star 'tform' has shape {tform.shape} or non-finite values (expected ({ns},))")
    snap.types[4] = Particles(pos, vel, mass, formation_a=_formation_a(sim, tform))
    return snap


def _calibrate(units: TipsyUnits, a: float, double: bool, tmp: Path) -> tuple[dict[str, float], str, Any]:
    """pynbody's own conversions for these units: ({array: code → kpc, km/s, Msun, Gyr}, .param text, a probe
    snapshot carrying the cosmology). dHubble0 is adjusted once so that pynbody's h equals ``units.h``."""
    import pynbody

    dhubble0 = None
    for _ in range(2):
        text = _param_text(units, double, double, dhubble0)
        (tmp / "probe.param").write_text(text)
        probe = pynbody.new(gas=1, dm=1, star=1)
        probe.properties["a"] = a
        for key in ("eps", "phi", "rho", "temp", "metals", "tform"):
            probe[key] = np.zeros(3)
        probe.write(fmt=pynbody.snapshot.tipsy.TipsySnap, filename=str(tmp / "probe"), double_pos=double,
                    double_vel=double)
        sim = _load(tmp / "probe", tmp / "probe.param")
        dhubble0 = float(_read_param(tmp / "probe.param")["dHubble0"]) * units.h / float(sim.properties["h"])
    ctx = sim.conversion_context()
    ratios = {key: float(sim[key].units.ratio(u, **ctx)) for key, u in (("pos", "kpc"), ("vel", "km s**-1"),
                                                                          ("mass", "Msol"))}
    ratios["tform"] = float(sim.star["tform"].units.ratio("Gyr", **ctx))
    ratios["eps"] = float(sim["eps"].units.ratio("kpc", **ctx))
    return ratios, text, sim


def _fill(fam: Any, types: list[Particles], ratios: dict[str, float], offset: np.ndarray, bulk: np.ndarray) -> None:
    """Code-unit arrays of one family from physical particles (positions shifted by ``offset``)."""
    pos = np.concatenate([np.asarray(p.pos, dtype=np.float64) for p in types]) + offset
    fam["pos"] = pos / ratios["pos"]
    fam["vel"] = (np.concatenate([np.asarray(p.vel, dtype=np.float64) for p in types]) + bulk) / ratios["vel"]
    fam["mass"] = np.concatenate([np.asarray(p.mass, dtype=np.float64) for p in types]) / ratios["mass"]
    fam["eps"] = np.full(len(pos), 0.1 / ratios["eps"])  # 100 pc softening (not used by galmass)
    fam["phi"] = np.zeros(len(pos))


def write_tipsy(
    path: str | Path,
    types: dict[int, Particles],
    *,
    a: float = 1.0,
    h: float = 0.7,
    omega_m: float = 0.3,
    omega_l: float = 0.7,
    length_kpc: float = 50_000.0,
    mass_msun: float = 1e16,
    offset_kpc: tuple[float, float, float] = (0.0, 0.0, 0.0),
    bulk_kms: tuple[float, float, float] = (0.0, 0.0, 0.0),
    double: bool = True,
    paramfile: bool = True,
) -> list[Path]:
    """Write particles as a tipsy snapshot with pynbody (plus the run's ``.param`` file) in gasoline units.

    Parameters
    ----------
    path : str or Path
        The snapshot to write (e.g. ``g1.00512``); the parameter file is ``<name up to the first dot>.param`` beside.
    types : dict {type: Particles}
        Physical positions [kpc] relative to the galaxy, velocities [km/s], masses [Msun] (e.g.
        :func:`galmass.snapshots.galaxy_particles`): 0 → gas, 1 and 2 → dark matter (in that order), 4 → stars
        (``formation_a`` → tform = cosmic age at a [Gyr]; ``formation_a`` <= 0 is written as tform <= 0).
    a, h, omega_m, omega_l : float
        Scale factor (the header time) and cosmology (``dHubble0`` is set so that pynbody reads back h).
    length_kpc, mass_msun : float
        ``dKpcUnit`` [comoving kpc] (the box side; positions are written in [-1/2, 1/2)) and ``dMsolUnit`` [Msun].
    offset_kpc, bulk_kms : 3-tuples
        The galaxy is placed at ``offset_kpc`` [physical kpc from the box centre] moving with ``bulk_kms`` [km/s].
    double : bool
        Positions and velocities in float64 (``bDoublePos`` / ``bDoubleVel``); masses are float32 in any tipsy file.
    paramfile : bool
        Write the ``.param`` file (False: a snapshot without unit information, as when it was lost).

    Returns
    -------
    list of Path
        The snapshot and (if written) the parameter file.
    """
    import pynbody

    path = Path(path)
    if not 0 < a <= 1 or not h > 0:
        raise ValueError(f"need 0 < a <= 1 and h > 0, got a={a}, h={h}. HINT: a = 1/(1+z)")
    if set(types) - {0, 1, 2, 4}:
        raise ValueError(f"tipsy holds gas (0), dark matter (1, 2) and stars (4), got types {sorted(types)}")
    if 4 in types and types[4].formation_a is None:
        raise ValueError("stars (type 4) need formation_a (formation scale factor; <= 0: not a star) for tform")
    offset, bulk = np.asarray(offset_kpc, dtype=np.float64), np.asarray(bulk_kms, dtype=np.float64)
    half_box = 0.5 * length_kpc * a
    if any(len(p.pos) and np.max(np.abs(np.asarray(p.pos) + offset)) >= half_box for p in types.values()):
        raise ValueError(f"particles lie outside the box (|x| >= {half_box:g} physical kpc from its centre). HINT: "
                         "raise length_kpc or move offset_kpc")
    units = TipsyUnits(length_kpc, mass_msun, h, omega_m, omega_l)
    families = {"gas": [types[0]] if 0 in types else [], "dm": [types[t] for t in (1, 2) if t in types],
                "star": [types[4]] if 4 in types else []}
    counts = {fam: sum(len(p.mass) for p in parts) for fam, parts in families.items()}
    with tempfile.TemporaryDirectory() as tmp:
        ratios, text, probe = _calibrate(units, a, double, Path(tmp))
        from pynbody.analysis import cosmology

        sim = pynbody.new(**{fam: n for fam, n in counts.items() if n})
        sim.properties["a"] = a
        for fam, parts in families.items():
            if counts[fam]:
                _fill(getattr(sim, fam), parts, ratios, offset, bulk)
        if counts["gas"]:
            for key, value in (("rho", 0.0), ("temp", 1e4), ("metals", 0.0)):
                sim.gas[key] = np.full(counts["gas"], value)
        if counts["star"]:
            form = np.asarray(types[4].formation_a, dtype=np.float64)
            born = form > 0
            tform = form.copy()  # <= 0 stays <= 0 (not a star)
            tform[born] = np.asarray(cosmology.age(probe, z=1.0 / form[born] - 1.0, unit="Gyr")) / ratios["tform"]
            sim.star["tform"] = tform
            sim.star["metals"] = np.zeros(counts["star"])
        path.parent.mkdir(parents=True, exist_ok=True)
        sim.write(fmt=pynbody.snapshot.tipsy.TipsySnap, filename=str(path), double_pos=double, double_vel=double)
    files = [path]
    if paramfile:
        files.append(path.parent / (path.name.split(".")[0] + ".param"))
        files[1].write_text(text)
    return files
