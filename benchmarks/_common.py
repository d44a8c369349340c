"""Shared helpers of the benchmark scripts: the machine description and writing a result file."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hpc.atomic import atomic_write_text  # noqa: E402

__all__ = ["ROOT", "machine", "write_result", "load_average"]


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
