"""Training of the mass posterior (``galmass train``; also ``torchrun -m galmass.train``).

The same code runs in one process, under ``torchrun --nproc_per_node=N`` and under ``srun`` (launcher detection in
``hpc.launchers``). Guarantees:

* **DDP equivalence** – the data order depends only on (seed, epoch); every rank takes an equal contiguous slice of
  each global batch (``hpc.sampler.GlobalBatchSampler``); GroupNorm keeps samples independent. N ranks therefore
  compute the gradient of the same global batch as 1 rank.
* **Exact resume** – a full-state checkpoint (model, optimiser, scheduler, early-stopping state, RNG) is written
  atomically after every epoch; rerunning the same command continues from the newest readable one and ends with
  the same weights as an uninterrupted run.
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
from hpc.dist import DistInfo, all_reduce_sum, barrier, cleanup, init_distributed
from hpc.sampler import GlobalBatchSampler, split_evenly

__all__ = ["train", "build_model", "load_trained", "to_torch", "main"]

# Keys of the resolved config that may change between an interrupted run and its resumption without changing
# the result (they control output, not numerics).
_RESUME_FREE_KEYS = {("train", "progress"), ("train", "num_workers"), ("data", "workers")}


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
    sampler = GlobalBatchSampler(
        len(train_set), cfg.train.batch_size, info.rank, info.world_size, cfg.train.seed,
        shuffle=True, pad=True, max_steps=cfg.train.max_steps_per_epoch,
    )
    steps_per_epoch = len(sampler)
    total_steps = steps_per_epoch * cfg.train.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(total_steps, max(1, int(cfg.train.warmup_epochs * steps_per_epoch)))
    )

    start_epoch, best, bad_epochs, history = 0, float("inf"), 0, []
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
        if main:
            print(f"[galmass] resuming {run_dir} from {path.name} (epoch {start_epoch})", flush=True)

    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_epoch * steps_per_epoch)
        print(
            f"[galmass] train {cfg.model.tracer}: {len(train_set)} train / {len(val_set)} val projections, "
            f"{info.world_size} rank(s) [{info.launcher}, {info.backend or 'no process group'}, {info.device}], "
            f"global batch {cfg.train.batch_size}, {steps_per_epoch} steps/epoch, "
            f"{sum(p.numel() for p in model.parameters())} parameters, loader: torch DataLoader "
            f"({cfg.train.num_workers} workers)",
            flush=True,
        )
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=None, sampler=sampler, num_workers=cfg.train.num_workers,
        persistent_workers=False,
    )
    stop = False
    for epoch in range(start_epoch, cfg.train.epochs):
        if stop:
            break
        sampler.set_epoch(epoch)
        t0, loss_sum, n_steps = time.perf_counter(), 0.0, 0
        bar = None
        if main and cfg.train.progress:
            from tqdm import tqdm

            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}", unit="step", leave=False, file=sys.stderr)
        for step, batch in enumerate(loader):
            batch = to_torch(batch, info.device)
            loss = net(batch).mean()
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
        if bar is not None:
            bar.close()
        train_nll = all_reduce_sum([loss_sum / max(n_steps, 1)])[0] / info.world_size
        val_nll = _validation_nll(model, val_set, info, max(64, cfg.train.batch_size))
        elapsed = time.perf_counter() - t0
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
            ckpt.save_checkpoint(
                ckpt_dir, epoch,
                {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "rng": ckpt.capture_rng_state(), "epoch": epoch, "best": best, "bad_epochs": bad_epochs,
                 "history": history, "config": config_to_dict(cfg)},
                keep=cfg.train.keep_checkpoints,
            )
            print(
                f"[galmass] epoch {epoch:3d}  train NLL {train_nll:8.4f}  val NLL {val_nll:8.4f}"
                f"{'  *best' if improved else ''}  {n_steps * cfg.train.batch_size / elapsed:7.1f} samples/s",
                flush=True,
            )
        barrier()
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
