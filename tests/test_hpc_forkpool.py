"""hpc.forkpool: forked workers share an unpicklable state; serial and forked maps give the same ordered results."""

from __future__ import annotations

import os
import threading
from concurrent.futures.process import BrokenProcessPool

import pytest

from hpc.forkpool import shared_state, worker_pool


def _work(item: int) -> tuple[int, int, str]:
    state = shared_state()
    return item * state["factor"], os.getpid(), os.environ.get("FORKPOOL_INIT", "")


def _init() -> None:
    os.environ["FORKPOOL_INIT"] = "yes"


def _fail(item: int) -> int:
    if item == 3:
        raise ValueError(f"item {item} is bad")
    return item


def test_forked_workers_share_an_unpicklable_state_and_keep_the_order():
    shared = {"factor": 7, "lock": threading.Lock()}  # a lock cannot be pickled: the workers must inherit it
    with worker_pool(2, shared, init=_init) as pmap:
        forked = pmap(_work, list(range(20)))
    with worker_pool(1, shared, init=_init) as pmap:
        serial = pmap(_work, list(range(20)))
    assert [r[0] for r in forked] == [r[0] for r in serial] == [7 * i for i in range(20)]
    assert {r[1] for r in serial} == {os.getpid()} and os.getpid() not in {r[1] for r in forked}
    # init runs in each worker, never in the caller's own process (serial: not reconfigured)
    assert {r[2] for r in forked} == {"yes"} and {r[2] for r in serial} == {""}
    assert shared_state() is None  # the serial case restores the previous state


@pytest.mark.parametrize("workers", [1, 2])
def test_a_worker_error_reaches_the_caller(workers):
    with pytest.raises(ValueError, match="item 3 is bad"):
        with worker_pool(workers, None) as pmap:
            pmap(_fail, list(range(6)))


def _die(item: int) -> int:
    if item == 2:
        os._exit(9)  # as the kernel's OOM killer would end it: no exception, no result
    return item


def test_a_dead_worker_is_an_error_not_a_hang():
    with pytest.raises(BrokenProcessPool):
        with worker_pool(2, None) as pmap:
            pmap(_die, list(range(6)))
