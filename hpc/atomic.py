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
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "fsync_directory"]


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
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path`` atomically.

    Parameters
    ----------
    path : str or PathLike
        Final file name. Its directory must exist.

    Yields
    ------
    Path
        A not-yet-existing temporary file ``.<name>.<pid>.<random>.tmp`` in the same directory; the body must
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
    tmp = directory / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(
                f"atomic_path({target}): the body did not create the temporary file {tmp}. "
                "HINT: write to the yielded path, not to the final one."
            )
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        # BaseException: KeyboardInterrupt / SystemExit from a preemption handler must not leave the temp behind.
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_directory(directory)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``. Returns the final path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Atomically replace ``path`` with ``text`` (default UTF-8). Returns the final path."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2,
                      sort_keys: bool = True) -> Path:
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
    return atomic_write_text(path, text + "\n")
