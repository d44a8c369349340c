"""Training throughput with the real HDF5 loader ÷ the same batches already in memory.

Usage (any machine; generates a small dataset under benchmarks/_work/ on first use):

    python benchmarks/loader_vs_memory.py [--config configs/quickstart.yaml] [--steps 60] [--tracer stars]

Prints samples/s for both paths and their ratio, measured in this one run, and writes
benchmarks/results/loader_vs_memory.md with the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from galmass.config import load_config  # noqa: E402
from galmass.datasets import ShardedDataset, load_manifest, tracer_keys  # noqa: E402
from galmass.datasets.writer import generate_dataset  # noqa: E402
from galmass.train import build_model, to_torch  # noqa: E402
from hpc.atomic import atomic_write_text  # noqa: E402
from hpc.sampler import GlobalBatchSampler  # noqa: E402


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.node()}: {cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} torch threads")


def steps_per_second(model, opt, batches, device) -> float:
    t0 = time.perf_counter()
    n = 0
    for batch in batches:
        batch = to_torch(batch, device)
        loss = model(batch).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    parser.add_argument("--data", default=str(ROOT / "benchmarks" / "_work" / "data"))
    parser.add_argument("--tracer", default="stars")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the real-loader path")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "loader_vs_memory.md"))
    args = parser.parse_args()

    cfg = load_config(args.config, [f"--data.path={args.data}", f"--model.tracer={args.tracer}",
                                    "--data.galaxies_per_cell=20"])
    generate_dataset(cfg.data, progress=False)
    manifest = load_manifest(cfg.data.path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = ShardedDataset(cfg.data.path, "train", tracer_keys(cfg.model.tracer) + ("scalars", "labels"))
    sampler = GlobalBatchSampler(len(data), cfg.train.batch_size, 0, 1, seed=0, max_steps=args.steps)
    model = build_model(cfg, manifest).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    # The in-memory path sees exactly the batches the loader yields (read once beforehand).
    in_memory = [data.get_batch(ix) for ix in sampler]
    steps_per_second(model, opt, in_memory[:5], device)  # warm-up
    real, mem = [], []
    for r in range(args.repeats):  # interleave A/B so drift of a shared machine hits both
        sampler.set_epoch(r + 1)
        loader = torch.utils.data.DataLoader(data, batch_size=None, sampler=sampler, num_workers=args.workers)
        real.append(steps_per_second(model, opt, loader, device) * cfg.train.batch_size)
        mem.append(steps_per_second(model, opt, in_memory, device) * cfg.train.batch_size)
    real_m, mem_m = float(np.median(real)), float(np.median(mem))
    ratio = real_m / mem_m
    text = (
        "# Training throughput: real HDF5 loader ÷ batches in memory\n\n"
        f"Machine: {machine()}\n\n"
        f"Command: `python benchmarks/loader_vs_memory.py --config {Path(args.config).name} --tracer {args.tracer} "
        f"--steps {args.steps} --workers {args.workers}`\n\n"
        f"Model: tracer `{args.tracer}`, {sum(p.numel() for p in model.parameters())} parameters, "
        f"{cfg.data.npix}×{cfg.data.npix} maps, batch {cfg.train.batch_size}, {args.steps} steps × {args.repeats} "
        "repeats (median).\n\n"
        "| path | samples/s (median) | all repeats |\n|---|---|---|\n"
        f"| real loader (ShardedDataset + GlobalBatchSampler + DataLoader, {args.workers} workers) | {real_m:.1f} | "
        f"{', '.join(f'{x:.0f}' for x in real)} |\n"
        f"| same batches in memory | {mem_m:.1f} | {', '.join(f'{x:.0f}' for x in mem)} |\n\n"
        f"**Ratio real ÷ in-memory: {ratio:.3f}**\n"
    )
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
