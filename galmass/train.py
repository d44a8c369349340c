"""Training of the mass posterior (``galmass train``; also ``torchrun -m galmass.train``).

The same code runs in one process, under ``torchrun --nproc_per_node=N`` and under ``srun`` (launcher detection in
``hpc.launchers``). Guarantees:

* **DDP equivalence** – the data order depends only on (seed, epoch); every rank takes an equal contiguous slice of
  each global batch (``hpc.sampler.GlobalBatchSampler``); GroupNorm keeps samples independent. N ranks therefore
  compute the gradient of the same global batch as 1 rank.
* **Exact resume** – a full-state checkpoint (model, optimiser, scheduler, early-stopping state, RNG) is written
  atomically after every epoch; rerunning the same command continues from the newest readable one and ends with
  the same weights as an uninterrupted run.
* **Preemption** – SIGUSR2 (submitit, ``sbatch --signal=USR2@…``) or SIGTERM (``scancel``, Slurm preemption) make
  every rank finish the current step; rank 0 then writes a checkpoint that also holds the loader position (epoch,
  step within the epoch), asks Slurm to requeue the job when ``SLURM_JOB_ID`` is set, and the process exits with
  ``hpc.preempt.PREEMPT_EXIT_CODE`` (75). Rerunning the same command continues from that step (``hpc.preempt``).
* **Loaders** – ``train.loader=torch`` (DataLoader) or ``dali`` (NVIDIA DALI); both read the same batches in the
  same order through ``hpc.dali_loader.BatchSource`` (optional sky-plane augmentation, ``hpc.augment``).
* **Finished work is never overwritten** – a run directory with ``done.json`` is left alone; a run directory
  created with a different config is refused.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from galmass.config import Config, ConfigError, config_to_dict, dump_config, load_config
from galmass.datasets import DatasetError, ShardedDataset, load_manifest, tracer_keys
from galmass.models import MassPosterior
from hpc import checkpoint as ckpt
from hpc.atomic import atomic_path, atomic_write_json, atomic_write_text
from hpc.dali_loader import BatchSource, DaliLoader, TorchLoader, dali_available
from hpc.dist import DistInfo, all_reduce_sum, autocast_context, barrier, cleanup, init_distributed
from hpc.preempt import PREEMPT_EXIT_CODE, PreemptionHandler, request_requeue
from hpc.sampler import split_evenly

__all__ = ["train", "build_model", "load_trained", "to_torch", "main", "Preempted"]

# Keys of the resolved config that may change between an interrupted run and its resumption without changing
# the result (they control output, not numerics). The loader is one of them: both paths yield the same batches.
_RESUME_FREE_KEYS = {("train", "progress"), ("train", "num_workers"), ("data", "workers"), ("train", "log_every"),
                     ("train", "loader")}


class Preempted(Exception):
    """Training stopped on a preemption signal after writing a checkpoint; rerun the same command to resume."""


def to_torch(batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v).to(device, non_blocking=True) for k, v in batch.items()}


def build_model(cfg: Config, manifest: dict[str, Any]) -> MassPosterior:
    """A freshly initialised model (weights depend on ``cfg.train.seed`` only)."""
    torch.manual_seed(cfg.train.seed)
    return MassPosterior(cfg.model, int(manifest["npix"]), manifest["normalisation"],
                         n_labels=len(manifest["radii_factors"]))


def load_trained(run_dir: str | Path, which: str = "best", map_location: str = "cpu") -> tuple[MassPosterior, Config, dict]:
    """Model, resolved config and metadata of a trained run (``best.pt``)."""
    run_dir = Path(run_dir)
    path = run_dir / f"{which}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist. HINT: train the run first (`galmass train`).")
    blob = torch.load(path, map_location=map_location, weights_only=False)
    cfg = load_config(run_dir / "config.yaml")
    model = MassPosterior(cfg.model, int(blob["npix"]), blob["normalisation"], n_labels=len(blob["radii_factors"]))
    model.load_state_dict(blob["model"])
    model.eval()
    return model, cfg, blob


def _lr_lambda(total_steps: int, warmup_steps: int):
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def _prepare_run_dir(cfg: Config, info: DistInfo) -> tuple[Path, bool]:
    """Check/create the run directory; returns (run_dir, already_finished)."""
    run_dir = Path(cfg.train.run_dir)
    if (run_dir / "done.json").exists():
        return run_dir, True
    stored = run_dir / "config.yaml"
    if stored.exists():
        old = yaml.safe_load(stored.read_text())
        new = config_to_dict(cfg)
        diffs = [
            f"{s}.{k}: {old.get(s, {}).get(k)!r} → {v!r}"
            for s, body in new.items() for k, v in body.items()
            if (s, k) not in _RESUME_FREE_KEYS and old.get(s, {}).get(k) != v
        ]
        if diffs:
            raise ConfigError(
                f"{stored}: this run directory was started with a different config ({'; '.join(diffs)}). "
                "Resuming would mix two runs. HINT: use another --train.run_dir."
            )
    elif info.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(stored, dump_config(cfg))
    return run_dir, False


def _validation_nll(model: MassPosterior, data: ShardedDataset, info: DistInfo, batch: int) -> float:
    """Mean NLL over the whole split: each rank takes a contiguous part, sums are reduced once at the end."""
    lo, hi = split_evenly(len(data), info.rank, info.world_size)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(lo, hi, batch):
            b = to_torch(data.get_batch(np.arange(start, min(hi, start + batch))), info.device)
            nll = model(b)
            total += float(nll.double().sum())
            count += int(nll.numel())
    model.train()
    total, count = all_reduce_sum([total, float(count)])
    return total / max(count, 1.0)


def train(cfg: Config) -> Path:
    """Train (or resume, or skip if finished) the run ``cfg.train.run_dir``; returns the run directory."""
    info = init_distributed()
    try:
        return _train(cfg, info)
    finally:
        cleanup()


def _train(cfg: Config, info: DistInfo) -> Path:
    main = info.rank == 0
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.batch_size % info.world_size:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} is not divisible by the {info.world_size} ranks. "
            f"HINT: --train.batch_size={cfg.train.batch_size - cfg.train.batch_size % info.world_size or info.world_size}"
        )
    if cfg.train.loader == "dali" and not dali_available():
        raise ConfigError(
            "train.loader=dali but NVIDIA DALI is not installed (import nvidia.dali failed). HINT: pip install "
            "nvidia-dali-cuda120 (or `pip install -e .[dali]`), or use --train.loader=torch."
        )
    run_dir, finished = _prepare_run_dir(cfg, info)
    if finished:
        if main:
            print(f"[galmass] {run_dir} is already finished (done.json); nothing to do.", flush=True)
        return run_dir
    barrier()

    manifest = load_manifest(cfg.data.path)
    keys = tracer_keys(cfg.model.tracer) + ("scalars", "labels")
    train_set = ShardedDataset(cfg.data.path, "train", keys)
    val_set = ShardedDataset(cfg.data.path, "val", keys, verify=False)

    model = build_model(cfg, manifest).to(info.device)
    net: torch.nn.Module = model
    if info.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None
        )
    source = BatchSource(
        train_set, keys, cfg.train.batch_size, info.rank, info.world_size, cfg.train.seed,
        shuffle=True, pad=True, max_steps=cfg.train.max_steps_per_epoch,
        sky_keys=[k for k in keys if k.startswith("maps_")], augment=cfg.train.augment, noise=cfg.train.aug_noise,
        block=cfg.train.shuffle_block,
    )
    steps_per_epoch = source.steps_per_epoch
    total_steps = steps_per_epoch * cfg.train.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(total_steps, max(1, int(cfg.train.warmup_epochs * steps_per_epoch)))
    )

    start_epoch, start_step, best, bad_epochs, history = 0, 0, float("inf"), 0, []
    partial = {"loss_sum": 0.0, "n_steps": 0, "seconds": 0.0}  # accumulators of an epoch cut by preemption
    ckpt_dir = run_dir / "checkpoints"
    state, path = ckpt.load_latest(ckpt_dir)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        ckpt.restore_rng_state(state["rng"])
        start_epoch, best, bad_epochs, history = (
            state["epoch"] + 1, state["best"], state["bad_epochs"], state["history"]
        )
        if state.get("position") is not None:  # written on preemption, in the middle of an epoch
            pos = state["position"]
            start_epoch, start_step = int(pos["epoch"]), int(pos["step"])
            partial = {"loss_sum": float(pos["loss_sum"]), "n_steps": int(pos["n_steps"]),
                       "seconds": float(pos["seconds"])}
        if main:
            print(f"[galmass] resuming {run_dir} from {path.name} (epoch {start_epoch}, step {start_step})",
                  flush=True)

    writer = None
    loader: TorchLoader | DaliLoader
    if cfg.train.loader == "dali":
        loader = DaliLoader(source, start_epoch, start_step, num_workers=cfg.train.num_workers,
                            device_id=info.device.index if info.device.type == "cuda" else None)
    else:
        loader = TorchLoader(source, num_workers=cfg.train.num_workers)
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_epoch * steps_per_epoch + start_step)
        print(
            f"[galmass] train {cfg.model.tracer}: {len(train_set)} train / {len(val_set)} val projections, "
            f"{info.world_size} rank(s) [{info.launcher}, {info.backend or 'no process group'}, {info.device}], "
            f"global batch {cfg.train.batch_size}, {steps_per_epoch} steps/epoch, "
            f"{sum(p.numel() for p in model.parameters())} parameters, loader: {loader.name} "
            f"({cfg.train.num_workers} workers{', augmented' if cfg.train.augment else ''})"
            f"{', bf16 autocast' if cfg.train.bf16 and info.device.type == 'cuda' else ''}",
            flush=True,
        )
    reduce = all_reduce_sum if info.world_size > 1 else None  # all ranks must agree to stop at the same step

    def state_for(done_epoch: int, position: dict[str, Any] | None) -> dict[str, Any]:
        """The full training state for a checkpoint; ``position`` is set for a mid-epoch (preemption) one."""
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": ckpt.capture_rng_state(), "epoch": done_epoch, "best": best, "bad_epochs": bad_epochs,
                "history": history, "config": config_to_dict(cfg), "position": position}

    stop = preempted = False
    handler = PreemptionHandler().install()
    try:
        for epoch in range(start_epoch, cfg.train.epochs):
            if stop or preempted:
                break
            first = start_step if epoch == start_epoch else 0
            t0 = time.perf_counter()
            if first == 0:
                partial = {"loss_sum": 0.0, "n_steps": 0, "seconds": 0.0}
            loss_sum, n_steps = partial["loss_sum"], partial["n_steps"]
            bar = None
            if main and cfg.train.progress:
                from tqdm import tqdm

                bar = tqdm(total=steps_per_epoch, initial=first, desc=f"epoch {epoch}", unit="step", leave=False,
                           file=sys.stderr)
            for step, batch in enumerate(loader.epoch(epoch, first), start=first):
                batch = to_torch(batch, info.device)
                with autocast_context(info.device, cfg.train.bf16):
                    loss = net(batch).float().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.train.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                opt.step()
                sched.step()
                loss_sum += float(loss.detach())
                n_steps += 1
                if writer is not None:
                    writer.add_scalar("train/nll", float(loss.detach()), epoch * steps_per_epoch + step)
                if bar is not None:
                    bar.update()
                    bar.set_postfix(nll=f"{float(loss.detach()):.3f}")
                if main and cfg.train.log_every and (step + 1) % cfg.train.log_every == 0:
                    print(f"[galmass] epoch {epoch} step {step + 1}/{steps_per_epoch} NLL {float(loss):.4f}",
                          flush=True)
                # Step boundary: weights, optimiser and loader position are consistent here.
                if handler.should_stop(reduce):
                    preempted = True
                    if step + 1 < steps_per_epoch:
                        seconds = partial["seconds"] + time.perf_counter() - t0
                        position = {"epoch": epoch, "step": step + 1, "loss_sum": loss_sum, "n_steps": n_steps,
                                    "seconds": seconds}
                        if bar is not None:
                            bar.close()
                        _preempt_exit(handler, main, writer, ckpt_dir, epoch,
                                      state_for(epoch - 1, position) if main else {}, cfg, info)
                    break  # last step of the epoch: finish it normally (validation, checkpoint), then exit
            if bar is not None:
                bar.close()
            train_nll = all_reduce_sum([loss_sum / max(n_steps, 1)])[0] / info.world_size
            val_nll = _validation_nll(model, val_set, info, max(64, cfg.train.batch_size))
            elapsed = partial["seconds"] + time.perf_counter() - t0
            improved = val_nll < best
            if improved:
                best, bad_epochs = val_nll, 0
            else:
                bad_epochs += 1
            history.append({"epoch": epoch, "train_nll": train_nll, "val_nll": val_nll, "seconds": elapsed,
                            "lr": sched.get_last_lr()[0]})
            stop = cfg.train.patience > 0 and bad_epochs >= cfg.train.patience
            if main:
                writer.add_scalar("val/nll", val_nll, (epoch + 1) * steps_per_epoch)
                writer.add_scalar("train/lr", sched.get_last_lr()[0], (epoch + 1) * steps_per_epoch)
                writer.flush()
                if improved:
                    _save_model(run_dir / "best.pt", model, cfg, manifest, epoch, val_nll)
                ckpt.save_checkpoint(ckpt_dir, epoch, state_for(epoch, None), keep=cfg.train.keep_checkpoints)
                print(
                    f"[galmass] epoch {epoch:3d}  train NLL {train_nll:8.4f}  val NLL {val_nll:8.4f}"
                    f"{'  *best' if improved else ''}  "
                    f"{(steps_per_epoch - first) * cfg.train.batch_size / (time.perf_counter() - t0):7.1f} samples/s",
                    flush=True,
                )
            barrier()
            # A signal that arrived during validation also stops here, unless the run is complete anyway.
            more = epoch + 1 < cfg.train.epochs and not stop
            if more and (preempted or handler.should_stop(reduce)):
                _preempt_exit(handler, main, writer, None, epoch, {}, cfg, info)
    finally:
        handler.uninstall()
    if main:
        _save_model(run_dir / "last.pt", model, cfg, manifest, history[-1]["epoch"] if history else -1,
                    history[-1]["val_nll"] if history else float("nan"))
        atomic_write_json(run_dir / "done.json", {"best_val_nll": best, "epochs_run": len(history),
                                                  "stopped_early": stop, "history": history,
                                                  "world_size": info.world_size})
        writer.close()
        print(f"[galmass] finished {run_dir}: best val NLL {best:.4f}", flush=True)
    barrier()
    return run_dir


def _preempt_exit(handler: PreemptionHandler, main: bool, writer: Any, ckpt_dir: Path | None, epoch: int,
                  state: dict[str, Any], cfg: Config, info: DistInfo) -> None:
    """Checkpoint (rank 0; ``ckpt_dir=None`` when the epoch's checkpoint is already written), requeue, raise."""
    where = "at the end of the epoch"
    if main:
        if ckpt_dir is not None:
            # Same number as the epoch in progress: newer than epoch-1's file, replaced by this epoch's own later.
            ckpt.save_checkpoint(ckpt_dir, epoch, state, keep=cfg.train.keep_checkpoints)
            pos = state["position"]
            where = f"at step {pos['step']} of epoch {epoch}"
        writer.flush()
        writer.close()
    barrier()  # nobody exits before the checkpoint is on disk
    note = request_requeue() if main else ""
    raise Preempted(f"{handler.describe()} received: checkpoint written {where}; {note}")


def _save_model(path: Path, model: MassPosterior, cfg: Config, manifest: dict, epoch: int, val_nll: float) -> None:
    blob = {"model": model.state_dict(), "config": config_to_dict(cfg), "normalisation": manifest["normalisation"],
            "npix": manifest["npix"], "radii_factors": manifest["radii_factors"], "epoch": epoch,
            "val_nll": val_nll, "extent_rh": manifest.get("extent_rh"), "vmax_sigma": manifest.get("vmax_sigma"),
            "data_config": manifest["config"]}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="galmass train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="YAML config file (schema: galmass/config.py)")
    args, overrides = parser.parse_known_args(argv)
    try:
        cfg = load_config(args.config, overrides)
        train(cfg)
    except (ConfigError, DatasetError) as err:
        print(f"galmass train: error: {err}", file=sys.stderr)
        return 2
    except Preempted as stop:
        print(f"[galmass] preempted: {stop} (exit {PREEMPT_EXIT_CODE})", flush=True)
        return PREEMPT_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(main())
