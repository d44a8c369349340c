"""Training of the mass posterior (``galmass train``; also ``torchrun -m galmass.train``).

The same code runs in one process, under ``torchrun --nproc_per_node=N`` and under ``srun`` (launcher detection in
``hpc.launchers``). It reads as a sequence of named steps over one :class:`Session`:

    check the geometry → lock the run directory → check a stored config → open the dataset (hash and checksums)
    → build model, optimiser, loader → record the config → resume → epochs (steps, validation, checkpoint) → finish

Guarantees:

* **DDP equivalence** – the data order depends only on (seed, epoch); every rank takes an equal contiguous slice of
  each global batch (``hpc.sampler.GlobalBatchSampler``); GroupNorm keeps samples independent. N ranks therefore
  compute the gradient of the same global batch as 1 rank.
* **Exact resume** – a full-state checkpoint (model, optimiser, scheduler, early-stopping state, RNG) is written
  atomically after every epoch; rerunning the same command continues from the newest readable one and ends with
  the same weights as an uninterrupted run.
* **Preemption** – SIGUSR2 or SIGTERM make every rank finish the current step; rank 0 writes a checkpoint that
  also holds the loader position, asks Slurm to requeue the job (unless the caller owns requeueing, as the
  submitit sweep does: ``train(cfg, requeue=False)``) and the process exits with ``hpc.preempt.PREEMPT_EXIT_CODE``.
* **Nothing mixed** – one process per run directory (a lock); the dataset must be the one the config describes
  (``data_hash``), verified by checksum (train and validation shards); a run directory keeps one config
  (only :data:`galmass.config.RESUME_FREE_KEYS` may change); ``config.yaml`` is written only once everything
  has been validated, so a failed start leaves nothing behind.
* **Divergence is an error** – a non-finite loss or gradient stops training before the bad step is applied, with
  the epoch and step; the checkpoints of earlier epochs stay intact.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from galmass.config import Config, ConfigError, config_diffs, config_to_dict, data_hash, dump_config, load_config
from galmass.datasets import DatasetError, ShardedDataset, load_manifest
from galmass.datasets.integrity import manifest_hash
from galmass.models import MassPosterior
from galmass.models.balance import Balanced
from galmass.models.io import build_model, save_model, to_torch
from galmass.models.network import input_keys
from galmass.target_domain import target_data
from hpc import checkpoint as ckpt
from hpc.atomic import DiskFullError, atomic_write_json, atomic_write_text, remove_stale_temporaries
from hpc.dali_loader import BatchSource, DaliLoader, TorchLoader, dali_available
from hpc.dist import (DistInfo, all_reduce_sum, autocast_context, barrier, broadcast_object, cleanup, exit_worker,
                      init_distributed)
from hpc.lock import DirectoryLock, LockedError
from hpc.preempt import PREEMPT_EXIT_CODE, PreemptionHandler, request_requeue
from hpc.sampler import split_evenly

__all__ = ["train", "main", "Preempted", "TrainingDiverged", "Session", "Progress"]

LOG_LINES_PER_EPOCH = 10
"""Without a terminal (cluster logs) and without ``train.log_every``, this many plain lines are printed per epoch."""


class Preempted(Exception):
    """Training stopped on a preemption signal after writing a checkpoint; rerun the same command to resume.

    ``signal`` is the signal that asked for the stop (SIGUSR2 when it was among those received: the one a job
    manager such as submitit acts on), or None when another rank was signalled.
    """

    def __init__(self, message: str, sig: Any = None) -> None:
        super().__init__(message)
        self.signal = sig


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN/inf; nothing from the failing epoch was saved."""


@dataclass
class Progress:
    """Where training stands: what a checkpoint restores (besides weights, optimiser and RNG)."""

    epoch: int = 0
    """Next epoch to run."""
    step: int = 0
    """First step of that epoch (> 0 only after a mid-epoch preemption)."""
    best: float = math.inf
    """Best validation NLL so far."""
    bad_epochs: int = 0
    """Epochs since the best one (early stopping)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    partial: dict[str, float] = field(default_factory=lambda: {"loss_sum": 0.0, "n_steps": 0, "seconds": 0.0})
    """Accumulators of an epoch cut by preemption."""
    stop: bool = False
    """Early stopping triggered."""
    signalled: bool = False
    """A preemption signal arrived on the last step of the current epoch: exit after its checkpoint."""


@dataclass
class Session:
    """Everything one training run works on; the steps below read and update it."""

    cfg: Config
    info: DistInfo
    run_dir: Path
    manifest: dict[str, Any]
    data_hash: str
    train_set: ShardedDataset
    val_set: ShardedDataset
    model: MassPosterior
    net: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    source: BatchSource
    requeue: bool = True
    target_source: BatchSource | None = None
    """Unlabelled target-domain batches for ``train.adapt`` (None without adaptation)."""
    label_prior: torch.nn.Module | None = None
    """The labels' marginal flow of balanced training (``train.balance``; not part of the saved model)."""
    progress: Progress = field(default_factory=Progress)
    loader: Any = None
    writer: Any = None
    handler: PreemptionHandler = field(default_factory=PreemptionHandler)

    @property
    def main(self) -> bool:
        return self.info.rank == 0

    @property
    def steps_per_epoch(self) -> int:
        return self.source.steps_per_epoch

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def state(self, done_epoch: int, position: dict[str, Any] | None) -> dict[str, Any]:
        """Full training state for a checkpoint; ``position`` is set for a mid-epoch (preemption) one."""
        p = self.progress
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "rng": ckpt.capture_rng_state(), "epoch": done_epoch,
                "best": p.best, "bad_epochs": p.bad_epochs, "history": p.history, "config": config_to_dict(self.cfg),
                "position": position, "data_hash": self.data_hash,
                **({"label_prior": self.label_prior.state_dict()} if self.label_prior is not None else {})}

    def log(self, text: str) -> None:
        if self.main:
            print(f"[galmass] {text}", flush=True)


# ------------------------------------------------------------------------------------------------ set-up steps


def check_geometry(cfg: Config, info: DistInfo) -> None:
    """Batch divisible by the ranks; the requested loader importable."""
    if cfg.train.batch_size % info.world_size:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} is not divisible by the {info.world_size} ranks. "
            f"HINT: --train.batch_size={cfg.train.batch_size - cfg.train.batch_size % info.world_size or info.world_size}"
        )
    if cfg.train.loader == "dali" and not dali_available():
        raise ConfigError(
            "train.loader=dali but NVIDIA DALI is not installed (import nvidia.dali failed). HINT: pip install the "
            "nvidia-dali-cudaXXX wheel matching your CUDA (or `pip install -e .[dali]`), or use --train.loader=torch."
        )


def lock_run_dir(run_dir: Path, info: DistInfo) -> DirectoryLock | None:
    """Rank 0 locks the run directory; every rank raises the same error if another process holds it."""
    lock, error = None, None
    if info.rank == 0:
        try:
            lock = DirectoryLock(run_dir, "galmass train").acquire()
        except LockedError as err:
            error = str(err)
    error = broadcast_object(error)
    if error:
        raise ConfigError(error)
    return lock


def check_stored_config(run_dir: Path, cfg: Config) -> None:
    """A run directory keeps one config: refuse a different one (free keys aside) before any work."""
    stored = run_dir / "config.yaml"
    if not stored.exists():
        return
    diffs = config_diffs(yaml.safe_load(stored.read_text()) or {}, config_to_dict(cfg))
    if diffs:
        raise ConfigError(
            f"{stored}: this run directory was started with a different config ({'; '.join(diffs)}). "
            "Resuming would mix two runs. HINT: use another --train.run_dir."
        )


def open_data(cfg: Config) -> tuple[dict[str, Any], str, ShardedDataset, ShardedDataset]:
    """The dataset of ``cfg.data``: its manifest must carry the hash of this data config; shards are verified."""
    manifest = load_manifest(cfg.data.path)
    wanted, found = data_hash(cfg.data), manifest_hash(manifest)
    if wanted != found:
        stored = manifest["config"]
        diffs = [f"data.{k}: dataset has {stored.get(k)!r}, config says {v!r}"
                 for k, v in config_to_dict(cfg.data).items() if k in stored and stored[k] != v]
        raise DatasetError(
            f"{Path(cfg.data.path) / 'manifest.json'}: this dataset was made with a different data config "
            f"({'; '.join(diffs) or 'hash ' + found + ' vs ' + wanted}). Training would record settings the data "
            "do not have. HINT: run `galmass mock` with this config (another data.path), or drop the data overrides")
    keys = input_keys(cfg.model) + ("labels",)
    # Both splits are checksummed: the validation NLL picks best.pt and stops training.
    valid_only = not cfg.train.use_flagged_labels
    return manifest, found, *(ShardedDataset(cfg.data.path, split, keys, valid_only=valid_only)
                              for split in ("train", "val"))


def _lr_lambda(total_steps: int, warmup_steps: int):
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def build_session(cfg: Config, info: DistInfo, run_dir: Path, requeue: bool) -> Session:
    """Open the data and build model, DDP wrapper, optimiser, schedule and batch source (nothing written)."""
    manifest, h, train_set, val_set = open_data(cfg)
    model = build_model(cfg, manifest).to(info.device)
    # What the optimiser trains: the posterior, plus the labels' marginal flow with balanced NPE.
    objective = Balanced(model, len(manifest["radii_factors"])).to(info.device) if cfg.train.balance > 0 else model
    net: torch.nn.Module = objective
    if info.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    keys = train_set.keys
    source = BatchSource(
        train_set, keys, cfg.train.batch_size, info.rank, info.world_size, cfg.train.seed,
        shuffle=True, pad=True, max_steps=cfg.train.max_steps_per_epoch,
        sky_keys=[k for k in keys if k.startswith("maps_")], augment=cfg.train.augment, noise=cfg.train.aug_noise,
        block=cfg.train.shuffle_block, target_key="labels", target_noise=cfg.model.label_noise_dex,
        hide_key="observer" if cfg.model.observer_inputs else None,
        hide_rate=cfg.model.observer_hidden if cfg.model.observer_inputs else 0.0,
    )
    opt = torch.optim.AdamW(objective.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    spe = source.steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(spe * cfg.train.epochs, max(1, int(cfg.train.warmup_epochs * spe))))
    return Session(cfg, info, run_dir, manifest, h, train_set, val_set, model, net, opt, sched, source, requeue,
                   target_source=_target_source(cfg, info, manifest),
                   label_prior=objective.prior if isinstance(objective, Balanced) else None)


def _target_source(cfg: Config, info: DistInfo, manifest: dict[str, Any]) -> BatchSource | None:
    """Unlabelled batches of the adaptation target (a dataset's train split, or observed catalogues turned into
    inputs with this run's map geometry; :mod:`galmass.target_domain`), in its own shuffled order."""
    if cfg.train.adapt == "none":
        return None
    target = target_data(cfg.train.adapt_target, cfg.data, input_keys(cfg.model), 2 * cfg.train.batch_size,
                         cfg.train.seed)
    if isinstance(target, ShardedDataset) and int(target.manifest["npix"]) != int(manifest["npix"]):
        raise DatasetError(f"{cfg.train.adapt_target}: maps of {target.manifest['npix']} px, the training data "
                           f"has {manifest['npix']} px. HINT: make the target with the same data.npix")
    return BatchSource(target, target.keys, cfg.train.batch_size, info.rank, info.world_size, cfg.train.seed + 1,
                       shuffle=True, pad=True)


def record_config(s: Session) -> None:
    """Write ``config.yaml`` (rank 0, first start only) now that every value and the dataset were validated."""
    stored = s.run_dir / "config.yaml"
    if s.main and not stored.exists():
        atomic_write_text(stored, dump_config(s.cfg))
    barrier()


def resume(s: Session) -> None:
    """Restore the newest readable checkpoint of this run directory, if any."""
    state, path = ckpt.load_latest(s.ckpt_dir)
    if state is None:
        return
    if state.get("data_hash", s.data_hash) != s.data_hash:
        raise DatasetError(f"{path}: written while training on dataset {state['data_hash']}, but "
                           f"{s.cfg.data.path} is {s.data_hash}. HINT: point data.path at the run's dataset")
    s.model.load_state_dict(state["model"])
    if s.label_prior is not None:
        s.label_prior.load_state_dict(state["label_prior"])
    s.opt.load_state_dict(state["optimizer"])
    s.sched.load_state_dict(state["scheduler"])
    ckpt.restore_rng_state(state["rng"])
    best = state["best"] if state["best"] is not None else math.inf
    s.progress = Progress(epoch=state["epoch"] + 1, best=best, bad_epochs=state["bad_epochs"],
                          history=state["history"])
    if state.get("position") is not None:  # written on preemption, in the middle of an epoch
        pos = state["position"]
        s.progress.epoch, s.progress.step = int(pos["epoch"]), int(pos["step"])
        s.progress.partial = {"loss_sum": float(pos["loss_sum"]), "n_steps": int(pos["n_steps"]),
                              "seconds": float(pos["seconds"])}
    s.log(f"resuming {s.run_dir} from {path.name} (epoch {s.progress.epoch}, step {s.progress.step})")


def open_outputs(s: Session) -> None:
    """Loader (at the resume position), TensorBoard writer (rank 0) and the start line."""
    cfg, info, p = s.cfg, s.info, s.progress
    if cfg.train.loader == "dali":
        s.loader = DaliLoader(s.source, p.epoch, p.step, num_workers=cfg.train.num_workers,
                              device_id=info.device.index if info.device.type == "cuda" else None)
    else:
        s.loader = TorchLoader(s.source, num_workers=cfg.train.num_workers)
    if not s.main:
        return
    from torch.utils.tensorboard import SummaryWriter

    s.writer = SummaryWriter(str(s.run_dir / "tb"), purge_step=p.epoch * s.steps_per_epoch + p.step)
    s.log(f"train {cfg.model.tracer}: {len(s.train_set)} train / {len(s.val_set)} val projections, "
          f"{info.world_size} rank(s) [{info.launcher}, {info.backend or 'no process group'}, {info.device}], "
          f"global batch {cfg.train.batch_size}, {s.steps_per_epoch} steps/epoch, "
          f"{sum(q.numel() for q in s.model.parameters())} parameters, loader: {s.loader.name} "
          f"({cfg.train.num_workers} workers{', augmented' if cfg.train.augment else ''})"
          f"{f', balanced NPE (λ = {cfg.train.balance:g})' if cfg.train.balance > 0 else ''}"
          f"{', bf16 autocast' if cfg.train.bf16 and info.device.type == 'cuda' else ''}, dataset {s.data_hash}")


# ------------------------------------------------------------------------------------------------ the loop


def train_step(s: Session, batch: dict[str, Any], where: str, target: dict[str, Any] | None = None
               ) -> tuple[float, bool]:
    """One optimiser step; returns (NLL, preemption requested on any rank). ``target``: an unlabelled batch of
    the adaptation domain (``train.adapt``), aligned with this batch's embeddings.

    One all-reduce per step carries two flags: a non-finite loss/gradient on any rank (then nothing is applied and
    every rank raises :class:`TrainingDiverged`) and a preemption signal on any rank (every rank stops after this
    step, so no rank waits in a collective the others left).
    """
    cfg = s.cfg
    batch = to_torch(batch, s.info.device)
    with autocast_context(s.info.device, cfg.train.bf16):
        out = s.net(batch) if s.target_source is None else s.net(batch, target=to_torch(target, s.info.device))
        nll, terms = out if isinstance(out, tuple) else (out, {})
        loss = nll = nll.float().mean()
        for key, weight in (("mmd", cfg.train.adapt_weight), ("balance", cfg.train.balance), ("prior_nll", 1.0)):
            if key in terms:  # only the options that are on: a plain run's loss is exactly its NLL
                loss = loss + weight * terms[key].float()
    s.opt.zero_grad(set_to_none=True)
    loss.backward()
    max_norm = cfg.train.grad_clip if cfg.train.grad_clip > 0 else math.inf
    norm = torch.nn.utils.clip_grad_norm_(s.net.parameters(), max_norm)
    value = float(nll.detach())
    bad = 0.0 if math.isfinite(float(loss.detach())) and math.isfinite(float(norm)) else 1.0
    flags = [bad, 1.0 if s.handler.requested else 0.0]
    if s.info.world_size > 1:
        flags = all_reduce_sum(flags)
    if flags[0] > 0:
        raise TrainingDiverged(
            f"training diverged at {where}: the loss or gradient is NaN/inf on {int(flags[0])} of "
            f"{s.info.world_size} rank(s) (loss {value}, gradient norm {float(norm)}, lr {s.sched.get_last_lr()[0]:g})."
            f" The step was not applied; the checkpoints in {s.ckpt_dir} hold the epochs before. HINT: lower "
            "--train.lr or set --train.grad_clip, in a new --train.run_dir (a run directory keeps its config)")
    s.opt.step()
    s.sched.step()
    return value, flags[1] > 0


def _bar(s: Session, epoch: int, first: int):
    if not (s.main and s.cfg.train.progress):
        return None
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (a cluster log would get thousands of \r updates).
    return tqdm(total=s.steps_per_epoch, initial=first, desc=f"epoch {epoch}", unit="step", leave=False,
                file=sys.stderr, disable=None)


def _log_every(s: Session, bar: Any) -> int:
    if s.cfg.train.log_every:
        return s.cfg.train.log_every
    if bar is None or getattr(bar, "disable", False):  # no visible bar: plain lines for the log
        return max(1, s.steps_per_epoch // LOG_LINES_PER_EPOCH)
    return 0


def run_epoch(s: Session, epoch: int) -> tuple[float, int, float]:
    """The steps of one epoch; returns (loss sum, steps, seconds) including a preempted part resumed here.

    On a preemption signal: a mid-epoch checkpoint (rank 0), requeue, :class:`Preempted`. When the signal comes on
    the epoch's last step the epoch is finished normally (validation, checkpoint) and the caller exits after it.
    """
    p = s.progress
    first = p.step if epoch == p.epoch else 0
    if first == 0:
        p.partial = {"loss_sum": 0.0, "n_steps": 0, "seconds": 0.0}
    loss_sum, n_steps, t0 = p.partial["loss_sum"], int(p.partial["n_steps"]), time.perf_counter()
    bar = _bar(s, epoch, first)
    every = _log_every(s, bar)
    try:
        for step, batch in enumerate(s.loader.epoch(epoch, first), start=first):
            target = None
            if s.target_source is not None:  # the target's own epoch length: wrap around
                target = s.target_source.batch(epoch, step % s.target_source.steps_per_epoch)
            loss, stop = train_step(s, batch, f"epoch {epoch}, step {step}", target)
            loss_sum, n_steps = loss_sum + loss, n_steps + 1
            if s.writer is not None:
                s.writer.add_scalar("train/nll", loss, epoch * s.steps_per_epoch + step)
            if bar is not None:
                bar.update()
                bar.set_postfix(nll=f"{loss:.3f}")
            if every and (step + 1) % every == 0:
                s.log(f"epoch {epoch} step {step + 1}/{s.steps_per_epoch} NLL {loss:.4f}")
            if stop and step + 1 < s.steps_per_epoch:
                seconds = p.partial["seconds"] + time.perf_counter() - t0
                position = {"epoch": epoch, "step": step + 1, "loss_sum": loss_sum, "n_steps": n_steps,
                            "seconds": seconds}
                preempt_exit(s, epoch, s.state(epoch - 1, position) if s.main else None)
            if stop:
                p.signalled = True
                break
    finally:
        if bar is not None:
            bar.close()
    return loss_sum, n_steps, p.partial["seconds"] + time.perf_counter() - t0


def validation_nll(s: Session, batch: int) -> float:
    """Mean NLL over the validation split: each rank takes a contiguous part, sums are reduced once."""
    lo, hi = split_evenly(len(s.val_set), s.info.rank, s.info.world_size)
    total, count = 0.0, 0
    s.model.eval()
    with torch.no_grad():
        for start in range(lo, hi, batch):
            b = to_torch(s.val_set.get_batch(np.arange(start, min(hi, start + batch))), s.info.device)
            nll = s.model(b)
            total += float(nll.double().sum())
            count += int(nll.numel())
    s.model.train()
    total, count = all_reduce_sum([total, float(count)])
    return total / max(count, 1.0)


def end_epoch(s: Session, epoch: int, loss_sum: float, n_steps: int, seconds: float) -> None:
    """Validation, early-stopping bookkeeping, best model, checkpoint and the epoch's log line."""
    p, cfg = s.progress, s.cfg
    train_nll = all_reduce_sum([loss_sum / max(n_steps, 1)])[0] / s.info.world_size
    val_nll = validation_nll(s, max(64, cfg.train.batch_size))
    if not math.isfinite(val_nll):
        raise TrainingDiverged(f"validation NLL is {val_nll} after epoch {epoch}: the model diverged. HINT: lower "
                               "--train.lr or set --train.grad_clip, in a new --train.run_dir")
    improved = val_nll < p.best
    p.best, p.bad_epochs = (val_nll, 0) if improved else (p.best, p.bad_epochs + 1)
    lr = s.sched.get_last_lr()[0]
    p.history.append({"epoch": epoch, "train_nll": train_nll, "val_nll": val_nll, "seconds": seconds, "lr": lr})
    p.stop = cfg.train.patience > 0 and p.bad_epochs >= cfg.train.patience
    if s.main:
        step = (epoch + 1) * s.steps_per_epoch
        s.writer.add_scalar("val/nll", val_nll, step)
        s.writer.add_scalar("train/lr", lr, step)
        s.writer.flush()
        if improved:
            save_model(s.run_dir / "best.pt", s.model, cfg, s.manifest, epoch=epoch, val_nll=val_nll,
                       data_hash=s.data_hash, data_path=cfg.data.path)
        ckpt.save_checkpoint(s.ckpt_dir, epoch, s.state(epoch, None), keep=cfg.train.keep_checkpoints)
        rate = n_steps * cfg.train.batch_size / max(seconds, 1e-9)
        s.log(f"epoch {epoch:3d}  train NLL {train_nll:8.4f}  val NLL {val_nll:8.4f}{'  *best' if improved else ''}"
              f"  {rate:7.1f} samples/s")
    barrier()


def run_epochs(s: Session) -> None:
    """Epochs until the budget or early stopping; a preemption signal ends with a checkpoint and Preempted."""
    with s.handler:
        for epoch in range(s.progress.epoch, s.cfg.train.epochs):
            s.progress.signalled = False
            end_epoch(s, epoch, *run_epoch(s, epoch))
            # A signal during validation (or on the epoch's last step) stops here, unless the run is complete.
            more = epoch + 1 < s.cfg.train.epochs and not s.progress.stop
            signalled = s.progress.signalled or s.handler.should_stop(
                all_reduce_sum if s.info.world_size > 1 else None)
            if more and signalled:
                preempt_exit(s, epoch, None)
            if s.progress.stop:
                break


def preempt_exit(s: Session, epoch: int, state: dict[str, Any] | None) -> None:
    """Checkpoint (rank 0; ``state=None`` when the epoch's checkpoint is already written), requeue, raise."""
    where = "at the end of the epoch"
    if s.main:
        if state is not None:
            # Same number as the epoch in progress: newer than epoch-1's file, replaced by this epoch's own later.
            ckpt.save_checkpoint(s.ckpt_dir, epoch, state, keep=s.cfg.train.keep_checkpoints)
            where = f"at step {state['position']['step']} of epoch {epoch}"
        s.writer.flush()
        s.writer.close()
    barrier()  # nobody exits before the checkpoint is on disk
    note = request_requeue() if s.main and s.requeue else "requeueing left to the caller"
    seen = s.handler.seen
    sig = signal.SIGUSR2 if signal.SIGUSR2 in seen else (seen[0] if seen else None)
    raise Preempted(f"{s.handler.describe()} received: checkpoint written {where}; {note}", sig)


def finish(s: Session) -> None:
    """``last.pt`` and ``done.json`` (rank 0): the run is finished and never retrained."""
    p = s.progress
    if s.main:
        last = p.history[-1] if p.history else {"epoch": -1, "val_nll": None}
        save_model(s.run_dir / "last.pt", s.model, s.cfg, s.manifest, epoch=last["epoch"], val_nll=last["val_nll"],
                   data_hash=s.data_hash, data_path=s.cfg.data.path)
        atomic_write_json(s.run_dir / "done.json", {
            "best_val_nll": p.best if math.isfinite(p.best) else None, "epochs_run": len(p.history),
            "stopped_early": p.stop, "history": p.history, "world_size": s.info.world_size,
            "data_hash": s.data_hash})
        s.writer.close()
        s.log(f"finished {s.run_dir}: best val NLL {p.best:.4f}")
    barrier()


# ------------------------------------------------------------------------------------------------ entry points


def train(cfg: Config, *, requeue: bool = True) -> Path:
    """Train (or resume, or skip if finished) the run ``cfg.train.run_dir``; returns the run directory.

    ``requeue=False`` leaves requeueing after a preemption checkpoint to the caller (a submitit job, whose own
    handler requeues and counts timeouts); :class:`Preempted` is raised either way.
    """
    info = init_distributed()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    try:
        check_geometry(cfg, info)
        run_dir = Path(cfg.train.run_dir)
        lock = lock_run_dir(run_dir, info)
        try:
            if (run_dir / "done.json").exists():
                if info.rank == 0:
                    print(f"[galmass] {run_dir} is already finished (done.json); nothing to do.", flush=True)
                return run_dir
            check_stored_config(run_dir, cfg)
            if info.rank == 0:
                for d in (run_dir, run_dir / "checkpoints"):
                    remove_stale_temporaries(d)
            s = build_session(cfg, info, run_dir, requeue)
            record_config(s)
            resume(s)
            open_outputs(s)
            run_epochs(s)
            finish(s)
        finally:
            if lock is not None:
                lock.release()
        return run_dir
    finally:
        cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="galmass train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="YAML config file (schema: galmass/config.py)")
    args, overrides = parser.parse_known_args(argv)
    try:
        cfg = load_config(args.config, overrides)
        # A batch script that requeues its own job (slurm/train_ddp.sh traps USR2) sets GALMASS_REQUEUE=0.
        train(cfg, requeue=os.environ.get("GALMASS_REQUEUE", "1") != "0")
    except (ConfigError, DatasetError, TrainingDiverged, ckpt.CheckpointError, DiskFullError) as err:
        print(f"galmass train: error: {err}", file=sys.stderr)
        return 2
    except Preempted as stop:
        print(f"[galmass] preempted: {stop} (exit {PREEMPT_EXIT_CODE})", flush=True)
        return PREEMPT_EXIT_CODE
    return 0


if __name__ == "__main__":
    exit_worker(main())
