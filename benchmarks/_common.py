"""Shared helpers of the benchmark scripts: the machine description and writing a result file."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

from hpc.atomic import atomic_write_text  # noqa: E402

__all__ = ["ROOT", "machine", "write_result", "load_average", "train_step", "DdpBench", "ddp_bench_setup"]


def load_average() -> str:
    """``1/5/15-minute load average`` (other jobs on a shared machine distort timings; reports say how busy it was)."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def machine() -> str:
    """One line naming the host, CPU model, core count, GPU and software versions."""
    import torch

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{platform.node()}: {cpu}, {os.cpu_count()} cores{mem}, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def write_result(name: str, text: str) -> Path:
    """Print ``text`` and write it atomically to ``benchmarks/results/<name>.md``."""
    print(text)
    out = ROOT / "benchmarks" / "results" / f"{name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    return out


def train_step(net: Any, opt: Any, batch: dict, device: Any) -> None:
    """One optimiser step of galmass's NLL on a numpy batch (synchronised on CUDA so timings are real)."""
    import torch

    from galmass.models.io import to_torch

    loss = net(to_torch(batch, device)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()


@dataclass
class DdpBench:
    """What a benchmark rank needs: distributed info, the training split, keys, model (DDP-wrapped) and optimiser."""

    info: Any
    data: Any
    keys: tuple[str, ...]
    net: Any
    opt: Any


def ddp_bench_setup(data_path: str, galaxies_per_cell: int) -> DdpBench:
    """Initialise this rank (one thread, launcher from the environment) with the default model on ``data_path``."""
    import torch

    from galmass.config import load_config
    from galmass.datasets import ShardedDataset, load_manifest
    from galmass.models.network import input_keys
    from galmass.models.io import build_model
    from hpc.dist import init_distributed

    torch.set_num_threads(1)
    info = init_distributed()
    cfg = load_config(None, [f"--data.path={data_path}", f"--data.galaxies_per_cell={galaxies_per_cell}"])
    keys = input_keys(cfg.model) + ("labels",)
    data = ShardedDataset(cfg.data.path, "train", keys, verify=False)
    model = build_model(cfg, load_manifest(cfg.data.path))
    net = torch.nn.parallel.DistributedDataParallel(model) if info.world_size > 1 else model
    return DdpBench(info, data, keys, net, torch.optim.AdamW(model.parameters(), lr=1e-4))
