"""HDF5 shard read throughput ÷ a raw sequential read of the same files, for the sampling patterns of training.

Usage:  python benchmarks/hdf5_read.py [--data DIR] [--batch 64] [--repeats 3]

The dataset (default model sizes: 64×64 maps, generated under benchmarks/_work/ on first use) is read once
beforehand, so both measurements come from the page cache: the ratio isolates HDF5/h5py/NumPy overhead and the
access pattern, not the disk. Writes benchmarks/results/hdf5_read.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from _common import ROOT, load_average, machine, write_result

from galmass.config import load_config  # noqa: E402
from galmass.datasets import ShardedDataset, tracer_keys  # noqa: E402
from galmass.mocks.generate import generate_dataset  # noqa: E402
from hpc.dali_loader import BatchSource  # noqa: E402


def raw_read(files: list[Path], chunk: int = 8 << 20) -> tuple[int, float]:
    """Bytes and seconds for reading ``files`` sequentially in ``chunk``-byte pieces."""
    total, t0 = 0, time.perf_counter()
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while True:
                b = fh.read(chunk)
                if not b:
                    break
                total += len(b)
    return total, time.perf_counter() - t0


def timed_epoch(fetch, steps: int) -> tuple[int, float]:
    """Bytes of all returned arrays and seconds for ``fetch(step)`` over ``steps`` steps."""
    total, t0 = 0, time.perf_counter()
    for k in range(steps):
        total += sum(v.nbytes for v in fetch(k).values())
    return total, time.perf_counter() - t0


def _fancy(data, indices) -> dict[str, np.ndarray]:
    """Read a batch with h5py point selections (``ds[sorted rows]``) per shard and key."""
    idx = np.sort(np.asarray(indices))
    shard_of = np.searchsorted(data._offsets, idx, side="right") - 1
    out = {}
    for shard in np.unique(shard_of):
        rows = np.unique(idx[shard_of == shard] - data._offsets[shard])
        for key in data.keys:
            out[f"{shard}/{key}"] = data._dataset(int(shard), key)[rows]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "benchmarks" / "_work" / "default_x1"))
    parser.add_argument("--galaxies-per-cell", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    cfg = load_config(None, [f"--data.path={args.data}", f"--data.galaxies_per_cell={args.galaxies_per_cell}"])
    generate_dataset(cfg.data, progress=False)
    keys = tracer_keys("stars") + ("scalars", "labels")
    data = ShardedDataset(cfg.data.path, "train", keys)
    files = [Path(cfg.data.path) / s["file"] for s in data.shards]
    raw_read(files)  # warm the page cache
    n, bs = len(data), args.batch
    steps = n // bs

    def sampler_source(block: int) -> BatchSource:
        return BatchSource(data, keys, bs, 0, 1, seed=0, pad=False, block=block)

    full = sampler_source(1)
    patterns = {
        "contiguous batches, no shuffle (one slice per shard and key)":
            lambda k: data.get_batch(np.arange(k * bs, (k + 1) * bs)),
        "full shuffle, h5py fancy selection per shard and key (ds[rows], what the reader avoids)":
            lambda k: _fancy(data, full.indices(0, k)),
        "full shuffle, BatchSource → get_batch: one slice per contiguous run (the training default)":
            lambda k: full.raw(0, k),
    }
    for block in (8, 32):
        src = sampler_source(block)
        patterns[f"block shuffle {block} (train.shuffle_block={block}), BatchSource → get_batch"] = \
            (lambda s: (lambda k: s.raw(0, k)))(src)

    raw_rates, rows = [], {name: [] for name in patterns}
    for _ in range(args.repeats):  # interleaved, so slow phases of a shared machine hit every pattern
        b, t = raw_read(files)
        raw_rates.append(b / t)
        for name, fetch in patterns.items():
            b, t = timed_epoch(fetch, steps)
            rows[name].append(b / t)
    raw = float(np.median(raw_rates))
    file_bytes = sum(f.stat().st_size for f in files)
    per_sample = sum(v.nbytes for v in data.get_batch(np.arange(bs)).values()) / bs
    table = "\n".join(
        f"| {name} | {np.median(r) / 2**20:.0f} | **{np.median(r) / raw:.3f}** | {np.median(r) / per_sample:.0f} |"
        for name, r in rows.items()
    )
    text = (
        "# HDF5 shard reads ÷ raw sequential read of the same bytes\n\n"
        f"Machine: {machine()}; load average at the end {load_average()} (shared machine)\n\n"
        f"Command: `python benchmarks/hdf5_read.py {' '.join(sys.argv[1:])}`\n\n"
        f"Data: {n} training projections (64×64 maps, {cfg.data.dtype}, one HDF5 chunk per sample, no compression) "
        f"in {len(files)} shards, {file_bytes / 2**20:.0f} MiB; keys {', '.join(keys)}; batch {bs}; one epoch per "
        f"pattern and repeat, {args.repeats} repeats (medians). Warm page cache for both sides.\n\n"
        f"Raw sequential read (8 MiB `read()` calls): **{raw / 2**20:.0f} MiB/s**\n\n"
        "| read pattern | MiB/s of array data | ÷ raw sequential | samples/s |\n|---|---|---|---|\n"
        f"{table}\n"
    )
    write_result("hdf5_read", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
