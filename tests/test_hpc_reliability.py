"""hpc mechanics that keep careless or unlucky runs safe: directory locks, stale temporaries, orphaned workers,
a full disk named as such."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import REPO
from hpc.atomic import DiskFullError, _HOST, atomic_write_bytes, remove_stale_temporaries
from hpc.lock import DirectoryLock, LockedError


def test_second_lock_is_refused_naming_the_holder_and_released_on_sigkill(tmp_path):
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from hpc.lock import DirectoryLock
        lock = DirectoryLock({str(tmp_path)!r}, "galmass train").acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(LockedError, match=rf"in use by another galmass train \(pid {holder.pid} on"):
        DirectoryLock(tmp_path, "galmass train").acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with DirectoryLock(tmp_path, "galmass train"):  # the kernel released the dead process's lock
        pass


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".ckpt-000003.pt.{_HOST}.{dead_pid}.0123abcd.tmp"
    live = tmp_path / f".ckpt-000004.pt.{_HOST}.{os.getpid()}.4567abcd.tmp"
    other_host = tmp_path / f".shard-00001.h5.elsewhere.{dead_pid}.89abcdef.tmp"
    unrelated = tmp_path / "notes.tmp"
    for p in (stale, live, other_host, unrelated):
        p.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert live.exists() and other_host.exists() and unrelated.exists()
    old = time.time() - 30 * 86400
    os.utime(other_host, (old, old))
    assert remove_stale_temporaries(tmp_path) == [other_host]  # another host's, but weeks old


def test_pool_workers_die_with_their_killed_parent(tmp_path):
    pids = tmp_path / "worker.pid"
    code = textwrap.dedent(f"""
        import concurrent.futures as cf, multiprocessing as mp, os, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from hpc.procs import die_with_parent

        def work(path):
            open(path, "w").write(str(os.getpid()))
            time.sleep(120)

        if __name__ == "__main__":
            with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=die_with_parent) as pool:
                pool.submit(work, {str(pids)!r}).result()
    """)
    script = tmp_path / "parent.py"
    script.write_text(code)
    parent = subprocess.Popen([sys.executable, str(script)])
    deadline = time.time() + 60
    while not pids.exists() and time.time() < deadline:
        time.sleep(0.1)
    worker = int(pids.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{worker}/stat") as fh:  # a zombie is dead too (reaped by init later)
            if fh.read().split()[2] == "Z":
                return
        time.sleep(0.1)
    os.kill(worker, signal.SIGKILL)
    pytest.fail(f"worker {worker} outlived its SIGKILLed parent")


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mnt = tmp_path / "full"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_is_reported_with_the_path_and_the_old_file_kept(tiny_tmpfs):
    import torch

    target = tiny_tmpfs / "ckpt.pt"
    atomic_write_bytes(target, b"previous checkpoint")
    with pytest.raises(DiskFullError, match=rf"cannot write {target}: No space left on device"):
        atomic_write_bytes(target, b"x" * (1 << 20))
    from hpc.atomic import atomic_path

    with pytest.raises(DiskFullError, match="No space left"):  # torch.save alone says "basic_ios::clear"
        with atomic_path(target) as tmp:
            torch.save({"w": torch.zeros(1 << 18)}, tmp)
    assert target.read_bytes() == b"previous checkpoint"
    assert [p.name for p in tiny_tmpfs.iterdir()] == ["ckpt.pt"]  # no temporary left behind
