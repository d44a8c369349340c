"""Worker processes that do not outlive their parent.

A ``ProcessPoolExecutor`` worker whose parent is SIGKILLed (OOM killer, ``scancel`` after the grace time, a
user's ``kill -9``) keeps computing its task and is re-parented to init: an orphan holding CPU and memory on a
shared node. :func:`die_with_parent`, used as the pool's ``initializer``, asks the Linux kernel to send the worker
SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread polls the parent pid.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(poll_s: float = 1.0) -> None:
    """Make this process exit when its parent dies (call it first thing in a worker process)."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                # The parent may have died before prctl ran: then we are already an orphan.
                if os.getppid() != parent:
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch() -> None:  # portable fallback
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
