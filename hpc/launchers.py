"""Launcher detection: who started this process, and what are its ranks?

One small ABC, :class:`LauncherEnv`, and one class per launcher (torchrun, SLURM ``srun``, ``mpiexec``, a plain
``python``), in the spirit of Lightning's ``ClusterEnvironment``. Everything here reads an environment *mapping*
(``os.environ`` by default) and never writes it, imports no torch and calls no external program (no ``scontrol``),
so it is cheap enough for a pre-flight check in an sbatch script and easy to unit-test with fake mappings.

Detection order (:func:`detect_launcher`): torchrun > SLURM > MPI > single process. torchrun comes first because
the recommended multi-node path is ``srun ... torchrun ...``: there SLURM sees one task per node while torchrun
owns the real per-GPU ranks.

Example
-------
>>> env = {"SLURM_NTASKS": "4", "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_NODEID": "0",
...        "SLURM_TASKS_PER_NODE": "2(x2)", "SLURM_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "4242"}
>>> launcher = detect_launcher(env)
>>> launcher.name, launcher.rank, launcher.world_size, launcher.master_addr
('slurm', 1, 4, 'gpu07')
"""

from __future__ import annotations

import itertools
import os
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar

__all__ = [
    "LauncherError",
    "LauncherEnv",
    "TorchrunEnv",
    "SlurmEnv",
    "MpiEnv",
    "SingleProcessEnv",
    "detect_launcher",
    "expand_hostlist",
    "first_host",
    "requested_gpus_per_node",
    "slurm_master_port",
    "DEFAULT_MASTER_PORT",
    "SLURM_PORT_BASE",
    "SLURM_PORT_SPAN",
]

DEFAULT_MASTER_PORT = 29500
"""torch.distributed's customary rendezvous port; used only when nothing better is known (a warning says so)."""

# SLURM job names that mean "an interactive shell holding an allocation", not "a task started by srun"
# (same convention as Lightning: ``salloc``/``srun --pty bash`` shells set one of these).
_INTERACTIVE_JOB_NAMES = ("bash", "interactive")

# Ports derived from the SLURM job id stay in [12000, 32000): above the well-known/registered ports in common use
# and below Linux's default ephemeral range (32768-60999), so the OS never hands the port to a random client.
# The same rule is in slurm/_python.sh (galmass_master_port), used by slurm/train_ddp.sh; tests check they agree.
SLURM_PORT_BASE = 12000
SLURM_PORT_SPAN = 20000

_TORCH_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR")


class LauncherError(RuntimeError):
    """The launcher environment is inconsistent or incomplete; the message names the variables and a ``HINT:``."""


def _env_or_os(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


class LauncherEnv(ABC):
    """Contract for one way of starting (possibly many) training processes.

    A subclass implements :meth:`detect` (a pure function of the environment mapping) and the rank properties.
    Instances snapshot the mapping at construction, so later changes to ``os.environ`` (for example
    :func:`hpc.dist.init_distributed` exporting ``MASTER_ADDR``) do not change what the instance reports.

    Parameters
    ----------
    env : Mapping[str, str] or None
        Environment to read; ``None`` means ``os.environ``.
    """

    name: ClassVar[str] = "abstract"
    #: Command-line flag that sets processes per node for this launcher, used in ``HINT:`` messages.
    procs_per_node_flag: ClassVar[str] = "--nproc_per_node"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env: dict[str, str] = dict(_env_or_os(env))

    # -- contract ---------------------------------------------------------------------------------------------
    @staticmethod
    @abstractmethod
    def detect(env: Mapping[str, str] | None = None) -> bool:
        """True if ``env`` (default ``os.environ``) looks like this launcher started the process. No side effects."""

    @property
    @abstractmethod
    def rank(self) -> int:
        """Global rank of this process, ``0 <= rank < world_size``."""

    @property
    @abstractmethod
    def local_rank(self) -> int:
        """Rank among the processes on this node; selects the GPU."""

    @property
    @abstractmethod
    def world_size(self) -> int:
        """Total number of processes."""

    @property
    @abstractmethod
    def local_world_size(self) -> int:
        """Number of processes on this node."""

    @property
    @abstractmethod
    def master_addr(self) -> str:
        """Host name or IP address of rank 0, for the ``env://`` rendezvous."""

    @property
    @abstractmethod
    def master_port(self) -> int:
        """TCP port of the rendezvous on ``master_addr``."""

    @property
    def node_rank(self) -> int:
        """Index of this node. Default assumes block placement (ranks filled node by node)."""
        return self.rank // max(self.local_world_size, 1)

    def max_local_world_size(self) -> int:
        """Largest number of processes on any node (what the GPU check must use, so every rank agrees)."""
        return self.local_world_size

    # -- checks -----------------------------------------------------------------------------------------------
    def validate(self, n_gpus: int) -> None:
        """Check the rank geometry and, when ``n_gpus > 0``, that no node runs more processes than GPUs.

        Every rank reaches the same verdict (the GPU check uses :meth:`max_local_world_size`), so a bad geometry
        fails everywhere at start-up instead of leaving the healthy ranks waiting in a collective.

        Parameters
        ----------
        n_gpus : int
            GPUs per node available to this job; 0 for a CPU run (skips the GPU check).

        Raises
        ------
        LauncherError
            With the offending numbers and a ``HINT:``.
        """
        if n_gpus < 0:
            raise ValueError(f"n_gpus must be >= 0, got {n_gpus}. HINT: pass 0 for a CPU run.")
        rank, world = self.rank, self.world_size
        local_rank, local_world = self.local_rank, self.local_world_size
        if world < 1:
            raise LauncherError(f"{self.name}: world size {world} < 1. HINT: start at least one process.")
        if not 0 <= rank < world:
            raise LauncherError(
                f"{self.name}: rank {rank} is outside [0, world size {world}). "
                "HINT: the launcher variables come from different jobs; unset stale RANK/WORLD_SIZE exports."
            )
        if not 0 <= local_rank < local_world:
            raise LauncherError(
                f"{self.name}: local rank {local_rank} is outside [0, local world size {local_world}). "
                "HINT: unset stale LOCAL_RANK/LOCAL_WORLD_SIZE exports and let the launcher set them."
            )
        if local_world > world:
            raise LauncherError(
                f"{self.name}: {local_world} processes on this node but only {world} in total. "
                "HINT: unset stale LOCAL_WORLD_SIZE/WORLD_SIZE exports."
            )
        per_node = self.max_local_world_size()
        if n_gpus > 0 and per_node > n_gpus:
            raise LauncherError(
                f"{self.name}: {per_node} processes per node but only {n_gpus} GPUs per node; two processes "
                f"would share a GPU (NCCL fails or hangs). HINT: {self.procs_per_node_flag}={n_gpus}"
            )

    def describe(self) -> str:
        """One line for logs, e.g. ``slurm rank 3/8 (local 1/4, node 0) master gpu07:16242``."""
        return (
            f"{self.name} rank {self.rank}/{self.world_size} (local {self.local_rank}/{self.local_world_size}, "
            f"node {self.node_rank}) master {self.master_addr}:{self.master_port}"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"

    # -- helpers for subclasses -------------------------------------------------------------------------------
    def _int(self, key: str, default: int | None = None) -> int:
        """Read ``key`` as an int, raising a LauncherError that names it when missing or malformed."""
        raw = self._env.get(key)
        if raw is None or raw.strip() == "":
            if default is not None:
                return default
            raise LauncherError(
                f"{self.name}: environment variable {key} is not set. "
                f"HINT: start the program through the {self.name} launcher, which sets it."
            )
        try:
            return int(raw.strip())
        except ValueError:
            raise LauncherError(f"{self.name}: {key}={raw!r} is not an integer.") from None

    def _first_int(self, keys: tuple[str, ...]) -> int:
        for key in keys:
            if key in self._env:
                return self._int(key)
        raise LauncherError(
            f"{self.name}: none of {', '.join(keys)} is set. "
            f"HINT: start the program through the {self.name} launcher, which sets them."
        )

    def _port_from_env(self) -> int | None:
        if "MASTER_PORT" not in self._env:
            return None
        port = self._int("MASTER_PORT")
        if not 1 <= port <= 65535:
            raise LauncherError(f"{self.name}: MASTER_PORT={port} is not a TCP port. HINT: use 1024-65535.")
        return port


class TorchrunEnv(LauncherEnv):
    """Processes started by ``torchrun`` / ``python -m torch.distributed.run`` (or an equivalent manual export).

    Detected by ``TORCHELASTIC_RUN_ID`` (set by torchrun) or by the full manual set
    ``RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR``. ``GROUP_RANK`` (torchrun's node index) gives ``node_rank``.
    """

    name: ClassVar[str] = "torchrun"
    procs_per_node_flag: ClassVar[str] = "--nproc_per_node"

    @staticmethod
    def detect(env: Mapping[str, str] | None = None) -> bool:
        env = _env_or_os(env)
        return "TORCHELASTIC_RUN_ID" in env or all(k in env for k in _TORCH_KEYS)

    @property
    def rank(self) -> int:
        return self._int("RANK")

    @property
    def local_rank(self) -> int:
        return self._int("LOCAL_RANK")

    @property
    def world_size(self) -> int:
        return self._int("WORLD_SIZE")

    @property
    def local_world_size(self) -> int:
        # torchrun always exports it; a manual export may not, and then one node holds everything.
        return self._int("LOCAL_WORLD_SIZE", default=self.world_size)

    @property
    def master_addr(self) -> str:
        addr = self._env.get("MASTER_ADDR", "").strip()
        if not addr:
            raise LauncherError("torchrun: MASTER_ADDR is not set. HINT: use torchrun, which sets it.")
        return addr

    @property
    def master_port(self) -> int:
        port = self._port_from_env()
        if port is None:
            warnings.warn(
                f"torchrun: MASTER_PORT not set; using {DEFAULT_MASTER_PORT}. "
                "HINT: export MASTER_PORT to avoid clashes between jobs on one node.",
                stacklevel=2,
            )
            return DEFAULT_MASTER_PORT
        return port

    @property
    def node_rank(self) -> int:
        if "GROUP_RANK" in self._env:
            return self._int("GROUP_RANK")
        return super().node_rank


class SlurmEnv(LauncherEnv):
    """Tasks started by ``srun`` (one process per task).

    Detected when ``SLURM_NTASKS > 1`` and ``SLURM_PROCID`` is set, unless the job name marks an interactive shell
    (``salloc`` / ``srun --pty bash``: job name ``bash`` or ``interactive``), where the user starts processes by
    hand. A ``srun ... torchrun`` launch is handled by :class:`TorchrunEnv` (checked first).

    Master address: ``MASTER_ADDR`` if exported (e.g. from ``scontrol show hostnames`` in the sbatch script), else
    the first host of ``SLURM_STEP_NODELIST`` / ``SLURM_NODELIST`` / ``SLURM_JOB_NODELIST`` expanded in Python
    (``node[01-03,7]`` -> ``node01``) so no ``scontrol`` call is needed on compute nodes. This assumes rank 0 runs on
    the first node of the list, which holds for Slurm's default block distribution.
    Master port: ``MASTER_PORT`` if exported, else :func:`slurm_master_port` of ``SLURM_JOB_ID`` (every task of the
    job computes the same value; jobs sharing a node collide only if their ids differ by a multiple of 20000).

    Tasks per node come from ``SLURM_STEP_TASKS_PER_NODE`` / ``SLURM_TASKS_PER_NODE`` (compressed, e.g.
    ``2(x3),1``) indexed by ``SLURM_NODEID``, falling back to ``SLURM_NTASKS_PER_NODE``.
    """

    name: ClassVar[str] = "slurm"
    procs_per_node_flag: ClassVar[str] = "--ntasks-per-node"

    @staticmethod
    def is_interactive(env: Mapping[str, str] | None = None) -> bool:
        """True inside an interactive allocation shell (job name ``bash`` or ``interactive``)."""
        return _env_or_os(env).get("SLURM_JOB_NAME", "") in _INTERACTIVE_JOB_NAMES

    @staticmethod
    def detect(env: Mapping[str, str] | None = None) -> bool:
        env = _env_or_os(env)
        try:
            ntasks = int(env.get("SLURM_NTASKS", "0"))
        except ValueError:
            return False  # malformed; not ours to interpret (detection must not raise)
        return ntasks > 1 and "SLURM_PROCID" in env and not SlurmEnv.is_interactive(env)

    @property
    def rank(self) -> int:
        return self._int("SLURM_PROCID")

    @property
    def local_rank(self) -> int:
        return self._int("SLURM_LOCALID")

    @property
    def world_size(self) -> int:
        return self._int("SLURM_NTASKS")

    def tasks_per_node(self) -> list[int]:
        """Task count on each node of the step, e.g. ``'2(x3),1'`` -> ``[2, 2, 2, 1]``; empty if unknown."""
        for key in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
            if key in self._env:
                return _parse_tasks_per_node(self._env[key], key)
        if "SLURM_NTASKS_PER_NODE" in self._env:
            per_node = self._int("SLURM_NTASKS_PER_NODE")
            n_nodes = self._int("SLURM_NNODES", default=max(1, -(-self.world_size // max(per_node, 1))))
            return [per_node] * n_nodes
        return []

    @property
    def local_world_size(self) -> int:
        counts = self.tasks_per_node()
        if not counts:
            n_nodes = self._int("SLURM_NNODES", default=1)
            if n_nodes == 1:
                return self.world_size
            raise LauncherError(
                f"slurm: cannot tell how many tasks run on this node ({n_nodes} nodes, no SLURM_TASKS_PER_NODE). "
                "HINT: launch with srun --ntasks-per-node=N."
            )
        node = self.node_rank
        if not 0 <= node < len(counts):
            raise LauncherError(
                f"slurm: SLURM_NODEID={node} but the tasks-per-node list has {len(counts)} entries {counts}."
            )
        return counts[node]

    def max_local_world_size(self) -> int:
        counts = self.tasks_per_node()
        return max(counts) if counts else self.local_world_size

    @property
    def node_rank(self) -> int:
        return self._int("SLURM_NODEID", default=0)

    @property
    def master_addr(self) -> str:
        addr = self._env.get("MASTER_ADDR", "").strip()
        if addr:
            return addr
        for key in ("SLURM_STEP_NODELIST", "SLURM_NODELIST", "SLURM_JOB_NODELIST"):
            if self._env.get(key, "").strip():
                return first_host(self._env[key])
        raise LauncherError(
            "slurm: no SLURM_NODELIST and no MASTER_ADDR. "
            "HINT: export MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1) in the sbatch script."
        )

    @property
    def master_port(self) -> int:
        port = self._port_from_env()
        if port is not None:
            return port
        if "SLURM_JOB_ID" in self._env:
            return slurm_master_port(self._int("SLURM_JOB_ID"))
        warnings.warn(
            f"slurm: neither MASTER_PORT nor SLURM_JOB_ID set; using {DEFAULT_MASTER_PORT}. "
            "HINT: export MASTER_PORT in the sbatch script.",
            stacklevel=2,
        )
        return DEFAULT_MASTER_PORT


class MpiEnv(LauncherEnv):
    """Processes started by ``mpiexec`` / ``mpirun`` (OpenMPI, MPICH hydra, Intel MPI).

    Reads ``OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}`` (OpenMPI) or ``PMI_RANK``/``PMI_SIZE`` with
    ``MPI_LOCALRANKID``/``MPI_LOCALNRANKS`` (MPICH hydra, Intel MPI). mpi4py is *not* imported: the ranks come
    from the environment, which keeps detection fork-safe and free of MPI initialisation.

    Master address: ``MASTER_ADDR`` if exported, else ``127.0.0.1`` when all ranks share one node; a multi-node run
    without it raises (rank 0's host name is not in the environment). Master port: ``MASTER_PORT`` or 29500 with a
    warning (MPI exports no job id to derive one from).
    """

    name: ClassVar[str] = "mpi"
    procs_per_node_flag: ClassVar[str] = "processes per node (mpiexec -ppn / --map-by ppr:N:node)"

    @staticmethod
    def detect(env: Mapping[str, str] | None = None) -> bool:
        env = _env_or_os(env)
        return (
            ("OMPI_COMM_WORLD_RANK" in env and "OMPI_COMM_WORLD_SIZE" in env)
            or ("PMI_RANK" in env and "PMI_SIZE" in env)
            or "MPI_LOCALRANKID" in env
        )

    @property
    def rank(self) -> int:
        return self._first_int(("OMPI_COMM_WORLD_RANK", "PMI_RANK"))

    @property
    def world_size(self) -> int:
        return self._first_int(("OMPI_COMM_WORLD_SIZE", "PMI_SIZE"))

    def _has_local_info(self) -> bool:
        return any(k in self._env for k in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"))

    def _warn_no_local_info(self) -> None:
        warnings.warn(
            "mpi: no node-local rank variables (OMPI_COMM_WORLD_LOCAL_RANK / MPI_LOCALRANKID); assuming all ranks "
            "share one node. HINT: use mpiexec from OpenMPI or MPICH, which export them.",
            stacklevel=3,
        )

    @property
    def local_rank(self) -> int:
        if not self._has_local_info():
            self._warn_no_local_info()
            return self.rank
        return self._first_int(("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"))

    @property
    def local_world_size(self) -> int:
        if not any(k in self._env for k in ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS")):
            if self._has_local_info():
                raise LauncherError(
                    "mpi: node-local rank is set but not the node-local size "
                    "(OMPI_COMM_WORLD_LOCAL_SIZE / MPI_LOCALNRANKS). HINT: use a standard mpiexec."
                )
            self._warn_no_local_info()
            return self.world_size
        return self._first_int(("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"))

    @property
    def master_addr(self) -> str:
        addr = self._env.get("MASTER_ADDR", "").strip()
        if addr:
            return addr
        if self.local_world_size == self.world_size:
            return "127.0.0.1"  # single node: loopback reaches rank 0
        raise LauncherError(
            f"mpi: {self.world_size} ranks over several nodes ({self.local_world_size} on this one) and no "
            "MASTER_ADDR. HINT: export MASTER_ADDR=$(hostname) before mpiexec and forward it "
            "(MPICH: -genv MASTER_ADDR $MASTER_ADDR; OpenMPI: -x MASTER_ADDR)."
        )

    @property
    def master_port(self) -> int:
        port = self._port_from_env()
        if port is None:
            warnings.warn(
                f"mpi: MASTER_PORT not set; using {DEFAULT_MASTER_PORT}. "
                "HINT: export and forward MASTER_PORT so concurrent jobs on one node do not collide.",
                stacklevel=2,
            )
            return DEFAULT_MASTER_PORT
        return port


class SingleProcessEnv(LauncherEnv):
    """A plain ``python`` process: rank 0 of 1. Always detects (the fallback)."""

    name: ClassVar[str] = "single"
    procs_per_node_flag: ClassVar[str] = "--nproc_per_node"

    @staticmethod
    def detect(env: Mapping[str, str] | None = None) -> bool:
        return True

    @property
    def rank(self) -> int:
        return 0

    @property
    def local_rank(self) -> int:
        return 0

    @property
    def world_size(self) -> int:
        return 1

    @property
    def local_world_size(self) -> int:
        return 1

    @property
    def node_rank(self) -> int:
        return 0

    @property
    def master_addr(self) -> str:
        return self._env.get("MASTER_ADDR", "").strip() or "127.0.0.1"

    @property
    def master_port(self) -> int:
        port = self._port_from_env()
        return DEFAULT_MASTER_PORT if port is None else port


# ---------------------------------------------------------------------------------------------------------------
# SLURM string formats
# ---------------------------------------------------------------------------------------------------------------
_TASKS_ITEM = re.compile(r"^\s*(\d+)\s*(?:\(x(\d+)\))?\s*$")


def _parse_tasks_per_node(text: str, key: str = "SLURM_TASKS_PER_NODE") -> list[int]:
    """``'2(x3),1'`` -> ``[2, 2, 2, 1]`` (Slurm's compressed per-node task counts)."""
    out: list[int] = []
    for item in text.split(","):
        m = _TASKS_ITEM.match(item)
        if m is None:
            raise LauncherError(f"slurm: cannot parse {key}={text!r}; expected a form like '2(x3),1'.")
        out.extend([int(m.group(1))] * int(m.group(2) or 1))
    return out


def _split_top_level(text: str) -> list[str]:
    """Split a Slurm host list at commas/whitespace that are outside brackets."""
    parts: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise LauncherError(f"unbalanced ']' in host list {text!r}; expected e.g. 'node[01-03,7]'.")
        elif depth == 0 and (ch == "," or ch.isspace()):
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise LauncherError(f"unbalanced '[' in host list {text!r}; expected e.g. 'node[01-03,7]'.")
    parts.append(text[start:])
    return [p for p in (s.strip() for s in parts) if p]


def _expand_range_set(body: str, text: str) -> list[str]:
    """``'01-03,7'`` -> ``['01', '02', '03', '7']``; zero padding follows the width of each range's start."""
    out: list[str] = []
    for item in body.split(","):
        item = item.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if m is None:
            raise LauncherError(f"cannot parse {item!r} in host list {text!r}; expected e.g. 'node[01-03,7]'.")
        lo_s, hi_s = m.group(1), m.group(2)
        if hi_s is None:
            out.append(lo_s)
            continue
        lo, hi = int(lo_s), int(hi_s)
        if hi < lo:
            raise LauncherError(f"descending range {item!r} in host list {text!r}.")
        width = len(lo_s)
        out.extend(str(v).zfill(width) for v in range(lo, hi + 1))
    return out


def expand_hostlist(text: str) -> list[str]:
    """Expand a Slurm host list without calling ``scontrol``.

    Parameters
    ----------
    text : str
        Compressed list as in ``SLURM_NODELIST``, e.g. ``'node[01-03,7],gpu-a1'`` or ``'rack[1-2]-n[1-2]'``.

    Returns
    -------
    list[str]
        Host names in order, e.g. ``['node01', 'node02', 'node03', 'node7', 'gpu-a1']``. Several bracket groups in
        one name expand as a product, left group slowest.

    Raises
    ------
    LauncherError
        On unbalanced brackets or malformed ranges, with an example of the expected form.
    """
    hosts: list[str] = []
    for part in _split_top_level(text):
        pieces = re.split(r"(\[[^\]]*\])", part)
        choices = [
            _expand_range_set(p[1:-1], text) if p.startswith("[") else [p] for p in pieces if p != ""
        ]
        hosts.extend("".join(combo) for combo in itertools.product(*choices))
    if not hosts:
        raise LauncherError(f"empty host list {text!r}.")
    return hosts


def first_host(text: str) -> str:
    """First host of a Slurm host list, e.g. ``'node[01-03,7]'`` -> ``'node01'`` (see :func:`expand_hostlist`)."""
    first = _split_top_level(text)
    if not first:
        raise LauncherError(f"empty host list {text!r}.")
    # Only the first entry needs expanding: avoids building a 10^4-host list to read one name.
    return expand_hostlist(first[0])[0]


def slurm_master_port(job_id: int) -> int:
    """Rendezvous port of a SLURM job: ``12000 + job_id % 20000``, in [12000, 32000).

    The one rule of galmass for a job-derived port, shared with ``galmass_master_port`` in slurm/_python.sh (what
    slurm/train_ddp.sh exports as ``MASTER_PORT``). The range lies above the commonly used registered ports and
    below Linux's default ephemeral range (``net.ipv4.ip_local_port_range`` 32768-60999), so the kernel never
    hands the port to an outgoing connection; consecutive job ids on one node get different ports.

    Parameters
    ----------
    job_id : int
        ``SLURM_JOB_ID`` (each task of a job array has its own), >= 0.

    Raises
    ------
    ValueError
        For a negative id.
    """
    if job_id < 0:
        raise ValueError(f"SLURM job id must be >= 0, got {job_id}. HINT: pass $SLURM_JOB_ID")
    return SLURM_PORT_BASE + job_id % SLURM_PORT_SPAN


def requested_gpus_per_node(env: Mapping[str, str] | None = None) -> int:
    """GPUs per node that SLURM says this job/step holds; 0 if not under SLURM or no GPUs requested.

    Reads ``SLURM_GPUS_ON_NODE`` (an integer), else ``SLURM_GPUS_PER_NODE`` (``'4'``, ``'a100:4'``,
    ``'gpu:a100:4'``). Unparseable values count as unknown (0), so they never block a run.
    """
    env = _env_or_os(env)
    raw = env.get("SLURM_GPUS_ON_NODE", "").strip()
    if raw.isdigit():
        return int(raw)
    raw = env.get("SLURM_GPUS_PER_NODE", "").strip()
    if raw:
        last = raw.split(",")[0].split(":")[-1]
        m = re.match(r"^(\d+)", last)
        if m:
            return int(m.group(1))
    return 0


# ---------------------------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------------------------
_ORDER: tuple[type[LauncherEnv], ...] = (TorchrunEnv, SlurmEnv, MpiEnv, SingleProcessEnv)


def detect_launcher(env: Mapping[str, str] | None = None) -> LauncherEnv:
    """Pick the launcher that started this process: torchrun > SLURM > MPI > single process.

    The chosen launcher is validated at once (ranks in range; under SLURM with GPUs requested, no more tasks per
    node than GPUs), so a bad launch fails on every rank before any process group or GPU work.

    Parameters
    ----------
    env : Mapping[str, str] or None
        Environment to read; ``None`` means ``os.environ``. Never modified.

    Returns
    -------
    LauncherEnv
        A :class:`TorchrunEnv`, :class:`SlurmEnv`, :class:`MpiEnv` or :class:`SingleProcessEnv`.

    Raises
    ------
    LauncherError
        For inconsistent environments, e.g. ``RANK >= WORLD_SIZE``, ``LOCAL_RANK`` without ``RANK``, a partial
        torch.distributed export, or SLURM tasks per node > GPUs per node. The message shows the numbers and a
        ``HINT:``.
    """
    env = _env_or_os(env)
    if not TorchrunEnv.detect(env):
        present = [k for k in ("RANK", "LOCAL_RANK") if k in env]
        if present:
            missing = [k for k in _TORCH_KEYS if k not in env]
            detail = "LOCAL_RANK is set without RANK" if present == ["LOCAL_RANK"] else f"{present} set"
            raise LauncherError(
                f"partial torch.distributed environment: {detail}, missing {missing}. "
                "HINT: launch with torchrun (which sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), "
                "export all of them, or unset the stale ones."
            )
    launcher: LauncherEnv = next(cls(env) for cls in _ORDER if cls.detect(env))
    interactive_tasks = env.get("SLURM_NTASKS", "1").strip() not in ("", "0", "1")
    if SlurmEnv.is_interactive(env) and interactive_tasks and not isinstance(launcher, TorchrunEnv):
        # Fallbacks warn: the allocation says N tasks, but this process was not started as one of them.
        warnings.warn(
            f"SLURM job name {env.get('SLURM_JOB_NAME')!r} marks an interactive shell; ignoring SLURM_NTASKS="
            f"{env.get('SLURM_NTASKS')} and not treating this process as an srun task. "
            "HINT: start the ranks with srun or torchrun inside the allocation.",
            stacklevel=2,
        )
    launcher.validate(requested_gpus_per_node(env))
    return launcher
