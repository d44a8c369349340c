"""Can a SLURM partition ever run this job? Read its nodes with ``sinfo`` and check a request before submitting.

SLURM accepts a job that no node of its partition can hold unless slurm.conf sets ``EnforcePartLimits``; the job
then pends forever (``Reason=PartitionConfig`` or ``PartitionNodeLimit``). A launcher that submits many jobs should
therefore compare what it asks for with what the partition has, and say so before submitting anything.

Everything here is a pure function of ``sinfo`` text except :func:`read_partition`, which runs::

    sinfo --noheader --exact --format '%P|%c|%m|%G|%D|%l|%s'

(partition, CPUs per node, memory per node [MB], generic resources, node count, time limit, job size in nodes;
``--exact`` keeps nodes with different sizes on separate lines instead of printing a minimum with ``+``).

Example
-------
>>> part = parse_sinfo("debug*|2|19284|(null)|1|infinite|1-infinite\\n")["debug"]
>>> [s.what for s in shortfalls(Request(cpus_per_task=4), part)]
['cpus']
>>> largest_cpus_per_task(Request(cpus_per_task=4), part)
2
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace

__all__ = ["SINFO_FORMAT", "SlurmResourceError", "UnknownPartition", "NodeGroup", "Partition", "Request",
           "Shortfall", "parse_sinfo", "parse_gpus", "parse_time_min", "read_partition", "shortfalls",
           "largest_cpus_per_task"]

SINFO_FORMAT = "%P|%c|%m|%G|%D|%l|%s"
"""sinfo ``--format`` read by :func:`parse_sinfo`: partition|CPUs|memory MB|gres|nodes|time limit|job size."""


class SlurmResourceError(ValueError):
    """sinfo could not be run or its output not parsed; the message has a ``HINT:``."""


class UnknownPartition(SlurmResourceError):
    """sinfo answered, but the partition asked for does not exist (or there is no default one)."""


@dataclass(frozen=True)
class NodeGroup:
    """Nodes of one size in a partition."""

    cpus: int
    """CPUs per node."""
    mem_mb: int
    """Memory per node [MB] (slurm.conf RealMemory)."""
    gpus: int
    """GPUs per node (gres ``gpu``)."""
    count: int
    """Nodes of this size."""

    def describe(self) -> str:
        return f"{self.count} node(s) × {self.cpus} CPUs, {self.mem_mb} MB, {self.gpus} GPUs"


@dataclass(frozen=True)
class Partition:
    """What a partition offers: its node sizes and limits."""

    name: str
    groups: tuple[NodeGroup, ...]
    max_time_min: float = math.inf
    """Time limit of a job [minutes]; inf when unlimited."""
    max_nodes: float = math.inf
    """Largest job in nodes (partition MaxNodes); inf when unlimited."""
    default: bool = False
    """The cluster's default partition (``*`` in sinfo)."""

    @property
    def nodes(self) -> int:
        return sum(g.count for g in self.groups)

    def describe(self) -> str:
        limit = "no time limit" if math.isinf(self.max_time_min) else f"time limit {self.max_time_min:g} min"
        return f"partition '{self.name}': {'; '.join(g.describe() for g in self.groups)}; {limit}"


@dataclass(frozen=True)
class Request:
    """One job's resources, as sbatch options: ``--nodes --ntasks-per-node --cpus-per-task --gpus-per-node --mem
    --time``. ``mem_mb`` and ``time_min`` 0 mean the cluster's default (not checked)."""

    nodes: int = 1
    tasks_per_node: int = 1
    cpus_per_task: int = 1
    gpus_per_node: int = 0
    mem_mb: float = 0.0
    time_min: float = 0.0

    @property
    def cpus_per_node(self) -> int:
        return self.tasks_per_node * self.cpus_per_task

    def holds(self, g: NodeGroup) -> bool:
        """Whether one node of group ``g`` holds this request's share of a node."""
        return g.cpus >= self.cpus_per_node and g.gpus >= self.gpus_per_node and g.mem_mb >= self.mem_mb


@dataclass(frozen=True)
class Shortfall:
    """One reason a partition cannot run a request: ``what`` is cpus, gpus, mem, nodes, node or time."""

    what: str
    need: str
    have: str

    def __str__(self) -> str:
        return f"{self.need}, but {self.have}"


# ------------------------------------------------------------------------------------------------ parsing


def _int_field(text: str, name: str, line: str) -> int:
    m = re.fullmatch(r"(\d+)\+?", text.strip())  # "2+" (no --exact): the minimum, the safe side
    if m is None:
        raise SlurmResourceError(f"sinfo: cannot read {name} {text!r} in line {line!r}. HINT: run sinfo -e -o "
                                 f"'{SINFO_FORMAT}' and check the columns")
    return int(m.group(1))


def parse_gpus(gres: str) -> int:
    """GPUs per node from sinfo's ``%G``: ``(null)`` → 0, ``gpu:4`` → 4, ``gpu:a100:2(S:0-1),gpu:v100:1`` → 3.

    A ``gpu:TYPE`` entry without a count counts as 1; other resources (``mps:100``) are ignored.
    """
    total = 0
    for item in re.split(r",(?![^(]*\))", gres.strip()):
        parts = re.sub(r"\(.*?\)", "", item).strip().split(":")
        if parts[0] != "gpu":
            continue
        total += int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
    return total


def parse_time_min(text: str) -> float:
    """sinfo's ``%l`` in minutes: ``infinite`` → inf, ``1-12:00:00`` → 2160, ``4:00:00`` → 240, ``30:00`` → 30.

    Raises
    ------
    SlurmResourceError
        For text that is none of Slurm's time formats ([D-]H:M:S, M:S, M, D-H).
    """
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return math.inf
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if m is None:
        raise SlurmResourceError(f"sinfo: cannot read the time limit {text!r}. HINT: expected e.g. 1-12:00:00")
    days, a, b, c = (int(x) if x else None for x in m.groups())
    if days is not None:  # D-H, D-H:M, D-H:M:S
        return days * 1440 + a * 60 + (b or 0) + (c or 0) / 60
    if c is not None:  # H:M:S
        return a * 60 + b + c / 60
    if b is not None:  # M:S
        return a + b / 60
    return float(a)  # M


def parse_sinfo(text: str) -> dict[str, Partition]:
    """Partitions from the output of ``sinfo -h -e -o '%P|%c|%m|%G|%D|%l|%s'`` (:data:`SINFO_FORMAT`).

    Lines of one partition with the same node size (e.g. idle and allocated nodes) are merged.

    Raises
    ------
    SlurmResourceError
        For a line without the 7 columns or with unreadable numbers.
    """
    sizes: dict[str, dict[tuple[int, int, int], int]] = {}
    limits: dict[str, tuple[float, float, bool]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        cols = line.split("|")
        if len(cols) != 7:
            raise SlurmResourceError(f"sinfo: expected 7 '|'-separated columns, got {line!r}. HINT: the format is "
                                     f"'{SINFO_FORMAT}'")
        raw, cpus, mem, gres, count, time_limit, size = cols
        name = raw.strip().rstrip("*")
        key = (_int_field(cpus, "CPUs", line), _int_field(mem, "memory", line), parse_gpus(gres))
        groups = sizes.setdefault(name, {})
        groups[key] = groups.get(key, 0) + _int_field(count, "node count", line)
        top = size.strip().split("-")[-1]
        max_nodes = float(top) if top.isdigit() else math.inf
        limits[name] = (parse_time_min(time_limit), max_nodes, raw.strip().endswith("*"))
    return {name: Partition(name, tuple(NodeGroup(c, m, gp, n) for (c, m, gp), n in groups.items()),
                            *limits[name]) for name, groups in sizes.items()}


def read_partition(name: str = "", run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
                   timeout_s: float = 20.0) -> Partition:
    """The partition ``name`` (empty: the cluster's default) as ``sinfo`` reports it now.

    Parameters
    ----------
    name : str
        Partition name; ``""`` selects the default partition (marked ``*`` by sinfo).
    run : callable
        ``subprocess.run``-like function (tests pass a fake one).
    timeout_s : float
        Limit for the sinfo call [s] (an unreachable controller makes sinfo retry for a long time).

    Raises
    ------
    SlurmResourceError
        No sinfo, or sinfo failed.
    UnknownPartition
        No such partition (the message lists the partitions there are).
    """
    exe = shutil.which("sinfo") if run is subprocess.run else "sinfo"
    if exe is None:
        raise SlurmResourceError("sinfo is not on PATH. HINT: load the cluster's SLURM module")
    try:
        proc = run([exe, "--noheader", "--exact", "--format", SINFO_FORMAT], capture_output=True, text=True,
                   timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SlurmResourceError(f"sinfo failed: {err}. HINT: is slurmctld reachable (sinfo)?") from None
    if proc.returncode != 0:
        raise SlurmResourceError(f"sinfo failed ({proc.returncode}): {proc.stderr.strip()}. HINT: is slurmctld "
                                 "reachable (sinfo)?")
    parts = parse_sinfo(proc.stdout)
    chosen = parts.get(name) if name else next((p for p in parts.values() if p.default), None)
    if chosen is None:
        known = ", ".join(p.name + ("*" if p.default else "") for p in parts.values()) or "none"
        what = f"partition '{name}' does not exist" if name else "the cluster has no default partition"
        raise UnknownPartition(f"{what} (sinfo lists: {known}). HINT: name one of these")
    return chosen


# ------------------------------------------------------------------------------------------------ checking


def _most(part: Partition, attr: str) -> int:
    return max((getattr(g, attr) for g in part.groups), default=0)


def shortfalls(req: Request, part: Partition) -> list[Shortfall]:
    """Why ``part`` can never run ``req``; empty when it can (some ``req.nodes`` nodes each hold a node's share).

    Each resource is first compared with the largest node on its own (``cpus``, ``gpus``, ``mem``), then the job
    size (``nodes``: against the partition's nodes and MaxNodes) and ``time``; when each fits alone but no node
    holds them together, or too few do, one ``node`` shortfall says so.
    """
    out: list[Shortfall] = []
    if req.cpus_per_node > _most(part, "cpus"):
        out.append(Shortfall("cpus", f"{req.cpus_per_node} CPUs per node ({req.tasks_per_node} task(s) × "
                                     f"{req.cpus_per_task} CPUs)", f"the largest node has {_most(part, 'cpus')}"))
    if req.gpus_per_node > _most(part, "gpus"):
        out.append(Shortfall("gpus", f"{req.gpus_per_node} GPUs per node",
                             f"the largest node has {_most(part, 'gpus')}"))
    if req.mem_mb > _most(part, "mem_mb"):
        out.append(Shortfall("mem", f"{req.mem_mb:g} MB per node", f"the largest node has {_most(part, 'mem_mb')} MB"))
    if req.nodes > min(part.nodes, part.max_nodes):
        limit = "" if math.isinf(part.max_nodes) else f" (at most {part.max_nodes:g} per job)"
        out.append(Shortfall("nodes", f"{req.nodes} nodes", f"the partition has {part.nodes}{limit}"))
    if req.time_min > part.max_time_min:
        out.append(Shortfall("time", f"{req.time_min:g} min", f"the time limit is {part.max_time_min:g} min"))
    if not out:
        fitting = sum(g.count for g in part.groups if req.holds(g))
        if fitting < req.nodes:
            out.append(Shortfall("node", f"{req.nodes} node(s) with {req.cpus_per_node} CPUs, {req.gpus_per_node} "
                                         f"GPUs and {req.mem_mb:g} MB each", f"{fitting} node(s) hold that"))
    return out


def largest_cpus_per_task(req: Request, part: Partition) -> int:
    """The most CPUs per task (at most ``req.cpus_per_task``) with which ``part`` can run ``req``; 0 if none can."""
    for cpus in range(req.cpus_per_task, 0, -1):
        if not shortfalls(replace(req, cpus_per_task=cpus), part):
            return cpus
    return 0
