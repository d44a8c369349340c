"""Training throughput with the real HDF5 loaders (torch DataLoader, NVIDIA DALI) ÷ the same batches in memory.

Usage (any machine; generates the dataset under benchmarks/_work/ on first use):

    python benchmarks/loader_vs_memory.py [--config FILE] [--steps 16] [--repeats 3] [--tracer stars]
                                          [--paths torch:0,torch:2,dali:2]

Default: the default model and 64×64 maps of the schema (configs/default.yaml) with 10 galaxies per cell. Each path
``LOADER:WORKERS`` is timed against the same model fed batches already in memory, interleaved A/B within each repeat
so that drift of a shared machine hits both; medians are reported. Writes benchmarks/results/loader_vs_memory.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import ROOT, load_average, machine, train_step, write_result

from galmass.config import load_config  # noqa: E402
from galmass.datasets import ShardedDataset, load_manifest  # noqa: E402
from galmass.models.network import input_keys  # noqa: E402
from galmass.mocks.generate import generate_dataset  # noqa: E402
from galmass.models.io import build_model  # noqa: E402
from hpc.dali_loader import BatchSource, DaliLoader, TorchLoader, dali_available  # noqa: E402


def interleaved(model, opt, loader_batches, in_memory, device) -> tuple[float, float]:
    """Seconds spent in loader steps (waiting for the batch + training step) and in in-memory steps.

    Steps alternate one by one (loader, memory, loader, ...), so load from other jobs on a shared machine, which
    changes on a scale of seconds, slows both paths alike. Background reads of the loader workers that overlap an
    in-memory step are charged to that step; this biases the ratio towards 1 by at most the read time of the
    prefetched batches, which is small here (see hdf5_read.md for the read cost).
    """
    t_loader = t_mem = 0.0
    it = iter(loader_batches)
    for mem_batch in in_memory:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            break
        train_step(model, opt, batch, device)
        t1 = time.perf_counter()
        train_step(model, opt, mem_batch, device)
        t_loader += t1 - t0
        t_mem += time.perf_counter() - t1
    for _ in it:  # drain (a DALI epoch must be consumed to its end)
        pass
    return t_loader, t_mem


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="YAML config (default: schema defaults = default model)")
    parser.add_argument("--data", default=str(ROOT / "benchmarks" / "_work" / "default_x1"))
    parser.add_argument("--galaxies-per-cell", type=int, default=10)
    parser.add_argument("--tracer", default="stars")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paths", default="torch:0,torch:2,dali:2",
                        help="comma-separated LOADER:WORKERS (loader torch or dali)")
    parser.add_argument("--block", type=int, default=1, help="chunk-level shuffle block (train.shuffle_block)")
    parser.add_argument("--name", default="loader_vs_memory", help="result file benchmarks/results/NAME.md")
    args = parser.parse_args()

    cfg = load_config(args.config, [f"--data.path={args.data}", f"--model.tracer={args.tracer}",
                                    f"--data.galaxies_per_cell={args.galaxies_per_cell}"])
    generate_dataset(cfg.data, progress=False)
    manifest = load_manifest(cfg.data.path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    keys = input_keys(cfg.model) + ("labels",)
    data = ShardedDataset(cfg.data.path, "train", keys)
    bs = cfg.train.batch_size
    source = BatchSource(data, keys, bs, 0, 1, seed=0, max_steps=args.steps, block=args.block)
    model = build_model(cfg, manifest).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    in_memory = [source.batch(0, k) for k in range(source.steps_per_epoch)]  # the batches the loaders yield
    for batch in in_memory[:3]:  # warm-up
        train_step(model, opt, batch, device)

    paths = []
    for item in args.paths.split(","):
        name, workers = item.split(":")
        if name == "dali" and not dali_available():
            print(f"skipping {item}: NVIDIA DALI is not installed")
            continue
        paths.append((name, int(workers)))
    rows = []
    for name, workers in paths:
        if name == "dali":
            loader = DaliLoader(source, start_epoch=1, num_workers=workers,
                                device_id=(device.index or 0) if device.type == "cuda" else None)
        else:
            loader = TorchLoader(source, num_workers=workers)
        ratios, t_real, t_mem = [], 0.0, 0.0
        for r in range(args.repeats):
            a, b = interleaved(model, opt, loader.epoch(r + 1), in_memory, device)
            ratios.append(b / a)
            t_real, t_mem = t_real + a, t_mem + b
        n = args.repeats * len(in_memory) * bs
        rows.append((f"{loader.name}, {workers} worker(s)", n / t_real, n / t_mem, t_mem / t_real, ratios))
        print(f"{name}:{workers}  loader {rows[-1][1]:.1f}  memory {rows[-1][2]:.1f}  ratio {rows[-1][3]:.3f}",
              flush=True)
        del loader

    # What bounds the ratio: the read cost of one batch (in this process, no overlap) vs one in-memory step.
    t_read = []
    for k in range(source.steps_per_epoch):
        t0 = time.perf_counter()
        source.batch(args.repeats + 1, k)
        t_read.append(time.perf_counter() - t0)
    t_step = []
    for batch in in_memory[:8]:
        t0 = time.perf_counter()
        train_step(model, opt, batch, device)
        t_step.append(time.perf_counter() - t0)
    read_s, step_s = float(np.median(t_read)), float(np.median(t_step))
    n_params = sum(p.numel() for p in model.parameters())
    table = "\n".join(
        f"| {label} | {r:.1f} | {m:.1f} | **{q:.3f}** | {', '.join(f'{x:.3f}' for x in rr)} |"
        for label, r, m, q, rr in rows
    )
    text = (
        "# Training throughput: real HDF5 loader ÷ the same batches in memory\n\n"
        f"Machine: {machine()}, {torch.get_num_threads()} torch threads; load average at the end {load_average()} "
        "(the machine was shared with other jobs)\n\n"
        f"Command: `python benchmarks/loader_vs_memory.py {' '.join(sys.argv[1:])}`\n\n"
        f"Model: {'schema defaults' if args.config is None else Path(args.config).name}, tracer `{args.tracer}`, "
        f"{n_params} parameters, {cfg.data.npix}×{cfg.data.npix} maps ({cfg.data.dtype}), global batch {bs}, "
        f"{len(data)} training projections in {len(data.shards)} shards, {source.steps_per_epoch} steps × "
        f"{args.repeats} repeats, shuffled global batches (GlobalBatchSampler, shuffle block {args.block}), "
        f"device {device}.\n\n"
        "Loader and in-memory steps alternate one by one (see `interleaved()`); samples/s are totals over all "
        "repeats.\n\n"
        "| loader path | loader samples/s | in-memory samples/s | ratio loader ÷ memory | per repeat |\n"
        "|---|---|---|---|---|\n"
        f"{table}\n\n"
        "## What bounds the ratio\n\n"
        f"Measured in this run: reading one batch through `BatchSource` takes {read_s * 1e3:.1f} ms (median), one "
        f"training step on batches in memory {step_s * 1e3:.1f} ms. With reads in the training process (0 workers) "
        f"the expected ratio is step ÷ (step + read) = **{step_s / (step_s + read_s):.3f}**. Loader workers (torch "
        "DataLoader workers, DALI's parallel external_source) can hide the read only if a core is free: on a 2-core "
        "machine where the training step already uses both cores (and other jobs share them), the worker competes "
        "with the model instead, which is why more workers do not help here. On a GPU node (many cores, model on "
        "the GPU) they do; see gpu.md.\n\n"
        "What was tried (all measured, see hdf5_read.md): h5py fancy (point) selection of the scattered rows of a "
        "shuffled batch (slowest); one `get_batch` call per contiguous run; one `get_batch` call per rank batch "
        "with the reader slicing each contiguous run and caching its h5py dataset objects (the default; about 10× "
        "cheaper than per-run calls here); chunk-level shuffling (`--train.shuffle_block`, e.g. 32: cheaper reads "
        "again, at the price of batches made of runs of consecutive samples); 0–2 loader workers; torch "
        "DataLoader vs DALI. The remaining per-sample cost is h5py's per-read overhead on shards with one HDF5 "
        "chunk per sample.\n"
    )
    write_result(args.name, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
