"""Atomic file replacement: readers see the old file or the complete new one, never a torn write.

The pattern is: write a temporary file in the *same directory* (so the final rename cannot cross a file system),
``fsync`` it, ``os.replace`` it onto the target (atomic on POSIX), then ``fsync`` the directory so the rename
itself survives a crash. If the writer raises, the temporary file is removed and an existing target is untouched.
A job killed mid-write (preemption, SIGKILL at the time limit) leaves at worst a stray ``.*.tmp`` file, which
readers that look for the real name never see.

Example
-------
>>> with atomic_path("run/model.pt") as tmp:      # doctest: +SKIP
...     torch.save(state, tmp)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "fsync_directory",
           "sync_all", "remove_stale_temporaries", "DiskFullError"]

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")
LOW_SPACE_BYTES = 1 << 20
"""A write that fails with less free space than this on its file system is reported as a full disk."""


class DiskFullError(OSError):
    """A write failed because the file system is full; the message names the file and the free space."""


def _disk_full(target: Path, exc: BaseException) -> DiskFullError | None:
    """A DiskFullError naming ``target`` when ``exc`` was caused by a full disk (errno, or no space left)."""
    free = None
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(target.parent).free
    if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < LOW_SPACE_BYTES):
        where = f"{free} bytes free" if free is not None else "free space unknown"
        return DiskFullError(errno.ENOSPC, f"cannot write {target}: No space left on device ({where} on its file "
                             f"system; the previous version of the file, if any, is intact). HINT: free space or "
                             f"point the output elsewhere, then rerun: finished work is kept", str(target))
    return None


def remove_stale_temporaries(directory: str | os.PathLike[str], max_age_s: float = 7 * 86400) -> list[Path]:
    """Delete temporaries of :func:`atomic_path` in ``directory`` left by dead writers; returns what was deleted.

    A temporary is stale when it was made on this host by a process that no longer exists, or (any host: a
    requeued job may land on another node) when it is older than ``max_age_s``. Live writers' files are kept.
    """
    d = Path(directory)
    removed: list[Path] = []
    if not d.is_dir():
        return removed
    now = time.time()
    for p in d.iterdir():
        m = _TMP.match(p.name)
        if m is None:
            continue
        with contextlib.suppress(OSError):
            dead = m["host"] == _HOST and not _pid_alive(int(m["pid"]))
            if dead or now - p.stat().st_mtime > max_age_s:
                p.unlink()
                removed.append(p)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Flush a directory entry (a rename or a new file) to disk; a no-op where directories cannot be opened."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except OSError:
        return  # e.g. Windows: directories cannot be fsync'ed; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass  # some network file systems reject fsync on directories; nothing more can be done
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path`` atomically.

    Parameters
    ----------
    path : str or PathLike
        Final file name. Its directory must exist.
    durable : bool
        fsync the file and its directory (default). ``False`` keeps the rename atomic (no reader ever sees a
        partial file) but leaves durability to the caller, who writes many files and syncs once
        (:func:`sync_all`) before a durable marker file: ~8 ms of fsync per file otherwise dominates.

    Yields
    ------
    Path
        A not-yet-existing temporary file ``.<name>.<host>.<pid>.<random>.tmp`` in the same directory; the body must
        create it (any writer: ``open``, ``torch.save``, ``h5py.File``, ``numpy.save`` with a full file name).

    Raises
    ------
    FileNotFoundError
        If the directory does not exist, or the body did not create the temporary file.

    Notes
    -----
    On an exception in the body the temporary file is deleted and the exception propagates; any existing
    ``path`` keeps its old content. The file is not created with ``mkstemp`` so that it gets the usual
    permissions (umask), as a plain ``open`` would.
    """
    target = Path(path)
    directory = target.parent
    if not directory.is_dir():
        raise FileNotFoundError(
            f"cannot write {target}: directory {directory} does not exist. HINT: create it first "
            "(Path(...).mkdir(parents=True, exist_ok=True))."
        )
    # pid + random suffix: concurrent writers (two ranks, a requeued job overlapping its predecessor) never share
    # a temporary file.
    # The host is part of the name so that stale temporaries can be told from live ones on shared file systems.
    tmp = directory / f".{target.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(
                f"atomic_path({target}): the body did not create the temporary file {tmp}. "
                "HINT: write to the yielded path, not to the final one."
            )
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        # BaseException: KeyboardInterrupt / SystemExit from a preemption handler must not leave the temp behind.
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        full = _disk_full(target, exc) if isinstance(exc, Exception) else None
        if full is not None:  # e.g. torch.save's "basic_ios::clear: iostream error" names neither file nor cause
            raise full from exc
        raise
    if durable:
        fsync_directory(directory)


def sync_all() -> None:
    """Flush every file written so far to disk (one ``sync`` for files written with ``durable=False``)."""
    if hasattr(os, "sync"):
        os.sync()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> Path:
    """Atomically replace ``path`` with ``data``. Returns the final path."""
    with atomic_path(path, durable=durable) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8", *,
                      durable: bool = True) -> Path:
    """Atomically replace ``path`` with ``text`` (default UTF-8). Returns the final path."""
    return atomic_write_bytes(path, text.encode(encoding), durable=durable)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2,
                      sort_keys: bool = True, durable: bool = True) -> Path:
    """Atomically replace ``path`` with ``obj`` as JSON (trailing newline). Returns the final path.

    ``NaN``/``Infinity`` are rejected (``ValueError``) instead of being written as non-standard JSON: other
    tools cannot read them, and a NaN in a manifest or a metric file is a bug to surface, not to store.
    Serialisation happens before the file is touched, so a failure leaves the old file in place.
    """
    try:
        text = json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=False)
    except ValueError as exc:
        raise ValueError(
            f"cannot write {path}: {exc}. HINT: replace NaN/inf by None or a finite value before saving."
        ) from exc
    return atomic_write_text(path, text + "\n", durable=durable)
