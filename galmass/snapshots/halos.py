"""Several haloes of one snapshot: ``galmass ingest --halos FILE`` writes one dataset per halo, ``OUT/halo-<k>/``.

Two kinds of halo list are read:

* **AHF** (Amiga Halo Finder, Knollmann & Knebe 2009) ``*.AHF_halos``: a header line
  ``#ID(1) hostHalo(2) numSubStruct(3) Mvir(4) npart(5) Xc(6) Yc(7) Zc(8) VXc(9) VYc(10) VZc(11) Rvir(12) ...``
  then one halo per line. Used columns, found by name in the header (the number in parentheses is the 1-based
  column): ``ID``, ``Mvir`` [Msun/h] (the haloes are ranked by it, most massive first, k = 0, 1, ...), ``Xc``,
  ``Yc``, ``Zc`` [comoving kpc/h] (the centre) and ``Rvir`` [comoving kpc/h] (shrinking spheres start inside
  Rvir / 2 at the AHF centre). Subhaloes are listed like any halo. For a tipsy snapshot AHF shifts the particles
  into [0, L) before finding haloes (``io_tipsy.c``: by minus the smallest coordinate, i.e. ~L/2 for a full
  box; exactly L/2 with TIPSY_ZOOMDATA) and does not undo it, so L/2 is subtracted here; the shrinking spheres
  absorb the small difference. Gadget coordinates need no shift.
* **A plain list**: one centre ``x, y, z`` per line (commas or blanks; ``#`` starts a comment) in the snapshot's own
  units (Gadget: ckpc/h; tipsy: code lengths), used as given, like ``--centre``; k is the line's rank.

``--max-halos N`` keeps the first N (the N most massive for AHF); ``--task-id I --num-tasks N`` (a SLURM array)
ingests only the haloes with k % N == I. Haloes whose ``halo-<k>/manifest.json`` exists are skipped (a requeued
array task resumes); a halo that cannot be ingested (e.g. no stars) is reported and the others go on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from galmass.config import DataConfig
from galmass.snapshots.formats import LoadedSnapshot, load_snapshot
from galmass.snapshots.gadget import SnapshotError
from galmass.snapshots.tipsy import TipsyUnits

__all__ = ["HaloEntry", "read_halo_list", "read_ahf_halos", "ingest_halos", "halo_dir", "AHF_COLUMNS"]

AHF_COLUMNS = ("ID", "Mvir", "Xc", "Yc", "Zc", "Rvir")
"""AHF_halos columns used: ID, Mvir [Msun/h], Xc, Yc, Zc [comoving kpc/h], Rvir [comoving kpc/h]."""


@dataclass
class HaloEntry:
    """One halo to ingest: its rank k and its centre in physical kpc (box frame)."""

    k: int
    centre_kpc: np.ndarray
    refine_radius_kpc: float | None = None
    """Radius [kpc] of the shrinking spheres started at the centre (None: use the centre as given)."""
    info: dict[str, Any] = field(default_factory=dict)
    """The catalogue's entry, recorded in the manifest's ``source.halo``."""


def halo_dir(out: str | Path, k: int) -> Path:
    """The dataset directory of halo k under ``out``."""
    return Path(out) / f"halo-{k}"


def _ahf_columns(header: str, path: Path) -> dict[str, int]:
    """0-based column of each AHF_COLUMNS entry, from a header like '#ID(1) hostHalo(2) ... Rvir(12) ...'."""
    cols = {}
    for pos, token in enumerate(header.lstrip("#").split()):
        m = re.fullmatch(r"([^()]+)(?:\((\d+)\))?", token)
        if m:
            cols.setdefault(m.group(1), int(m.group(2)) - 1 if m.group(2) else pos)
    missing = [c for c in AHF_COLUMNS if c not in cols]
    if missing:
        raise SnapshotError(f"{path}: AHF header has no column {missing} (found {list(cols)[:14]}...). HINT: an "
                            ".AHF_halos file starts '#ID(1) hostHalo(2) numSubStruct(3) Mvir(4) npart(5) Xc(6) ...'")
    return {c: cols[c] for c in AHF_COLUMNS}


def read_ahf_halos(path: str | Path, loaded: LoadedSnapshot, max_halos: int | None = None) -> list[HaloEntry]:
    """The haloes of an ``.AHF_halos`` file, most massive first (see the module docstring for units and shift)."""
    path = Path(path)
    lines = path.read_text().splitlines()
    if not lines or not lines[0].startswith("#"):
        raise SnapshotError(f"{path}: no AHF header line (starting '#ID(1)')")
    cols = _ahf_columns(lines[0], path)
    rows = [ln.split() for ln in lines[1:] if ln.strip() and not ln.lstrip().startswith("#")]
    need = max(cols.values()) + 1
    short = [i + 2 for i, r in enumerate(rows) if len(r) < need]
    if short:
        raise SnapshotError(f"{path}: line {short[0]} has fewer than {need} columns (Rvir is column "
                            f"{cols['Rvir'] + 1})")
    try:
        table = {c: np.array([float(r[j]) for r in rows]) for c, j in cols.items()}
    except ValueError as err:
        raise SnapshotError(f"{path}: a non-numeric entry in the AHF columns {AHF_COLUMNS} ({err})") from None
    snap = loaded.snapshot
    comoving = snap.a / snap.h  # comoving kpc/h → physical kpc
    shift = 0.5 * snap.box_kpc if loaded.fmt == "tipsy" else 0.0
    order = np.argsort(-table["Mvir"], kind="stable")[:max_halos]
    out = []
    for k, i in enumerate(order):
        centre = np.array([table[c][i] for c in ("Xc", "Yc", "Zc")]) * comoving - shift
        rvir = float(table["Rvir"][i] * comoving)
        out.append(HaloEntry(k, centre, 0.5 * rvir if rvir > 0 else None, {
            "catalogue": str(path.resolve()), "ahf_id": int(table["ID"][i]), "mvir_msun_h": float(table["Mvir"][i]),
            "rvir_kpc": rvir, "ahf_centre_kpc": [float(x) for x in centre]}))
    return out


def read_halo_list(path: str | Path, loaded: LoadedSnapshot, max_halos: int | None = None) -> list[HaloEntry]:
    """The haloes of an AHF_halos file or of a plain list of centres (detected from the first line)."""
    path = Path(path)
    if not path.is_file():
        raise SnapshotError(f"{path}: no such halo list")
    text = path.read_text()
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    if path.name.endswith("AHF_halos") or re.search(r"\bXc\(\d+\)", first):
        return read_ahf_halos(path, loaded, max_halos)
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0].replace(",", " ").split()
        if not body:
            continue
        try:
            xyz = np.array([float(v) for v in body], dtype=np.float64)
        except ValueError:
            xyz = np.array([])
        if xyz.shape != (3,) or not np.all(np.isfinite(xyz)):
            raise SnapshotError(f"{path}: line {lineno} is not a centre 'x, y, z' ({line.strip()!r}). HINT: one "
                                "centre per line in the snapshot's units (Gadget: ckpc/h; tipsy: code lengths)")
        out.append(HaloEntry(len(out), xyz * loaded.snapshot.length_to_kpc, None,
                             {"catalogue": str(path.resolve()), "line": lineno, "centre_file_units": xyz.tolist()}))
    if not out:
        raise SnapshotError(f"{path}: no halo centres in the file")
    return out[:max_halos]


def ingest_halos(
    snapshot: str | Path,
    halos: str | Path,
    out: str | Path,
    cfg: DataConfig,
    *,
    max_halos: int | None = None,
    task_id: int | None = None,
    num_tasks: int | None = None,
    paramfile: str | Path | None = None,
    tipsy_units: TipsyUnits | None = None,
) -> list[tuple[int, Path | None, str]]:
    """Ingest the listed haloes of one snapshot (read once) into ``out/halo-<k>/``, each a one-galaxy dataset.

    Returns (k, manifest path or None, 'ingested' | 'skipped: ...' | 'failed: <reason>') for this task's haloes.
    Raises SnapshotError for an unreadable snapshot or halo list, ValueError for bad task or halo counts.
    """
    from galmass.datasets.schema import MANIFEST
    from galmass.snapshots.ingest import ingest_snapshot

    if max_halos is not None and max_halos < 1:
        raise ValueError(f"--max-halos must be >= 1, got {max_halos}")
    if (task_id is None) != (num_tasks is None) or (num_tasks is not None and not 0 <= task_id < num_tasks):
        raise ValueError(f"need 0 <= --task-id < --num-tasks together, got {task_id} and {num_tasks}")
    loaded = load_snapshot(snapshot, paramfile=paramfile, tipsy_units=tipsy_units)
    entries = read_halo_list(halos, loaded, max_halos)
    results: list[tuple[int, Path | None, str]] = []
    for h in entries:
        if num_tasks is not None and h.k % num_tasks != task_id:
            continue
        target = halo_dir(out, h.k)
        if (target / MANIFEST).exists():
            results.append((h.k, target / MANIFEST, "skipped: already ingested"))
            continue
        try:
            manifest = ingest_snapshot(snapshot, target, cfg, loaded=loaded, centre_kpc=tuple(h.centre_kpc),
                                       refine_radius_kpc=h.refine_radius_kpc, source_extra={"halo": {"k": h.k,
                                                                                                   **h.info}})
        except (SnapshotError, ValueError) as err:
            results.append((h.k, None, f"failed: {err}"))
            continue
        results.append((h.k, manifest, "ingested"))
    return results
