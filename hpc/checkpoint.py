"""Rotating, crash-safe checkpoints and RNG state capture for exact resume.

Layout: one directory per run (never shared between runs or sweep cells, so a requeued job can only find its
own checkpoints) holding ``ckpt-000012.pt``, ``ckpt-000013.pt``, ... Each file is written through
:func:`hpc.atomic.atomic_path`, so a job killed mid-save leaves the previous checkpoint intact. If the newest file
is still unreadable (disk full, a copy truncated by hand), :func:`load_latest` warns and falls back to the one
before.

Only one rank should call :func:`save_checkpoint` (rank 0); the others wait at a barrier if they need the file.

Example
-------
>>> save_checkpoint(run_dir, epoch, {"model": model.state_dict(), "rng": capture_rng_state()}, keep=3)
>>> state, path = load_latest(run_dir)          # (None, None) on a fresh run
"""

from __future__ import annotations

import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpc.atomic import atomic_path

__all__ = [
    "CheckpointError",
    "checkpoint_name",
    "list_checkpoints",
    "save_checkpoint",
    "load_latest",
    "capture_rng_state",
    "restore_rng_state",
]

_NAME = re.compile(r"^ckpt-(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """Checkpoints exist but none of them can be loaded."""


def checkpoint_name(step_or_epoch: int) -> str:
    """File name for a step/epoch number, e.g. ``12`` -> ``'ckpt-000012.pt'`` (zero padded so names sort)."""
    return f"ckpt-{step_or_epoch:06d}.pt"


def list_checkpoints(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(number, path)`` of the checkpoints in ``directory``, oldest first; temporaries are ignored."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m is not None and p.is_file():
            found.append((int(m.group(1)), p))
    # Sort by the parsed number, not the name: numbers beyond 999999 have more digits and would sort wrongly.
    return sorted(found)


def save_checkpoint(directory: str | os.PathLike[str], step_or_epoch: int, state: dict[str, Any],
                    keep: int) -> Path:
    """Atomically save ``state`` as ``ckpt-{step_or_epoch:06d}.pt`` and delete all but the newest ``keep``.

    Parameters
    ----------
    directory : str or PathLike
        The run's own checkpoint directory; created if missing.
    step_or_epoch : int
        Counter in the file name (>= 0); larger means newer.
    state : dict
        What to save (model/optimizer ``state_dict``, counters, :func:`capture_rng_state`). Keep it to tensors
        and plain Python containers/scalars so that :func:`load_latest` can use ``weights_only=True``.
    keep : int
        Number of checkpoints to keep (>= 1). The file just written is never deleted.

    Returns
    -------
    Path
        The written file.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}. HINT: keep=1 retains only the latest checkpoint.")
    if step_or_epoch < 0:
        raise ValueError(f"step_or_epoch must be >= 0, got {step_or_epoch}.")
    if not isinstance(state, dict):
        raise ValueError(f"state must be a dict, got {type(state).__name__}.")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / checkpoint_name(step_or_epoch)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    # Rotate only after the new file is in place: a crash in between leaves one checkpoint too many, never none.
    existing = list_checkpoints(d)
    doomed = [p for _, p in existing[:-keep]] if len(existing) > keep else []
    for p in doomed:
        if p != path:
            p.unlink(missing_ok=True)
    return path


def load_latest(directory: str | os.PathLike[str], map_location: str | torch.device = "cpu",
                weights_only: bool = True) -> tuple[dict[str, Any] | None, Path | None]:
    """Load the newest readable checkpoint in ``directory``.

    Parameters
    ----------
    directory : str or PathLike
        The run's checkpoint directory (may not exist yet).
    map_location : str or torch.device
        Passed to ``torch.load``; ``"cpu"`` by default so that resuming never needs the original GPU layout.
    weights_only : bool
        Passed to ``torch.load``. True (safe unpickling) works for states of tensors and plain containers, which
        is what :func:`save_checkpoint` documents and :func:`capture_rng_state` produces.

    Returns
    -------
    (state, path)
        The loaded dict and its file, or ``(None, None)`` when there is no checkpoint (fresh run).

    Warns
    -----
    UserWarning
        For each checkpoint that fails to load (truncated, corrupt), naming the file and the error, before falling
        back to the previous one.

    Raises
    ------
    CheckpointError
        If checkpoints exist but none loads: starting from scratch silently would discard the run's progress.
    """
    failures: list[str] = []
    for _, path in reversed(list_checkpoints(directory)):
        try:
            state = torch.load(path, map_location=map_location, weights_only=weights_only)
        except Exception as exc:  # noqa: BLE001 - any failure to read means "try the previous one"
            # One line: torch's unpickling errors span many lines and would break log grepping.
            msg = " ".join(f"{type(exc).__name__}: {exc}".split())
            failures.append(f"{path.name}: {msg}")
            warnings.warn(f"checkpoint {path} could not be loaded ({msg}); falling back to the previous one.",
                          stacklevel=2)
            continue
        if not isinstance(state, dict):
            failures.append(f"{path.name}: contains {type(state).__name__}, not a dict")
            warnings.warn(f"checkpoint {path} holds a {type(state).__name__}, not a dict; skipping it.",
                          stacklevel=2)
            continue
        return state, path
    if failures:
        raise CheckpointError(
            f"no loadable checkpoint in {directory}: " + "; ".join(failures)
            + ". HINT: move the broken files away to start fresh, or pass weights_only=False for trusted "
            "checkpoints holding arbitrary Python objects."
        )
    return None, None


def capture_rng_state() -> dict[str, Any]:
    """Snapshot the RNGs of this process: Python ``random``, NumPy's global generator, torch CPU and CUDA.

    The result holds only tensors, ints, floats, strings, lists and tuples, so it survives ``torch.save`` /
    ``torch.load(weights_only=True)``. RNG state is per process: under DDP each rank has its own. Prefer making
    randomness a function of (seed, epoch, step), as :class:`hpc.sampler.GlobalBatchSampler` does, and use this
    for the remaining global RNG use (augmentation, dropout).
    """
    np_name, np_key, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": str(np_name),
            # int64 tensor: the uint32 key fits, and tensors are allowed by weights_only loading (ndarrays are not).
            "key": torch.from_numpy(np.asarray(np_key, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore RNGs captured by :func:`capture_rng_state` (missing entries are left alone).

    CUDA states are restored for as many devices as both the snapshot and this machine have; a different device
    count triggers a warning, since draws on the extra devices cannot be reproduced.
    """
    if "python" in state:
        version, internal, gauss_next = state["python"]
        random.setstate((int(version), tuple(int(v) for v in internal), gauss_next))
    if "numpy" in state:
        s = state["numpy"]
        key = np.asarray(torch.as_tensor(s["key"]).cpu().numpy(), dtype=np.uint32)
        np.random.set_state((s["bit_generator"], key, int(s["pos"]), int(s["has_gauss"]), float(s["gauss"])))
    if "torch" in state:
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    if "cuda" in state and torch.cuda.is_available():
        saved = list(state["cuda"])
        n = min(len(saved), torch.cuda.device_count())
        if n != len(saved) or n != torch.cuda.device_count():
            warnings.warn(
                f"RNG snapshot has {len(saved)} CUDA states but this process sees {torch.cuda.device_count()} "
                f"devices; restoring the first {n}.",
                stacklevel=2,
            )
        for i in range(n):
            torch.cuda.set_rng_state(torch.as_tensor(saved[i], dtype=torch.uint8).cpu(), device=i)
