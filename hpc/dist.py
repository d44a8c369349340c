"""torch.distributed set-up and the few collectives training needs, as no-ops in a single process.

:func:`init_distributed` asks :func:`hpc.launchers.detect_launcher` who started the process (torchrun, srun,
mpiexec or plain python), checks the GPU geometry before touching a GPU, picks the backend (NCCL with CUDA, gloo
otherwise), pins the device to the local rank and initialises the process group with a timeout. With one process
no group is created, and the helpers below (:func:`barrier`, :func:`all_reduce_sum`, :func:`broadcast_object`)
return their input, so the same training code runs under ``python``, ``torchrun`` and ``srun``.

Example
-------
>>> info = init_distributed(timeout_s=600)
>>> loss_sum, n = all_reduce_sum([batch_loss_sum, batch_count])
>>> if is_main(): save(...)
>>> cleanup()
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn, TypeVar, overload

import torch
import torch.distributed as dist

from hpc.launchers import LauncherError, detect_launcher, requested_gpus_per_node

__all__ = [
    "DistInfo",
    "init_distributed",
    "get_info",
    "cleanup",
    "is_main",
    "barrier",
    "all_reduce_sum",
    "broadcast_object",
    "autocast_context",
]

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes
    ----------
    rank, local_rank, world_size : int
        Global rank, rank on this node, number of processes.
    device : torch.device
        ``cuda:<i>`` for this process's GPU, or ``cpu``.
    backend : str or None
        ``"nccl"`` / ``"gloo"`` when a process group exists; ``None`` for a single process (no group).
    launcher : str
        ``"torchrun"``, ``"slurm"``, ``"mpi"`` or ``"single"``.
    local_world_size : int
        Processes on this node.
    """

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None
    launcher: str
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True on global rank 0 (the one that logs and writes shared files)."""
        return self.rank == 0


_INFO: DistInfo | None = None


def _group_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def _select_device(local_rank: int, n_visible: int) -> torch.device:
    """GPU for this process: ``cuda:local_rank``, or ``cuda:0`` when the launcher shows each process one GPU.

    Under SLURM with ``--gpus-per-task=1`` (or ``--gpu-bind``), ``CUDA_VISIBLE_DEVICES`` differs per task and each
    process sees a single device, so ``local_rank`` must not be used as the index.
    """
    if n_visible == 0:
        return torch.device("cpu")
    if local_rank < n_visible:
        return torch.device("cuda", local_rank)
    if n_visible == 1:
        return torch.device("cuda", 0)
    raise LauncherError(
        f"local rank {local_rank} but only {n_visible} visible GPUs (CUDA_VISIBLE_DEVICES="
        f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}). HINT: start at most {n_visible} processes per node."
    )


def init_distributed(timeout_s: float = 1800, backend: str | None = None) -> DistInfo:
    """Detect the launcher, pick device and backend, and initialise the process group when there are >= 2 ranks.

    Parameters
    ----------
    timeout_s : float
        Collective/rendezvous timeout in seconds (> 0). A rank that never arrives (crashed, stuck in I/O) makes the
        others fail after this long instead of hanging until the job's wall-clock limit.
    backend : str or None
        ``None``: ``"nccl"`` when CUDA is available, else ``"gloo"``. ``"nccl"`` without CUDA raises.

    Returns
    -------
    DistInfo
        Also kept for :func:`get_info` and the helpers. Calling again returns the same group's info.

    Raises
    ------
    LauncherError
        Inconsistent launcher variables or more processes per node than GPUs (before any GPU is touched).
    ValueError
        For a bad ``timeout_s`` or an impossible backend.

    Notes
    -----
    ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` are exported from the launcher
    when absent (``env://`` rendezvous; SLURM/MPI do not set them). Existing values are kept, since the launcher
    classes already read ``MASTER_ADDR``/``MASTER_PORT`` from the environment first.
    """
    global _INFO
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s}.")
    launcher = detect_launcher()
    cuda = torch.cuda.is_available()
    if backend is None:
        backend = "nccl" if cuda else "gloo"
    if backend == "nccl" and not cuda:
        raise ValueError("backend='nccl' needs CUDA, which is not available here. HINT: use backend='gloo' on CPU.")

    if cuda:
        n_visible = torch.cuda.device_count()
        # Per-node GPU count from SLURM when known (a per-task CUDA_VISIBLE_DEVICES hides the others).
        launcher.validate(requested_gpus_per_node() or n_visible)
        device = _select_device(launcher.local_rank, n_visible)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")

    rank, world = launcher.rank, launcher.world_size
    if world == 1:
        _INFO = DistInfo(rank, launcher.local_rank, 1, device, None, launcher.name, launcher.local_world_size)
        return _INFO

    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed. HINT: install a standard torch wheel.")
    if _group_active():
        if dist.get_rank() != rank or dist.get_world_size() != world:
            raise RuntimeError(
                f"a process group already exists with rank {dist.get_rank()}/{dist.get_world_size()}, but the "
                f"launcher says {rank}/{world}. HINT: call cleanup() before re-initialising."
            )
        _INFO = DistInfo(rank, launcher.local_rank, world, device, str(dist.get_backend()), launcher.name,
                         launcher.local_world_size)
        return _INFO

    os.environ.setdefault("MASTER_ADDR", launcher.master_addr)
    os.environ.setdefault("MASTER_PORT", str(launcher.master_port))
    os.environ.setdefault("RANK", str(rank))
    os.environ.setdefault("WORLD_SIZE", str(world))
    os.environ.setdefault("LOCAL_RANK", str(launcher.local_rank))
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=float(timeout_s)),
    )
    _INFO = DistInfo(rank, launcher.local_rank, world, device, backend, launcher.name, launcher.local_world_size)
    return _INFO


def get_info() -> DistInfo | None:
    """The :class:`DistInfo` from the last :func:`init_distributed`, or None before it / after :func:`cleanup`."""
    return _INFO


def cleanup() -> None:
    """Destroy the process group (if any) and forget the stored :class:`DistInfo`. Safe to call twice."""
    global _INFO
    if _group_active():
        dist.destroy_process_group()
    _INFO = None


def exit_worker(code: int) -> NoReturn:
    """End a script that may run as one rank of several with ``code``, after :func:`cleanup`.

    Alone in its job this is ``sys.exit(code)``. As one of several ranks it runs the ``atexit`` handlers and flushes
    stdout/stderr, then leaves by ``os._exit``, skipping the interpreter's finalisation: a gloo worker thread still
    alive there can abort the process ("terminate called without an active exception", SIGABRT, after the run
    finished and wrote its results; pytorch/pytorch#179291, #190489), and the launcher then reports a failed job.
    """
    try:
        several = detect_launcher().world_size > 1
    except LauncherError:  # inconsistent launcher variables: the run has already reported them
        several = False
    if not several:
        sys.exit(code)
    atexit._run_exitfuncs()  # what normal exit would run: logging, tensorboard and coverage handlers
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def is_main() -> bool:
    """True on global rank 0, also before :func:`init_distributed` (read from the launcher variables)."""
    if _group_active():
        return dist.get_rank() == 0
    if _INFO is not None:
        return _INFO.rank == 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a log-gating query must not repeat launcher warnings
            return detect_launcher().rank == 0
    except LauncherError:
        return True  # inconsistent environment: init_distributed will raise; let this process log why


def barrier() -> None:
    """Wait for all ranks; a no-op without a process group."""
    if not _group_active():
        return
    if dist.get_backend() == "nccl":
        # Naming the device avoids NCCL guessing it from the rank (wrong under per-task GPU binding).
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def _comm_device() -> torch.device:
    if _group_active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@overload
def all_reduce_sum(values: torch.Tensor) -> torch.Tensor: ...
@overload
def all_reduce_sum(values: float) -> float: ...
@overload
def all_reduce_sum(values: list[float] | tuple[float, ...]) -> list[float]: ...


def all_reduce_sum(values: Any) -> Any:
    """Sum over all ranks.

    Parameters
    ----------
    values : torch.Tensor, float, or sequence of floats
        A tensor is reduced in place (copied through the GPU when the backend is NCCL and it lives on the CPU) and
        returned. A float or a list of floats is reduced in float64 (exact counts up to 2**53) and returned as a
        float / list of floats.

    Returns
    -------
    Same kind as the input; unchanged values (list copy) without a process group.
    """
    if isinstance(values, torch.Tensor):
        if not _group_active():
            return values
        device = _comm_device()
        if values.device != device:
            buf = values.to(device)
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            values.copy_(buf)
        else:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values
    if isinstance(values, (int, float)):
        return all_reduce_sum([float(values)])[0]
    floats = [float(v) for v in values]
    if not _group_active():
        return floats
    buf = torch.tensor(floats, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.cpu().tolist()


def broadcast_object(obj: T, src: int = 0) -> T:
    """Return rank ``src``'s ``obj`` on every rank (pickled; for small things such as a run id or a config).

    The argument is ignored on the other ranks. Without a process group ``obj`` is returned as is.
    """
    if not _group_active():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]  # type: ignore[return-value]


def autocast_context(device: torch.device | str, enabled_bf16: bool) -> contextlib.AbstractContextManager[Any]:
    """Mixed-precision context: ``torch.autocast('cuda', bfloat16)`` on a GPU when enabled, else a no-op.

    On the CPU this is always a ``nullcontext`` (fp32): CPU bf16 autocast is slow on most hardware and would make
    CPU test runs numerically different from the code path they are meant to check.
    """
    dev = torch.device(device)
    if enabled_bf16 and dev.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
