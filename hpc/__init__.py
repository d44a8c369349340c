"""Cluster mechanics for galmass: launcher detection, torch.distributed set-up, atomic files, locks, checkpoints,
deterministic global-batch sharding and SLURM resource checks.

This package never imports ``galmass`` (it is reusable and testable on its own). Names are loaded lazily, so
``import hpc.launchers`` or ``from hpc import detect_launcher`` in an sbatch pre-flight check does not pay for
importing torch.

Modules
-------
launchers   which launcher started the process (torchrun / SLURM / MPI / single) and its ranks
dist        init_distributed, collectives that are no-ops in one process, autocast
atomic      write-temp-fsync-rename file replacement
checkpoint  rotating checkpoints with corrupt-file fallback; RNG capture/restore
sampler     GlobalBatchSampler (same global batches for any world size), split_evenly
preempt     SIGUSR2/SIGTERM -> stop at a step boundary, exit status 75, scontrol requeue
dali_loader BatchSource (rank slice of a global batch), TorchLoader and DaliLoader over it
augment     sky-plane symmetries and noise drawn from (seed, epoch, step, position)
lock        one process per directory (run directories, datasets): stale locks of dead processes are taken over
procs       worker processes that die with their parent (no orphans after a SIGKILL)
slurm_resources  a job's request checked against what the partition's nodes have (sinfo/scontrol), fit_to_node
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # launchers (no torch)
    "LauncherError": "launchers",
    "LauncherEnv": "launchers",
    "TorchrunEnv": "launchers",
    "SlurmEnv": "launchers",
    "MpiEnv": "launchers",
    "SingleProcessEnv": "launchers",
    "detect_launcher": "launchers",
    "expand_hostlist": "launchers",
    "first_host": "launchers",
    "requested_gpus_per_node": "launchers",
    # atomic (no torch)
    "atomic_path": "atomic",
    "atomic_write_bytes": "atomic",
    "atomic_write_text": "atomic",
    "atomic_write_json": "atomic",
    # dist
    "DistInfo": "dist",
    "init_distributed": "dist",
    "get_info": "dist",
    "cleanup": "dist",
    "is_main": "dist",
    "barrier": "dist",
    "all_reduce_sum": "dist",
    "broadcast_object": "dist",
    "autocast_context": "dist",
    # checkpoint
    "CheckpointError": "checkpoint",
    "save_checkpoint": "checkpoint",
    "load_latest": "checkpoint",
    "capture_rng_state": "checkpoint",
    "restore_rng_state": "checkpoint",
    # sampler
    "GlobalBatchSampler": "sampler",
    "split_evenly": "sampler",
    # preemption (no torch)
    "PREEMPT_EXIT_CODE": "preempt",
    "PreemptionHandler": "preempt",
    "request_requeue": "preempt",
    # loaders and augmentation
    "BatchSource": "dali_loader",
    "TorchLoader": "dali_loader",
    "DaliLoader": "dali_loader",
    "dali_available": "dali_loader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # PEP 562 lazy attribute: import the submodule on first use only.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hpc' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"hpc.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
