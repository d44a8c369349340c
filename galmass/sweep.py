"""Grids of training runs on SLURM with submitit (``galmass sweep``): tracer × train suite × feedback × seed × ….

A sweep YAML names a base config, common overrides and *axes* (any config key, with a list of values). The
launcher

1. expands the grid; each cell gets its own run directory ``OUT/cells/<cell>/`` holding its fully resolved
   ``config.yaml`` (every cell is validated strictly before anything is submitted);
2. derives the dataset of each cell from its ``data`` section (cells with the same mock recipe share one dataset
   under ``OUT/data/<suites>_<feedbacks>_<hash>/``) and submits one job array generating the missing datasets;
3. submits the unfinished cells as **one SLURM array** (``executor.map_array``, at most
   ``slurm.array_parallelism`` at once), depending on step 2. Each task is a :class:`TrainCell`
   (``submitit.helpers.Checkpointable``): before the time limit SLURM sends USR2; galmass finishes the step and
   writes a mid-epoch checkpoint, then submitit requeues the task (at most ``slurm.max_num_timeout`` times after a
   timeout) and it resumes from that checkpoint of *its own* run directory;
4. submits one dependent job (:class:`EvaluateSweep`) that evaluates every trained cell on the test split of every
   dataset of the sweep (``OUT/cells/<cell>/eval-<dataset>/``) and writes the cross-suite report
   ``OUT/report/report.md``.

Before submitting to SLURM, the request (``slurm.nodes``, ``tasks_per_node`` × ``cpus_per_task``, ``gpus_per_node``,
``mem_gb``, ``time_min``) is checked against the partition's nodes (``sinfo``, :mod:`hpc.slurm_resources`): a job
that no node can hold would pend forever, so it is refused (or, with ``slurm.fit_to_node: true``, ``cpus_per_task``
is lowered to what fits). Cells with ``done.json``, datasets with a manifest and an up-to-date report are skipped,
so relaunching a finished sweep submits nothing. ``--dry-run`` prints the plan; ``--executor local`` runs the same
jobs as local processes (``debug`` in this process), one stage after the other.

Sweep YAML (schema: :class:`SweepSpec`; unknown keys are errors, as in the run config)::

    name: tracer_x_suite
    config: configs/quickstart.yaml          # base config (optional)
    overrides: [--train.epochs=20]           # applied to every cell
    axes:                                    # the grid; short names: tracer, suite, feedback, seed
      tracer: [stars, gas+stars]             #   = model.tracer
      suite: [compact, extended]             #   = data.suites (one suite per cell; a list trains on several)
      feedback: [cusp, core]                 #   = data.feedbacks
      train.lr: [1.0e-3, 3.0e-4]             # any section.key
    slurm: {partition: gpu, time_min: 240, gpus_per_node: 1, cpus_per_task: 8, array_parallelism: 32}
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from galmass.config import (ConfigError, build_dataclass, config_diffs, config_to_dict, data_hash, dump_config,
                            load_config, read_yaml)
from galmass.naming import slug
from hpc.slurm_resources import (Partition, Request, SlurmResourceError, UnknownPartition, largest_cpus_per_task,
                                 read_partition, shortfalls)

__all__ = ["SlurmSpec", "SweepSpec", "Cell", "Dataset", "Plan", "load_sweep", "plan_sweep", "launch",
           "fit_partition", "slug", "TrainCell", "GenerateDataset", "EvaluateSweep", "main"]

# Short axis names for the papers' grid dimensions; any "section.key" works as well.
AXIS_ALIASES = {"tracer": "model.tracer", "suite": "data.suites", "suites": "data.suites",
                "feedback": "data.feedbacks", "feedbacks": "data.feedbacks", "seed": "train.seed"}
PLAN_FILE = "sweep.json"
JOBS_FILE = "jobs.json"


@dataclass
class SlurmSpec:
    """Resources of each job (submitit parameters); the same for the dataset, training and evaluation jobs."""

    partition: str = ""
    """SLURM partition; empty means the cluster's default partition."""
    time_min: int = 240
    """Time limit per job [minutes]. A cell that runs out of time is requeued and resumes (Checkpointable)."""
    nodes: int = 1
    """Nodes per training cell (DDP across nodes when > 1)."""
    tasks_per_node: int = 1
    """Training processes per node (one per GPU; the global batch is split over them)."""
    gpus_per_node: int = 0
    """GPUs per node; 0 for CPU-only cells."""
    cpus_per_task: int = 1
    """CPU cores per process; also torch's thread count in the job."""
    mem_gb: float = 0.0
    """Memory per node [GB]; 0 means the cluster's default."""
    array_parallelism: int = 16
    """Most cells of the array running at the same time."""
    signal_delay_s: int = 120
    """USR2 is sent this long before the time limit [s] (SLURM delivers it within 30–60 s of that)."""
    max_num_timeout: int = 3
    """Requeues after a timeout before a cell is given up (preemptions do not count). submitit counts a USR2 as a
    timeout once the job has run 80 % of ``time_min`` (always, for ``time_min`` <= 10)."""
    fit_to_node: bool = False
    """When ``tasks_per_node × cpus_per_task`` exceeds every node of the partition, lower ``cpus_per_task`` to what
    fits (and say so) instead of refusing the sweep. Checked against ``sinfo`` before submitting."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run before each job (e.g. ``module load cuda``)."""
    additional: Any = None
    """Extra sbatch options as a mapping, e.g. ``{account: abc, qos: high}``."""

    def __post_init__(self) -> None:
        for name in ("time_min", "nodes", "tasks_per_node", "cpus_per_task", "array_parallelism"):
            if getattr(self, name) < 1:
                raise ConfigError(f"slurm.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_num_timeout < 0 or self.gpus_per_node < 0 or self.mem_gb < 0:
            raise ConfigError(f"slurm.max_num_timeout, gpus_per_node and mem_gb must be >= 0, got "
                              f"{self.max_num_timeout}, {self.gpus_per_node}, {self.mem_gb}")
        if self.gpus_per_node > 0 and self.tasks_per_node != self.gpus_per_node:
            raise ConfigError(
                f"slurm.tasks_per_node={self.tasks_per_node} but slurm.gpus_per_node={self.gpus_per_node}: "
                f"each training process needs one GPU. HINT: tasks_per_node: {self.gpus_per_node}"
            )
        if self.additional is not None and not isinstance(self.additional, dict):
            raise ConfigError(f"slurm.additional must be a mapping of sbatch options, got {self.additional!r}")


@dataclass
class SweepSpec:
    """A sweep YAML file."""

    name: str = "sweep"
    """Name of the sweep (job names, default output directory)."""
    config: str = ""
    """Base config YAML of every cell; empty means the schema defaults."""
    out: str = ""
    """Output directory; empty means ``runs/sweeps/<name>``."""
    overrides: list[str] = field(default_factory=list)
    """``--section.key=value`` overrides applied to every cell (before the axis values)."""
    axes: Any = None
    """Mapping axis → list of values; an axis is ``section.key`` or one of tracer, suite, feedback, seed."""
    executor: Literal["auto", "slurm", "local", "debug"] = "auto"
    """Where jobs run: auto (SLURM when ``sbatch`` is available, else local processes), slurm, local, debug."""
    slurm: SlurmSpec = field(default_factory=SlurmSpec)
    """Resources per job."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9._+-]+", self.name):
            raise ConfigError(f"name {self.name!r}: use letters, digits and . _ + - only")
        if not isinstance(self.axes, dict) or not self.axes:
            raise ConfigError(
                f"axes must be a non-empty mapping of axis → list of values, got {self.axes!r}. "
                "HINT: axes: {tracer: [stars, gas+stars], suite: [compact, extended]}"
            )
        for key, values in self.axes.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"axes.{key}: expected a non-empty list of values, got {values!r}")


@dataclass
class Dataset:
    """One mock dataset of the sweep (shared by the cells with the same ``data`` section)."""

    name: str
    path: str
    config: str
    """A resolved config YAML whose ``data`` section describes it (that of its first cell)."""
    suites: list[str]
    feedbacks: list[str]


@dataclass
class Cell:
    """One grid point: its axis values, run directory and dataset."""

    name: str
    values: dict[str, Any]
    run_dir: str
    config: str
    """``run_dir/config.yaml``: the fully resolved config (what galmass.train stores and checks)."""
    dataset: str


@dataclass
class Plan:
    """The expanded sweep, stored as ``OUT/sweep.json`` (read by the evaluation job and the report)."""

    name: str
    out: str
    axes: dict[str, list[Any]]
    cells: list[Cell]
    datasets: list[Dataset]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @staticmethod
    def from_json(text: str) -> "Plan":
        d = json.loads(text)
        return Plan(d["name"], d["out"], d["axes"], [Cell(**c) for c in d["cells"]],
                    [Dataset(**x) for x in d["datasets"]])

    def dataset(self, name: str) -> Dataset:
        return next(d for d in self.datasets if d.name == name)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and strictly validate a sweep YAML (galmass.config.read_yaml: duplicate keys are errors; unknown keys
    raise ConfigError naming the closest key)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {path}. HINT: e.g. slurm/sweep_tracer_suite.yaml")
    spec = build_dataclass(SweepSpec, read_yaml(path, what="name, config, overrides, axes, slurm"), str(path))
    spec._source = str(path)  # type: ignore[attr-defined]  # named in later error messages
    return spec


def _axis_key(axis: str) -> str:
    key = AXIS_ALIASES.get(axis, axis)
    if key.count(".") != 1:
        raise ConfigError(
            f"axes: '{axis}' is neither section.key nor one of {', '.join(sorted(AXIS_ALIASES))}. "
            "HINT: e.g. model.tracer or train.lr"
        )
    return key


def _axis_value(key: str, value: Any) -> Any:
    # One suite / feedback per cell is the common case; the config wants a list.
    if key in ("data.suites", "data.feedbacks") and isinstance(value, str):
        return [value]
    return value


def _short(axis: str) -> str:
    return axis.split(".")[-1]


def plan_sweep(spec: SweepSpec, spec_dir: Path | None = None) -> Plan:
    """Expand the grid and validate every cell's config (nothing is written).

    Raises
    ------
    ConfigError
        A bad axis key or value (the message names the cell), or a cell whose stored config differs.
    """
    out = Path(spec.out or f"runs/sweeps/{spec.name}")
    base = spec.config or None
    if base and spec_dir is not None and not Path(base).exists() and (spec_dir / base).exists():
        base = str(spec_dir / base)
    load_config(base, list(spec.overrides))  # the common part on its own: its errors name the file
    axes = {_axis_key(a): [_axis_value(_axis_key(a), v) for v in vals] for a, vals in spec.axes.items()}
    if len(set(axes)) != len(spec.axes):
        raise ConfigError(f"axes: two axes name the same key: {list(spec.axes)}")
    cells, datasets = [], {}
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo))
        name = "__".join(f"{_short(k)}-{slug(v)}" for k, v in values.items())
        axis_over = [f"--{k}={json.dumps(v)}" for k, v in values.items()]
        run_dir = out / "cells" / name
        try:
            cfg = load_config(base, list(spec.overrides) + axis_over)
        except ConfigError as err:
            raise ConfigError(f"cell {name}: {err}") from None
        # The directory names the samples: data_hash is what manifests and trained models record.
        recipe = "_".join("+".join(map(slug, names)) for names in (cfg.data.suites, cfg.data.feedbacks))
        ds_name = f"{recipe}_{data_hash(cfg.data)}"
        ds_path = out / "data" / ds_name
        cfg = load_config(base, list(spec.overrides) + axis_over + [f"--data.path={ds_path}",
                                                                      f"--train.run_dir={run_dir}"])
        if ds_name not in datasets:
            datasets[ds_name] = Dataset(ds_name, str(ds_path), str(run_dir / "config.yaml"),
                                        list(cfg.data.suites), list(cfg.data.feedbacks))
        cells.append((Cell(name, values, str(run_dir), str(run_dir / "config.yaml"), ds_name), cfg))
    if len({c.name for c, _ in cells}) != len(cells):
        raise ConfigError("two cells got the same directory name. HINT: make the axis values distinct")
    plan = Plan(spec.name, str(out), {k: list(v) for k, v in axes.items()}, [c for c, _ in cells],
                list(datasets.values()))
    plan._configs = {c.name: cfg for c, cfg in cells}  # type: ignore[attr-defined]
    plan.warnings = []  # type: ignore[attr-defined]
    for cell, cfg in cells:
        stored = Path(cell.config)
        if stored.exists():
            diffs = config_diffs(read_yaml(stored), config_to_dict(cfg))
            if diffs and (Path(cell.run_dir) / "done.json").exists():
                # Finished work is kept (never retrained); say so rather than silently reusing it.
                plan.warnings.append(  # type: ignore[attr-defined]
                    f"cell {cell.name} finished with a different config ({'; '.join(diffs)}); its results are "
                    "kept. HINT: give the sweep another `out` to retrain it")
            elif diffs:
                raise ConfigError(
                    f"{stored}: cell {cell.name} was started with a different config ({'; '.join(diffs)}). "
                    f"HINT: give the sweep another `out` (or `name`), or delete {cell.run_dir}"
                )
    return plan


# ------------------------------------------------------------------------------------------------ the jobs


def _set_threads(threads: int) -> None:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


try:  # submitit is an optional dependency (galmass[slurm]); the job classes need it only when submitted.
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - exercised only without submitit
    _Checkpointable = object  # type: ignore[assignment,misc]


class GenerateDataset:
    """Job: generate (or finish generating) the mock dataset of ``config_path``'s data section."""

    def __call__(self, config_path: str, workers: int) -> str:
        from galmass.mocks.generate import generate_dataset

        cfg = load_config(config_path)
        return str(generate_dataset(cfg.data, workers=workers).parent)


class TrainCell(_Checkpointable):
    """Job: train one sweep cell; requeued by submitit on timeout/preemption and resumed from its own checkpoints.

    submitit owns requeueing. It installs its signal handlers when the job starts; during the epochs galmass's
    handler takes SIGUSR2/SIGTERM over, finishes the current step, writes a mid-epoch checkpoint into the cell's
    run directory, restores submitit's handlers and raises ``Preempted`` (``train(cfg, requeue=False)``: galmass
    calls no ``scontrol``). The cell then hands the signal it caught to submitit (:func:`_hand_over`), exactly as
    if it had arrived at submitit directly: on USR2 submitit calls :meth:`checkpoint` (inherited: resubmit ``self``
    with the same arguments), counts a timeout against ``slurm.max_num_timeout`` — giving the cell up once they are
    spent — and requeues the job. The requeued task receives the same ``config_path``, hence the same
    ``train.run_dir``, resumes from the checkpoint (never another cell's directory) and ends with the weights of an
    uninterrupted run. When submitit ignores the signal (SIGTERM, which it bypasses, or USR2 on a rank other than
    0, where rank 0 requeues the job) training goes on from the checkpoint just written. A cell with ``done.json``
    returns at once.
    """

    def __call__(self, config_path: str, threads: int) -> str:
        import galmass.train as training

        cfg = load_config(config_path)
        _set_threads(cfg.train.threads or threads)  # the config's choice, else the job's CPUs per task
        while True:
            try:
                return str(training.train(cfg, requeue=False))
            except training.Preempted as stop:
                _hand_over(stop)  # returns only where submitit ignores the signal
                sig = _caught_signal(stop)
                print(f"[galmass sweep] {stop}; submitit ignores {sig.name if sig else 'it'} here: training goes on",
                      flush=True)


def _caught_signal(stop: BaseException) -> signal.Signals | None:
    """The signal behind a ``galmass.train.Preempted``: its ``signal`` attribute if it has one, else the name that
    begins its message (``"SIGUSR2 received: ..."``); None when this rank stopped because another one was signalled."""
    sig = getattr(stop, "signal", None)
    if isinstance(sig, int):
        return signal.Signals(sig)
    m = re.match(r"\s*(SIG[A-Z0-9]+) received", str(stop))
    return getattr(signal, m.group(1), None) if m else None


def _submitit_handles(sig: signal.Signals) -> bool:
    """Whether the handler installed now for ``sig`` is submitit's (a job started by submitit's executor)."""
    try:
        from submitit.core.job_environment import SignalHandler
    except ImportError:  # pragma: no cover - submitit is optional
        return False
    return isinstance(getattr(signal.getsignal(sig), "__self__", None), SignalHandler)


def _hand_over(stop: BaseException) -> None:
    """Deliver the preemption signal that galmass caught to submitit's own handler (galmass's is uninstalled by now).

    On rank 0 submitit's USR2 handler checkpoints and requeues the job and exits (``SystemExit``), or raises
    ``UncompletedJobError`` once ``max_num_timeout`` timeouts are spent; this function then does not return. It
    returns when submitit ignores the signal. Without a submitit handler (a plain call, the debug executor) there is
    nobody to requeue: ``stop`` is re-raised and the caller reruns to resume.
    """
    if not _submitit_handles(signal.SIGUSR2):
        raise stop
    sig = _caught_signal(stop)
    if sig is not None and _submitit_handles(sig):
        print(f"[galmass sweep] preempted: {stop}; handing {sig.name} to submitit", flush=True)
        signal.raise_signal(sig)  # the Python-level handler runs before this returns


class EvaluateSweep:
    """Job: evaluate every finished cell on the test split of every dataset, then write the cross-suite report."""

    def __call__(self, plan_path: str, threads: int) -> str:
        from galmass.evaluate import evaluate
        from galmass.report import write_sweep_report

        _set_threads(threads)
        plan = Plan.from_json(Path(plan_path).read_text())
        for cell in plan.cells:
            if not (Path(cell.run_dir) / "done.json").exists():
                print(f"[galmass sweep] cell {cell.name} has no done.json: not evaluated", flush=True)
                continue
            for ds in plan.datasets:
                out = _eval_dir(cell, ds)
                if not (out / "metrics.json").exists():
                    evaluate(cell.run_dir, data_path=ds.path, split="test", out_dir=out)
        return str(write_sweep_report(plan, Path(plan.out) / "report"))


def _eval_dir(cell: Cell, ds: Dataset) -> Path:
    return Path(cell.run_dir) / f"eval-{ds.name}"


# ------------------------------------------------------------------------------------------------ launching


def _executor(spec: SweepSpec, s: SlurmSpec, out: Path, kind: str):
    import submitit

    cluster = {"slurm": "slurm", "local": "local", "debug": "debug"}.get(kind)
    ex = submitit.AutoExecutor(folder=str(out / "submitit" / "%j"), cluster=cluster,
                               slurm_max_num_timeout=s.max_num_timeout)
    params: dict[str, Any] = {"timeout_min": s.time_min, "cpus_per_task": s.cpus_per_task, "name": spec.name}
    if ex.cluster == "slurm":
        params.update(slurm_array_parallelism=s.array_parallelism, slurm_signal_delay_s=s.signal_delay_s,
                      slurm_setup=list(s.setup))
        if s.partition:
            params["slurm_partition"] = s.partition
        if s.mem_gb > 0:
            params["mem_gb"] = s.mem_gb
    return ex, params


# What each kind of shortfall (hpc.slurm_resources.Shortfall.what) is called in the sweep file.
_REQUEST_KEYS = {"cpus": "slurm.tasks_per_node × slurm.cpus_per_task", "gpus": "slurm.gpus_per_node",
                 "mem": "slurm.mem_gb", "nodes": "slurm.nodes", "time": "slurm.time_min",
                 "node": "slurm.cpus_per_task, gpus_per_node and mem_gb together"}


def _request(s: SlurmSpec) -> Request:
    """The largest job of the sweep (a training cell; dataset and evaluation jobs ask for a subset of it)."""
    return Request(nodes=s.nodes, tasks_per_node=s.tasks_per_node, cpus_per_task=s.cpus_per_task,
                   gpus_per_node=s.gpus_per_node, mem_mb=s.mem_gb * 1024, time_min=s.time_min)


def _shortfall_hint(what: str, req: Request, part: Partition) -> str:
    most = {a: max(getattr(g, a) for g in part.groups) for a in ("cpus", "gpus", "mem_mb")}
    per_task = most["cpus"] // req.tasks_per_node
    return {"cpus": f"slurm.cpus_per_task: {per_task}, or slurm.fit_to_node: true" if per_task else
                    f"slurm.tasks_per_node: {most['cpus']} or fewer (one CPU each at least)",
            "gpus": f"slurm.gpus_per_node: {most['gpus']} (with tasks_per_node equal), or a GPU slurm.partition "
                    "(sinfo -o '%P %G')",
            "mem": f"slurm.mem_gb: {most['mem_mb'] // 1024} or less (0: the cluster's default)",
            "nodes": f"slurm.nodes: {int(min(part.nodes, part.max_nodes))}",
            "time": f"slurm.time_min: {part.max_time_min:g} (a cell that runs out of time resumes)",
            "node": "ask for less of one of them, or another slurm.partition (sinfo -o '%P %c %m %G %D')"}[what]


def fit_partition(spec: SweepSpec, log: Callable[[str], None] = print,
                  read: Callable[[str], Partition] | None = None) -> SlurmSpec:
    """Check the sweep's SLURM request against its partition's nodes before anything is submitted.

    A job that no node can hold would pend forever (Reason=PartitionConfig). With ``slurm.fit_to_node`` a too
    large ``cpus_per_task`` is lowered to the most that fits (logged); any other shortfall is an error.

    Parameters
    ----------
    spec : SweepSpec
        The sweep; ``spec.slurm`` holds the request.
    log : callable
        Receives the fit_to_node note and, when sinfo cannot be read, a warning (the request is then unchecked).
    read : callable or None
        ``partition name -> Partition``; None: :func:`hpc.slurm_resources.read_partition` (``sinfo``).

    Returns
    -------
    SlurmSpec
        ``spec.slurm``, or a copy with the fitted ``cpus_per_task``.

    Raises
    ------
    ConfigError
        Naming the sweep file, the keys, the request, what the partition has, and a HINT.
    """
    s, where = spec.slurm, getattr(spec, "_source", "sweep")
    try:
        part = (read or read_partition)(s.partition)
    except UnknownPartition as err:
        raise ConfigError(f"{where}: slurm.partition: {err}") from None
    except SlurmResourceError as err:
        log(f"[galmass sweep] warning: the SLURM request was not checked against the partition: {err}")
        return s
    req = _request(s)
    short = shortfalls(req, part)
    if short and s.fit_to_node and {x.what for x in short} <= {"cpus", "node"}:
        cpus = largest_cpus_per_task(req, part)
        if cpus:
            log(f"[galmass sweep] slurm.fit_to_node: cpus_per_task {s.cpus_per_task} → {cpus}, the most that fits "
                f"{s.tasks_per_node} task(s) per node on {part.describe()}")
            return dataclasses.replace(s, cpus_per_task=cpus)
    if short:
        what = "; ".join(f"{_REQUEST_KEYS[x.what]}: {x}" for x in short)
        hints = "; ".join(_shortfall_hint(x.what, req, part) for x in short)
        raise ConfigError(f"{where}: no job of this sweep could ever start on {part.describe()}: {what}. "
                          f"HINT: {hints}")
    return s


def _resolve_kind(kind: str) -> str:
    if kind == "auto":
        return "slurm" if shutil.which("sbatch") else "local"
    return kind


def _pending_work(plan: Plan) -> tuple[list[Dataset], list[Cell], bool]:
    todo_ds = [d for d in plan.datasets if not (Path(d.path) / "manifest.json").exists()]
    todo_cells = [c for c in plan.cells if not (Path(c.run_dir) / "done.json").exists()]
    report = Path(plan.out) / "report" / "report.md"
    evals_missing = any(not (_eval_dir(c, d) / "metrics.json").exists() for c in plan.cells for d in plan.datasets)
    return todo_ds, todo_cells, bool(todo_cells or evals_missing or not report.exists())


def write_plan(plan: Plan) -> Path:
    """Write ``OUT/sweep.json`` and each cell's resolved ``config.yaml`` (existing ones were checked equal)."""
    from hpc.atomic import atomic_write_text

    out = Path(plan.out)
    out.mkdir(parents=True, exist_ok=True)
    for cell in plan.cells:
        path = Path(cell.config)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, dump_config(plan._configs[cell.name]))  # type: ignore[attr-defined]
    atomic_write_text(out / PLAN_FILE, plan.to_json())
    return out / PLAN_FILE


def launch(spec: SweepSpec, spec_dir: Path | None = None, executor: str | None = None, dry_run: bool = False,
           wait: bool = False, log=print) -> dict[str, Any]:
    """Plan, then submit the missing datasets, the unfinished cells (one array) and the evaluation + report job.

    Returns
    -------
    dict
        ``plan`` (Plan), ``submitted`` (job ids per stage; empty lists when nothing was needed), ``report`` (path
        of report.md, once written: immediately for local/debug executors or with ``wait``).
    """
    plan = plan_sweep(spec, spec_dir)
    kind = _resolve_kind(executor or spec.executor)
    todo_ds, todo_cells, need_eval = _pending_work(plan)
    # Before anything is submitted (and in a dry run): a request no node can hold would pend forever.
    s = fit_partition(spec, log) if kind == "slurm" and (todo_ds or todo_cells or need_eval) else spec.slurm
    log(f"[galmass sweep] {plan.name}: {len(plan.cells)} cells × {len(plan.datasets)} datasets → {plan.out}")
    for c in plan.cells:
        state = "todo" if c in todo_cells else "done"
        log(f"  [{state}] {c.name}: {json.dumps(c.values)} on {c.dataset}")
    for w in plan.warnings:  # type: ignore[attr-defined]
        log(f"[galmass sweep] warning: {w}")
    log(f"  datasets to generate: {len(todo_ds)}; cells to train: {len(todo_cells)}; "
        f"evaluation + report: {'yes' if need_eval else 'up to date'}; executor: {kind}")
    result: dict[str, Any] = {"plan": plan, "submitted": {"datasets": [], "train": [], "evaluate": []},
                              "report": None}
    if dry_run:
        return result
    report = Path(plan.out) / "report" / "report.md"
    if not (todo_ds or todo_cells or need_eval):
        log("[galmass sweep] nothing to do: every cell is trained and the report is up to date "
            f"({report})")
        result["report"] = report
        return result
    out = Path(plan.out)
    active = _active_jobs(out)
    if active:
        # A second submission now would train the same cell directories twice at the same time.
        raise ConfigError(
            f"sweep {plan.name} still has jobs in the queue ({', '.join(active)}); nothing submitted. "
            "HINT: wait for them (squeue) or scancel them, then relaunch"
        )
    plan_path = write_plan(plan)
    ex, base_params = _executor(spec, s, out, kind)
    slurm = ex.cluster == "slurm"

    def submit(stage: str, fn, args: list[tuple], deps: list[str], dep_type: str, **extra):
        params = dict(base_params, **extra)
        if slurm:
            params["slurm_additional_parameters"] = dict(s.additional or {})
            params["slurm_dependency"] = f"{dep_type}:" + ":".join(deps) if deps else None
            params["name"] = f"{spec.name}-{stage}"
        ex.update_parameters(**params)
        jobs = ex.map_array(fn, *zip(*args)) if len(args) > 1 or stage == "train" else [ex.submit(fn, *args[0])]
        result["submitted"][stage] = [j.job_id for j in jobs]
        log(f"[galmass sweep] {stage}: submitted {len(jobs)} job(s) {_array_id(jobs)}")
        if not slurm:  # no dependencies outside SLURM: run the stages one after the other
            for j in jobs:
                j.result()
        return jobs

    deps: list[str] = []
    if todo_ds:
        jobs = submit("datasets", GenerateDataset(), [(d.config, s.cpus_per_task) for d in todo_ds], [], "")
        deps = [_array_id(jobs)]
    train_jobs = []
    if todo_cells:
        gpu = {"gpus_per_node": s.gpus_per_node} if s.gpus_per_node else {}
        train_jobs = submit("train", TrainCell(), [(c.config, s.cpus_per_task) for c in todo_cells], deps,
                            "afterok", nodes=s.nodes, tasks_per_node=s.tasks_per_node, **gpu)
        deps = [_array_id(train_jobs)]
    # afterany: the report must also come when a cell failed (it lists the missing cells).
    eval_jobs = submit("evaluate", EvaluateSweep(), [(str(plan_path), s.cpus_per_task)], deps, "afterany")
    if slurm:
        from hpc.atomic import atomic_write_json

        atomic_write_json(out / JOBS_FILE, result["submitted"])
    if not slurm or wait:
        if slurm:
            _wait_for(eval_jobs[0], log)
        result["report"] = Path(eval_jobs[0].result())
        log(f"[galmass sweep] report: {result['report']}")
    else:
        log(f"[galmass sweep] the report will be written to {report} (squeue -u $USER to follow)")
    return result


def _active_jobs(out: Path) -> list[str]:
    """Job ids of this sweep's last SLURM submission that are still pending or running (``squeue``)."""
    path = out / JOBS_FILE
    if not path.exists() or not shutil.which("squeue"):
        return []
    ids = sorted({str(j).split("_")[0] for jobs in json.loads(path.read_text()).values() for j in jobs})
    if not ids:
        return []
    active = []
    for i in ids:  # one call per job: squeue fails as a whole when one id of a list is already forgotten
        proc = subprocess.run(["squeue", "-h", "-o", "%i", "-j", i], capture_output=True, text=True)
        active += proc.stdout.split() if proc.returncode == 0 else []
    return active


def _array_id(jobs) -> str:
    return str(jobs[0].job_id).split("_")[0] if jobs else ""


def _wait_for(job, log, poll_s: float = 1.0) -> None:
    """Wait for a submitit job's result file (works without ``sacct``: only ``squeue`` is asked)."""
    path = job.paths.result_pickle
    while not path.exists():
        if getattr(job, "_cancel_command", "") == "scancel" and shutil.which("squeue"):
            gone = subprocess.run(["squeue", "-h", "-j", str(job.job_id)], capture_output=True, text=True)
            if gone.returncode == 0 and not gone.stdout.strip() and not path.exists():
                time.sleep(2 * poll_s)  # the result file is written just before the job leaves the queue
                if not path.exists():
                    raise RuntimeError(f"job {job.job_id} left the queue without a result. HINT: see "
                                       f"{job.paths.stderr}")
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="galmass sweep", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="sweep YAML (schema: galmass.sweep.SweepSpec)")
    parser.add_argument("--dry-run", action="store_true", help="print the grid and what would be submitted")
    parser.add_argument("--executor", choices=["auto", "slurm", "local", "debug"], default=None,
                        help="override the file's executor (local: subprocesses on this machine, stage by stage)")
    parser.add_argument("--wait", action="store_true", help="with SLURM: wait for the report")
    args = parser.parse_args(argv)
    try:
        spec = load_sweep(args.sweep)
        launch(spec, Path(args.sweep).parent, args.executor, args.dry_run, args.wait)
    except ConfigError as err:
        print(f"galmass sweep: config error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
