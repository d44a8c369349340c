"""Peak resident memory per rank for a dataset of 1× and 4× the size: it must not grow with the dataset.

Usage:  python benchmarks/memory_per_rank.py [--base 10]

For each dataset (``--base`` and 4×``--base`` galaxies per cell, default model sizes, generated under
benchmarks/_work/) and each loader path (torch, 0 workers; DALI, 2 workers when installed), a 2-rank
``torchrun`` job runs this file with ``--worker``: every rank builds the default model, reads one full epoch of its
share of the training set through the loader and does a few training steps. Each rank reports its peak RSS
(``ru_maxrss``) and the largest peak among its child processes (DALI's reader workers).
Writes benchmarks/results/memory_per_rank.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, ddp_bench_setup, load_average, machine, train_step, write_result


def worker(args: argparse.Namespace) -> None:
    from hpc.dali_loader import BatchSource, DaliLoader, TorchLoader
    from hpc.dist import cleanup

    b = ddp_bench_setup(args.data, args.gpc)
    info, data = b.info, b.data
    source = BatchSource(data, b.keys, 64, info.rank, info.world_size, seed=0)
    loader = DaliLoader(source, num_workers=2) if args.loader == "dali" else TorchLoader(source, num_workers=0)
    n = 0
    for k, batch in enumerate(loader.epoch(0)):
        n += len(batch["labels"])
        if k < 3:  # a few real training steps: the model's own memory is part of the per-rank peak
            train_step(b.net, b.opt, batch, info.device)
    kib = 1024 if sys.platform != "darwin" else 1  # ru_maxrss is KiB on Linux
    out = {"rank": info.rank, "samples": n, "n_train": len(data),
           "self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib / 2**20,
           "children_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib / 2**20}
    Path(f"{args.out}.rank{info.rank}").write_text(json.dumps(out))
    cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="")
    parser.add_argument("--data", default="")
    parser.add_argument("--gpc", type=int, default=10)
    parser.add_argument("--loader", default="torch")
    parser.add_argument("--base", type=int, default=10, help="galaxies per cell of the 1× dataset")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0

    from galmass.config import load_config
    from galmass.mocks.generate import generate_dataset
    from hpc.dali_loader import dali_available

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    loaders = ["torch"] + (["dali"] if dali_available() else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for factor in (1, 4):
            gpc = args.base * factor
            path = ROOT / "benchmarks" / "_work" / ("default_x1" if factor == 1 else f"default_x{factor}")
            cfg = load_config(None, [f"--data.path={path}", f"--data.galaxies_per_cell={gpc}"])
            generate_dataset(cfg.data, progress=False)
            size = sum(f.stat().st_size for f in path.glob("shard-*.h5"))
            for loader in loaders:
                out = Path(tmp) / f"{loader}-{factor}"
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
                       "--worker", f"--out={out}", f"--data={path}", f"--gpc={gpc}", f"--loader={loader}"]
                subprocess.run(cmd, env=env, check=True, capture_output=True)
                ranks = [json.loads(Path(f"{out}.rank{r}").read_text()) for r in (0, 1)]
                rows.append((factor, size, loader, ranks))
                print(f"{factor}x {loader}: " + ", ".join(f"rank {r['rank']} {r['self_mib']:.0f} MiB "
                                                          f"(+children {r['children_mib']:.0f})" for r in ranks),
                      flush=True)
    lines = []
    for factor, size, loader, ranks in rows:
        for r in ranks:
            lines.append(f"| {factor}× | {size / 2**20:.0f} MiB ({r['n_train']} train) | {loader} | {r['rank']} | "
                         f"{r['samples']} | {r['self_mib']:.0f} | {r['children_mib']:.0f} |")
    growth = []
    for loader in loaders:
        peak = {f: max(r["self_mib"] for r in ranks) for f, _, ld, ranks in rows if ld == loader}
        growth.append(f"{loader}: {peak[4] / peak[1]:.2f}")
    text = (
        "# Peak resident memory per rank, dataset 1× vs 4×\n\n"
        f"Machine: {machine()}; load average at the end {load_average()}\n\n"
        f"Command: `python benchmarks/memory_per_rank.py {' '.join(sys.argv[1:])}`\n\n"
        "2-rank torchrun (gloo, 1 thread per rank), default model, global batch 64, one full epoch of the training "
        "split per rank through the loader (3 real training steps included). `ru_maxrss` of the rank process; "
        "'children' is the largest peak among its child processes (DALI's parallel reader workers; a forked child "
        "starts with the parent's pages counted, so this is ≈ the parent's RSS at fork time, mostly shared). "
        "The 4× dataset has 4× the galaxies per cell (split rounding gives 4.7× the training projections).\n\n"
        "| dataset | shard bytes | loader | rank | samples read by the rank | peak RSS [MiB] | children peak [MiB] |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(lines)
        + f"\n\n**Peak RSS 4× ÷ 1× (max over ranks): {'; '.join(growth)}** — the dataset grew 4×.\n"
    )
    write_result("memory_per_rank", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
