"""Training samples/s with 2 ranks ÷ 1 rank (CPU, gloo, one thread per rank), real HDF5 loader.

Usage:  python benchmarks/ddp_scaling.py [--steps 12] [--repeats 2] [--batch 64]

Each measurement is a real ``torchrun --standalone --nproc_per_node=N`` job running this file with ``--worker``:
the default model under DistributedDataParallel, fed by the torch loader path (``hpc.dali_loader.TorchLoader`` over
the sharded dataset, global batch fixed, so 2 ranks each take half of it). 1-rank and 2-rank jobs alternate.
Writes benchmarks/results/ddp_scaling.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import ROOT, ddp_bench_setup, load_average, machine, train_step, write_result


def worker(args: argparse.Namespace) -> None:
    from hpc.dali_loader import BatchSource, TorchLoader
    from hpc.dist import all_reduce_sum, barrier, cleanup

    b = ddp_bench_setup(args.data, args.galaxies_per_cell)
    info = b.info
    source = BatchSource(b.data, b.keys, args.batch, info.rank, info.world_size, seed=0, max_steps=args.steps + 2)
    for k, batch in enumerate(TorchLoader(source, num_workers=0).epoch(0)):
        if k == 2:  # two warm-up steps
            barrier()
            t0 = time.perf_counter()
        train_step(b.net, b.opt, batch, info.device)
    barrier()
    elapsed = all_reduce_sum([time.perf_counter() - t0])[0] / info.world_size
    if info.rank == 0:
        Path(args.out).write_text(json.dumps({"world": info.world_size, "seconds": elapsed,
                                              "samples_per_s": args.steps * args.batch / elapsed}))
    cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="")
    parser.add_argument("--data", default=str(ROOT / "benchmarks" / "_work" / "default_x1"))
    parser.add_argument("--galaxies-per-cell", type=int, default=10)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0

    from galmass.config import load_config
    from galmass.mocks.generate import generate_dataset

    generate_dataset(load_config(None, [f"--data.path={args.data}",
                                        f"--data.galaxies_per_cell={args.galaxies_per_cell}"]).data, progress=False)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rates: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for world in (1, 2):
                out = Path(tmp) / f"w{world}-{r}.json"
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
                       __file__, "--worker", f"--out={out}", f"--data={args.data}", f"--steps={args.steps}",
                       f"--batch={args.batch}", f"--galaxies-per-cell={args.galaxies_per_cell}"]
                subprocess.run(cmd, env=env, check=True, capture_output=True)
                rates[world].append(json.loads(out.read_text())["samples_per_s"])
                print(f"repeat {r}: {world} rank(s) {rates[world][-1]:.1f} samples/s", flush=True)
    ratios = [b / a for a, b in zip(rates[1], rates[2])]
    text = (
        "# DDP scaling on the CPU: 2 ranks ÷ 1 rank\n\n"
        f"Machine: {machine()}; load average at the end {load_average()} (shared machine: other jobs compete for "
        "the same 2 cores, which caps the achievable ratio below 2)\n\n"
        f"Command: `python benchmarks/ddp_scaling.py {' '.join(sys.argv[1:])}`\n\n"
        f"Default model, 64×64 maps, global batch {args.batch} (each of 2 ranks takes {args.batch // 2}), "
        f"{args.steps} timed steps after 2 warm-up steps, torch loader (0 workers), gloo, OMP_NUM_THREADS=1 and "
        f"torch.set_num_threads(1) per rank; {args.repeats} alternating repeats.\n\n"
        "| ranks | samples/s (median) | repeats |\n|---|---|---|\n"
        + "".join(f"| {w} | {np.median(v):.1f} | {', '.join(f'{x:.1f}' for x in v)} |\n" for w, v in rates.items())
        + f"\n**Ratio 2 ranks ÷ 1 rank: {np.median(ratios):.2f}** (per repeat: "
        f"{', '.join(f'{x:.2f}' for x in ratios)}; ideal 2.0)\n"
    )
    write_result("ddp_scaling", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
