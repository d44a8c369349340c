"""An exclusive, crash-safe lock on a directory: one writer per run directory or dataset.

Two ``galmass train`` processes on one run directory (or two ``galmass mock`` into one dataset) would both pass
every config check and interleave their files. :class:`DirectoryLock` takes a POSIX record lock
(``fcntl.lockf``, which also works on NFSv4 and Lustre, unlike ``flock`` on some mounts) on a ``.lock`` file. The
kernel releases it when the process dies, SIGKILL included, so a crashed run never leaves a stale lock; the file
records who holds it (host, pid, start time, command) for the message the second process prints.

Example
-------
>>> with DirectoryLock("runs/x", what="galmass train"):     # doctest: +SKIP
...     train()
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["DirectoryLock", "LockedError", "LOCK_NAME"]

LOCK_NAME = ".lock"


class LockedError(RuntimeError):
    """The directory is locked by another live process; the message names it."""


class DirectoryLock:
    """Hold ``directory/<name>`` locked while in use (re-entrant within one object, not across processes).

    Parameters
    ----------
    directory : str or PathLike
        Directory to protect; created if missing.
    what : str
        What takes the lock, for the message of a second process (e.g. ``"galmass train"``).
    name : str
        Lock file name inside the directory (default ``.lock``; array tasks use one per task).
    """

    def __init__(self, directory: str | os.PathLike[str], what: str, name: str = LOCK_NAME) -> None:
        self.path = Path(directory) / name
        self.what = what
        self._fh: Any = None

    def acquire(self) -> DirectoryLock:
        """Take the lock or raise :class:`LockedError` at once (never waits: waiting would hide the mistake)."""
        if self._fh is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 - held open for the lifetime of the lock
        try:
            fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown process"
            fh.close()
            raise LockedError(
                f"{self.path.parent} is in use by another {self.what} ({_describe(holder)}). Two processes on one "
                f"directory would mix their files. HINT: wait for it to finish, stop it, or use another directory"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time(),
                             "command": " ".join(sys.argv[:6])}))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        """Release the lock (the file stays; its content is only informative)."""
        if self._fh is not None:
            fcntl.lockf(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe(holder: str) -> str:
    try:
        info = json.loads(holder)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"pid {info['pid']} on {info['host']} since {since}: {info['command']}"
    except (ValueError, KeyError, TypeError):
        return holder
