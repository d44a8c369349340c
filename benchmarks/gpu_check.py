"""GPU checks of the galmass data path on one H100/H200 (driven by benchmarks/gpu.sh; needs torch, numpy, h5py).

Runs without network, without DALI and, if needed, without galmass's other dependencies (yaml, scipy, zuko): the data
are synthetic HDF5 shards in the galmass layout (one chunk per sample, 64×64 maps), read through the real
``hpc.dali_loader.BatchSource``/``TorchLoader``. The model is galmass's default ``MassPosterior`` when galmass and
zuko import, else a stand-in with the same convolutional branches and a Gaussian head (named in the output).

Checks, each timed: 1-rank NCCL process group + all_reduce; CUDA training steps in fp32 and with bf16 autocast
(``hpc.dist.autocast_context``); training samples/s with the torch loader (several worker counts) ÷ the same batches
in host memory, steps interleaved one by one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hpc.dali_loader import BatchSource, TorchLoader  # noqa: E402
from hpc.dist import autocast_context  # noqa: E402

KEYS = ("maps_stars", "phase_stars", "scalars", "labels")


class H5Shards:
    """Minimal sharded HDF5 reader (galmass layout): lazily opened per process, slice reads per shard."""

    def __init__(self, files: list[str], counts: list[int]) -> None:
        self.files, self.offsets = files, np.concatenate([[0], np.cumsum(counts)])
        self._h: dict[int, object] = {}
        self._pid = -1

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self):
        return {**self.__dict__, "_h": {}, "_pid": -1}

    def get_batch(self, indices) -> dict[str, np.ndarray]:
        import h5py

        if self._pid != os.getpid():
            self._h, self._pid = {}, os.getpid()
        idx = np.asarray(indices)
        shard = np.searchsorted(self.offsets, idx, side="right") - 1
        out: dict[str, list] = {k: [] for k in KEYS}
        for s in np.unique(shard):  # BatchSource passes contiguous runs: one slice per shard and key
            if s not in self._h:
                self._h[s] = h5py.File(self.files[s], "r")
            rows = idx[shard == s] - self.offsets[s]
            for k in KEYS:
                out[k].append(self._h[s][k][rows[0]:rows[-1] + 1])
        return {k: np.concatenate(v) for k, v in out.items()}


def make_data(directory: Path, n: int, shard: int, npix: int) -> H5Shards:
    import h5py

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files, counts = [], []
    for i, lo in enumerate(range(0, n, shard)):
        m = min(shard, n - lo)
        path = directory / f"shard-{i:05d}.h5"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            with h5py.File(tmp, "w") as fh:
                fh.create_dataset("maps_stars", data=rng.random((m, 4, npix, npix), dtype=np.float32),
                                  chunks=(1, 4, npix, npix))
                fh.create_dataset("phase_stars", data=rng.random((m, 1, npix, npix), dtype=np.float32),
                                  chunks=(1, 1, npix, npix))
                fh.create_dataset("scalars", data=rng.normal(size=(m, 4)).astype(np.float32) * 0.1 + 1.0)
                fh.create_dataset("labels", data=rng.normal(size=(m, 10)).astype(np.float32) + 9.0)
            tmp.rename(path)
        files.append(str(path))
        counts.append(m)
    return H5Shards(files, counts)


class StandIn(torch.nn.Module):
    """Default-sized conv branches (16-32-64, GroupNorm) + fusion MLP + diagonal Gaussian NLL over 10 labels."""

    def __init__(self, npix: int) -> None:
        super().__init__()

        def branch(c: int) -> torch.nn.Sequential:
            layers, prev = [], c
            for w in (16, 32, 64):
                layers += [torch.nn.Conv2d(prev, w, 3, stride=2, padding=1, bias=False), torch.nn.GroupNorm(8, w),
                           torch.nn.SiLU()]
                prev = w
            return torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                       torch.nn.Linear(prev, 64))

        self.sky, self.phase = branch(4), branch(1)
        self.head = torch.nn.Sequential(torch.nn.Linear(64 * 2 + 4, 128), torch.nn.SiLU(), torch.nn.Linear(128, 20))

    def forward(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.head(torch.cat([self.sky(b["maps_stars"]), self.phase(b["phase_stars"]), b["scalars"]], 1))
        mu, log_s = h[:, :10], h[:, 10:].clamp(-5, 5)
        return (0.5 * ((b["labels"] - 9.0 - mu) / log_s.exp()) ** 2 + log_s).sum(1)


def build_model(npix: int, device: torch.device) -> tuple[torch.nn.Module, str]:
    try:
        from galmass.config import ModelConfig
        from galmass.models import MassPosterior

        stats = {"mean": [0.0] * 10, "std": [1.0] * 10, "min": [-1.0] * 10, "max": [1.0] * 10}
        norm = {"scalars": {k: v[:4] for k, v in stats.items()}, "y_stars": stats, "y_gas": stats}
        torch.manual_seed(0)
        return MassPosterior(ModelConfig(), npix, norm).to(device), "galmass MassPosterior (default config, zuko MAF)"
    except Exception as err:  # noqa: BLE001 - any missing dependency (yaml, scipy, zuko) means: use the stand-in
        torch.manual_seed(0)
        return StandIn(npix).to(device), f"stand-in CNN + Gaussian head (galmass model unavailable: {err})"


def to_device(batch, device):
    return {k: torch.as_tensor(v).to(device, non_blocking=True) for k, v in batch.items()}


def step(model, opt, batch, device, bf16: bool) -> None:
    b = to_device(batch, device)
    with autocast_context(device, bf16):
        loss = model(b).float().mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()


def nccl_check() -> str:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("GALMASS_NCCL_PORT", "29631"),
                      RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    t0 = time.perf_counter()
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda", 0))
    x = torch.full((1024,), 2.0, device="cuda")
    dist.all_reduce(x)
    dist.barrier(device_ids=[0])
    ok = bool(torch.all(x == 2.0))
    dist.destroy_process_group()
    verdict = "OK" if ok else "WRONG RESULT"
    return f"NCCL 1-rank init + all_reduce + barrier: {verdict} in {time.perf_counter() - t0:.2f} s"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=str(ROOT / "benchmarks" / "_work" / "gpu"))
    p.add_argument("--n", type=int, default=8192)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--workers", default="0,4,8")
    p.add_argument("--allow-cpu", action="store_true", help="development run of the logic on a CPU (no NCCL)")
    a = p.parse_args()
    if not torch.cuda.is_available() and not a.allow_cpu:
        print("gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False); nothing measured. "
              "HINT: run benchmarks/gpu.sh on a node with one H100/H200.", file=sys.stderr)
        return 3
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    lines = [f"device: {torch.cuda.get_device_name(0) if device.type == 'cuda' else 'CPU (development run)'}; "
             f"torch {torch.__version__}, CUDA {torch.version.cuda}, {os.cpu_count()} CPU cores"]
    if device.type == "cuda":
        lines.append(nccl_check())
    data = make_data(Path(a.work), a.n, 512, 64)
    model, desc = build_model(64, device)
    lines.append(f"model: {desc}, {sum(q.numel() for q in model.parameters())} parameters; batch {a.batch}")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    source = BatchSource(data, KEYS, a.batch, 0, 1, seed=0, max_steps=a.steps)
    mem = [source.batch(0, k) for k in range(source.steps_per_epoch)]
    for bf16 in (False, True):
        for b in mem[:3]:
            step(model, opt, b, device, bf16)  # warm-up (cuDNN autotuning, autocast caches)
        t0 = time.perf_counter()
        for b in mem:
            step(model, opt, b, device, bf16)
        rate = len(mem) * a.batch / (time.perf_counter() - t0)
        lines.append(f"training step, batches in host memory, {'bf16 autocast' if bf16 else 'fp32'}: "
                     f"{rate:.0f} samples/s")
    for workers in (int(w) for w in a.workers.split(",")):
        loader = TorchLoader(source, num_workers=workers)
        t_loader = t_mem = 0.0
        it = iter(loader.epoch(1))
        for m in mem:
            t0 = time.perf_counter()
            step(model, opt, next(it), device, True)
            t1 = time.perf_counter()
            step(model, opt, m, device, True)
            t_loader, t_mem = t_loader + t1 - t0, t_mem + time.perf_counter() - t1
        n = len(mem) * a.batch
        lines.append(f"torch loader, {workers} workers, bf16: {n / t_loader:.0f} samples/s vs in memory "
                     f"{n / t_mem:.0f} samples/s -> ratio {t_mem / t_loader:.3f}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
