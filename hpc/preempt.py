"""Preemption: turn SIGUSR2/SIGTERM into "finish this step, checkpoint, exit so the job is requeued".

Why a flag and not work inside the handler: a signal can arrive in the middle of ``backward()`` or of a collective.
Saving there would store half-updated weights, and under DDP the other ranks would be stuck in the collective. So
the handler only records the signal; the training loop polls :meth:`PreemptionHandler.should_stop` at each step
boundary, where the model, optimiser and loader position are consistent.

Which signals
-------------
* ``SIGUSR2`` – submitit's timeout signal, and what ``sbatch --signal=USR2@120`` (or ``B:USR2``) sends.
* ``SIGTERM`` – sent by ``scancel`` and by Slurm on preemption (``PreemptMode=REQUEUE``) before the grace time
  ends with SIGKILL; ``torchrun`` forwards it to its workers.

Under ``torchrun`` send SIGTERM (or signal the worker processes): the torchrun agent itself does not handle SIGUSR2,
whose default action ends the agent. An sbatch script using ``--signal=B:USR2@120`` should therefore ``trap`` USR2
in the batch shell and forward it as SIGTERM to the ``srun``/``torchrun`` step.

Ranks must agree
----------------
A signal may reach only some ranks (``--signal=B:USR2`` reaches the batch shell; a user may ``kill`` one process).
If one rank stopped and the others went on, they would hang in the next all-reduce. :meth:`should_stop` therefore
sums the flag over all ranks (one tiny all-reduce per step, done by the caller-supplied ``reduce`` function) so
every rank stops after the same step.

Exit status and requeue
-----------------------
Slurm does not requeue a job because of its exit code unless the site configures ``RequeueExit=`` in slurm.conf.
:data:`PREEMPT_EXIT_CODE` is 75 (``EX_TEMPFAIL`` of sysexits.h: "temporary failure, retry later"); add
``RequeueExit=75`` where you can. Independently of that, :func:`request_requeue` runs
``scontrol requeue $SLURM_JOB_ID`` when ``SLURM_JOB_ID`` is set (rank 0 only; Slurm then restarts the whole job
with the same command, which resumes from the checkpoint). This is what submitit's own USR2 handler does too, so
the same path works inside a submitit job. Outside Slurm nothing is requeued: rerun the command to resume.

Example
-------
>>> with PreemptionHandler() as pre:                  # doctest: +SKIP
...     for step, batch in enumerate(loader):
...         train_step(batch)
...         if pre.should_stop(all_reduce_sum):
...             save_checkpoint(...); request_requeue(); sys.exit(PREEMPT_EXIT_CODE)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any

__all__ = ["PREEMPT_EXIT_CODE", "DEFAULT_SIGNALS", "PreemptionHandler", "request_requeue"]

PREEMPT_EXIT_CODE = 75
"""Exit status after a preemption checkpoint (``EX_TEMPFAIL``); configure Slurm ``RequeueExit=75`` to requeue on it."""

DEFAULT_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGUSR2, signal.SIGTERM)


class PreemptionHandler:
    """Records SIGUSR2/SIGTERM in a flag instead of dying; restores the previous handlers on :meth:`uninstall`.

    Parameters
    ----------
    signals : sequence of signal.Signals
        Signals to catch (default SIGUSR2 and SIGTERM).

    Attributes
    ----------
    received : signal.Signals or None
        The first signal caught, if any.

    Notes
    -----
    Signal handlers can only be installed from the main thread of the main interpreter; elsewhere (a thread of a
    notebook kernel) :meth:`install` warns on stderr and does nothing, so training still runs, without preemption
    support. A second identical signal while the checkpoint is being written is ignored (the first one already asked
    for a stop); SIGKILL cannot be caught, which is what the per-epoch atomic checkpoints are for.
    """

    def __init__(self, signals: Sequence[signal.Signals] = DEFAULT_SIGNALS) -> None:
        if not signals:
            raise ValueError("signals must name at least one signal. HINT: use the default (SIGUSR2, SIGTERM).")
        self.signals = tuple(signal.Signals(s) for s in signals)
        self.received: signal.Signals | None = None
        self.seen: list[signal.Signals] = []
        """Every distinct signal caught, in order of arrival."""
        self._previous: dict[signal.Signals, Any] = {}

    # -- installation --------------------------------------------------------------------------------------------
    def _handle(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002 - signal API
        sig = signal.Signals(signum)
        if self.received is None:
            self.received = sig
        if sig not in self.seen:  # e.g. SIGTERM then USR2 (a preemption-style interrupt): remember both
            self.seen.append(sig)

    def install(self) -> PreemptionHandler:
        """Install the handlers (idempotent). Returns ``self`` for chaining."""
        if self._previous:
            return self
        if threading.current_thread() is not threading.main_thread():
            print("[hpc.preempt] not in the main thread: preemption signals are not handled", file=sys.stderr)
            return self
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def uninstall(self) -> None:
        """Restore the handlers that were active before :meth:`install`."""
        for s, prev in self._previous.items():
            signal.signal(s, prev if prev is not None else signal.SIG_DFL)
        self._previous = {}

    def __enter__(self) -> PreemptionHandler:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    # -- polling -------------------------------------------------------------------------------------------------
    @property
    def requested(self) -> bool:
        """True once this process has received one of the signals."""
        return self.received is not None

    def should_stop(self, reduce: Callable[[list[float]], list[float]] | None = None) -> bool:
        """Whether *any* rank was signalled; call it at the same point on every rank (it may be a collective).

        Parameters
        ----------
        reduce : callable or None
            Sum over ranks, e.g. :func:`hpc.dist.all_reduce_sum`; ``None`` for a single process.
        """
        flag = 1.0 if self.requested else 0.0
        if reduce is not None:
            flag = float(reduce([flag])[0])
        return flag > 0

    def describe(self) -> str:
        """The received signal's name, or ``'no signal'``."""
        return self.received.name if self.received is not None else "no signal"


def request_requeue(env: Mapping[str, str] | None = None, timeout_s: float = 60.0) -> str:
    """Ask Slurm to requeue this job (``scontrol requeue $SLURM_JOB_ID``) when running under Slurm.

    Call it on one rank only (rank 0) after the checkpoint is on disk. Under a job array the array task's own id
    (``SLURM_ARRAY_JOB_ID_SLURM_ARRAY_TASK_ID``) is requeued, not the whole array.

    Parameters
    ----------
    env : Mapping or None
        Environment to read (default ``os.environ``).
    timeout_s : float
        Limit for the ``scontrol`` call [s].

    Returns
    -------
    str
        One line for the log saying what was done (nothing outside Slurm; a failed ``scontrol`` is reported, not
        raised, since the checkpoint is already safe and the user can resubmit).
    """
    env = os.environ if env is None else env
    job = env.get("SLURM_JOB_ID", "").strip()
    if not job:
        return "not under Slurm (no SLURM_JOB_ID): rerun the same command to resume"
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    exe = shutil.which("scontrol")
    if exe is None:
        return f"SLURM_JOB_ID={job} but no scontrol on PATH: resubmit the job to resume"
    try:
        proc = subprocess.run([exe, "requeue", job], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"scontrol requeue {job} failed ({err}): resubmit the job to resume"
    if proc.returncode != 0:
        return f"scontrol requeue {job} failed ({proc.stderr.strip() or proc.returncode}): resubmit to resume"
    return f"requeued Slurm job {job}"
