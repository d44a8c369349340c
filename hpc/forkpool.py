"""Map a function over work items in forked worker processes that share one read-only state (e.g. a loaded model).

Forked workers inherit the shared state (a network's weights, parsed catalogues) from the parent's memory instead
of receiving it pickled; only the work items and their results cross processes. ``workers <= 1`` (or a platform
without ``fork``) runs the same function in-process, results in the same order, so a caller's output does not
depend on how many workers ran it as long as each item carries its own seeds. The standard library has no pool
whose workers share an unpicklable object, hence this module.

Usage::

    with worker_pool(2, shared=job, init=lambda: torch.set_num_threads(1)) as pmap:
        results = pmap(work, items)        # work(item) reads shared_state()
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

__all__ = ["shared_state", "worker_pool"]

T = TypeVar("T")
R = TypeVar("R")
Mapper = Callable[[Callable[[T], R], Sequence[T]], list[R]]

_SHARED: Any = None


def shared_state() -> Any:
    """The state given to the enclosing :func:`worker_pool` (in a worker process, or in-process when serial)."""
    return _SHARED


def _init_worker(shared: Any, init: Callable[[], None] | None) -> None:
    global _SHARED
    _SHARED = shared
    if init is not None:
        init()


@contextlib.contextmanager
def worker_pool(workers: int, shared: Any, init: Callable[[], None] | None = None) -> Iterator[Mapper]:
    """A ``pmap(fn, items)`` that runs ``fn`` over ``items`` in ``workers`` forked processes, results in order.

    ``init`` runs once in each worker (e.g. to give each worker one compute thread); not in the serial case, where
    the caller's own process is not reconfigured. An exception in a worker is raised in the caller, and a worker
    that dies (killed, out of memory) raises ``BrokenProcessPool`` instead of leaving the caller waiting forever
    (as ``multiprocessing.Pool`` would); on any exception the work not yet started is cancelled.
    """
    global _SHARED
    if workers <= 1 or "fork" not in mp.get_all_start_methods():
        previous, _SHARED = _SHARED, shared
        try:
            yield lambda fn, items: [fn(x) for x in items]
        finally:
            _SHARED = previous
        return
    # fork, not spawn: the workers must inherit `shared` (a spawned worker would re-import and unpickle it)
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=_init_worker,
                               initargs=(shared, init))
    try:
        yield lambda fn, items: list(pool.map(fn, items))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
