"""GPU checks of the galmass data path and training step on one H100/H200 (driven by benchmarks/gpu.sh).

Needs torch, numpy and h5py only: no network, no DALI, and (if need be) none of galmass's other dependencies
(yaml, scipy, zuko, tensorboard); whatever is missing turns the checks that need it into "skipped: <reason>" lines.

Every check runs in its own Python process with its own time limit, and its result line ``| check | result |
seconds |`` is appended to the report (flushed and fsync'ed) as soon as it finishes, so one failing or hanging
check never stops the others and a run cut short still leaves the finished lines. Checks:

``device``       CUDA device, versions, an fp32 matmul against a float64 CPU reference.
``nccl``         1-rank NCCL process group (free TCP port) + all_reduce + barrier.
``data``         synthetic HDF5 shards in the galmass layout (one chunk per sample) and the exact-rows reader
                 verified against direct per-row h5py reads.
``model``        which model runs (galmass ``MassPosterior`` or a stand-in) and the bf16 split: conv encoders and
                 fusion under bf16 autocast, the flow's log-density in fp32; its NLL next to pure fp32 and to
                 everything under autocast.
``train_fp32``   training steps/s with batches in host memory, fp32.
``train_bf16``   the same with bf16 autocast for the encoders and an fp32 flow.
``loader_wK``    training samples/s with the torch loader (K DataLoader workers) ÷ the same batches from host
                 memory, steps interleaved one by one; every delivered batch has exactly ``--batch`` samples.
``dali``         DALI parallel external_source → ``.gpu()`` (skipped when DALI is not installed).
``train_smoke``  ``galmass mock`` of a tiny data set + a 1-epoch bf16 ``galmass train`` (skipped without galmass's
                 dependencies).

``--cpu-selftest`` runs the same machinery on the CPU with tiny sizes (what tests/test_gpu_check.py exercises).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KEYS = ("maps_stars", "phase_stars", "scalars", "summary_stars", "labels")
N_SCALARS, N_SUMMARIES, N_LABELS = 4, 10, 10
# log10 of G = 4.30092e-6 kpc (km/s)^2 / Msun (galmass.physics.constants.G), hard-coded so that the synthetic data
# need no galmass import.
LOG10_G = math.log10(4.30092e-6)
RESULT_TAG = "GPU_CHECK_RESULT\t"
MIN_CHECK_S = 8.0  # below this much budget a check cannot even start Python + torch; it is reported as not run
DALI_PREFETCH = 2  # batches each DALI stage prepares ahead (external_source's own default is 1)

# Copies of tests/conftest.py TINY_DATA / TINY_MODEL / TINY_TRAIN (conftest imports pytest, absent on a GPU node);
# TINY_TRAIN without its epochs, which the smoke run sets to 1.
TINY_DATA = ["--data.galaxies_per_cell=6", "--data.projections=8", "--data.npix=16", "--data.star_pool=3000",
             "--data.gas_cells=300", "--data.shard_size=16", "--data.val_fraction=0.17",
             "--data.test_fraction=0.17", "--data.seed=3"]
TINY_MODEL = ["--model.widths=[8,16]", "--model.embed_dim=16", "--model.flow_transforms=2",
              "--model.flow_hidden=[32,32]"]
TINY_TRAIN = ["--train.batch_size=16", "--train.progress=false", "--train.lr=1e-3", "--train.patience=0"]


class CheckSkipped(Exception):
    """A check that cannot run here (missing package, no GPU); the message says why."""


# ============================================================================================ data


def contiguous_runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of every run of consecutive integers in sorted, unique ``rows``.

    >>> contiguous_runs(np.array([3, 4, 5, 9, 10]))
    [(3, 6), (9, 11)]
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts, ends = np.concatenate([[0], breaks]), np.concatenate([breaks, [rows.size]])
    return [(int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, ends)]


def check_batch_size(batch: dict[str, Any], expected: int, where: str) -> None:
    """Raise RuntimeError unless every entry of ``batch`` has exactly ``expected`` samples."""
    sizes = {k: int(v.shape[0]) for k, v in batch.items()}
    if any(n != expected for n in sizes.values()):
        raise RuntimeError(f"{where}: delivered batch sizes {sizes}, requested {expected}")


class H5Shards:
    """Sharded HDF5 reader (galmass layout) that returns exactly the requested rows, in the requested order.

    Files are opened lazily in the process that reads (the object pickles without handles). Per shard the
    requested rows are sorted and read with one slice per contiguous run, as ``galmass.datasets.reader`` does;
    repeated indices (the sampler's padding) are read once and copied.
    """

    def __init__(self, files: list[str], counts: list[int]) -> None:
        self.files = list(files)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._h: dict[int, Any] = {}
        self._pid = -1

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_h": {}, "_pid": -1}

    def _file(self, shard: int) -> Any:
        import h5py

        if self._pid != os.getpid():  # a forked DataLoader worker must not share the parent's handles
            self._h, self._pid = {}, os.getpid()
        if shard not in self._h:
            self._h[shard] = h5py.File(self.files[shard], "r")
        return self._h[shard]

    def get_batch(self, indices: Any) -> dict[str, np.ndarray]:
        """Samples ``indices`` (global) as a dict of arrays whose first axis is ``len(indices)``, in that order."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices out of range [0, {len(self)}): min {idx.min()}, max {idx.max()}")
        shard_of = np.searchsorted(self.offsets, idx, side="right") - 1
        out: dict[str, np.ndarray] = {}
        for shard in np.unique(shard_of):
            pos = np.flatnonzero(shard_of == shard)
            rows, inverse = np.unique(idx[pos] - self.offsets[shard], return_inverse=True)
            runs = contiguous_runs(rows)
            fh = self._file(int(shard))
            for key in KEYS:
                arr = np.concatenate([fh[key][a:b] for a, b in runs])
                if key not in out:
                    out[key] = np.empty((idx.size,) + arr.shape[1:], dtype=arr.dtype)
                out[key][pos] = arr[inverse.reshape(-1)]
        check_batch_size(out, idx.size, "H5Shards.get_batch")
        return out


def synthetic_arrays(rng: np.random.Generator, m: int, npix: int) -> dict[str, np.ndarray]:
    """``m`` synthetic samples in the galmass layout, with labels near the virial scale log10(σ² R_h / G).

    Units as in galmass.datasets.schema: scalars log10 R_h [kpc], log10 σ★ [km/s], log10 v_rms [km/s], log10 N★;
    labels log10 M(<f_i R_h) [Msun]. Values are random but of the right magnitude, so the NLL is finite.
    """
    scalars = np.stack([rng.normal(0.0, 0.2, m), rng.normal(1.0, 0.15, m), rng.normal(1.0, 0.15, m),
                        rng.normal(2.5, 0.4, m)], axis=1).astype(np.float32)
    scale = 2 * scalars[:, 1] + scalars[:, 0] - LOG10_G
    labels = scale[:, None] + np.linspace(-0.8, 0.8, N_LABELS)[None, :] + rng.normal(0, 0.1, (m, N_LABELS))
    return {"maps_stars": rng.random((m, 4, npix, npix), dtype=np.float32),
            "phase_stars": rng.random((m, 1, npix, npix), dtype=np.float32),
            "scalars": scalars, "summary_stars": rng.normal(0, 1, (m, N_SUMMARIES)).astype(np.float32),
            "labels": labels.astype(np.float32)}


def make_data(directory: Path, n: int, shard: int, npix: int) -> H5Shards:
    """Write (once; existing shards are reused) ``n`` synthetic samples as HDF5 shards of ``shard`` samples."""
    import h5py

    directory.mkdir(parents=True, exist_ok=True)
    files, counts = [], []
    for i, lo in enumerate(range(0, n, shard)):
        m = min(shard, n - lo)
        path = directory / f"shard-{i:05d}-n{m}-p{npix}.h5"
        if not path.exists():
            arrays = synthetic_arrays(np.random.default_rng([0, i]), m, npix)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            with h5py.File(tmp, "w") as fh:
                for key, arr in arrays.items():
                    fh.create_dataset(key, data=arr, chunks=(1,) + arr.shape[1:])  # one chunk per sample
            tmp.rename(path)
        files.append(str(path))
        counts.append(m)
    return H5Shards(files, counts)


def open_data(a: argparse.Namespace) -> H5Shards:
    return make_data(Path(a.work) / "shards", a.n, a.shard, a.npix)


# ============================================================================================ model


def galmass_io() -> Any:
    """``galmass.models.io`` (``build_model``, ``to_torch``), or ``galmass.train`` before that module existed."""
    try:
        import galmass.models.io as io
    except ModuleNotFoundError as err:
        if err.name != "galmass.models.io":
            raise  # a missing dependency (yaml, zuko, ...), not a missing module of galmass
        import galmass.train as io
    return io


def fake_manifest(npix: int) -> dict[str, Any]:
    """A dataset manifest with unit normalisation, enough for ``build_model`` (zero means, unit stds)."""

    def stats(k: int, corr: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"mean": [0.0] * k, "std": [1.0] * k, "min": [-1.0] * k, "max": [1.0] * k}
        if corr:  # uncorrelated labels; both spellings galmass's manifests have used (matrix, its Cholesky factor)
            out["corr"] = out["corr_cholesky"] = np.eye(k).tolist()
        return out

    norm = {"scalars": stats(N_SCALARS), "summary_stars": stats(N_SUMMARIES),
            "y_stars": stats(N_LABELS, True), "y_gas": stats(N_LABELS, True)}
    return {"npix": npix, "normalisation": norm, "radii_factors": list(np.geomspace(0.25, 4.0, N_LABELS))}


class StandIn(torch.nn.Module):
    """Default-sized conv branches (16-32-64, GroupNorm) + fusion MLP (the context) + a diagonal Gaussian head."""

    def __init__(self, npix: int) -> None:
        super().__init__()

        def branch(c: int) -> torch.nn.Sequential:
            layers: list[torch.nn.Module] = []
            prev = c
            for w in (16, 32, 64):
                layers += [torch.nn.Conv2d(prev, w, 3, stride=2, padding=1, bias=False), torch.nn.GroupNorm(8, w),
                           torch.nn.SiLU()]
                prev = w
            return torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                       torch.nn.Linear(prev, 64))

        self.sky, self.phase = branch(4), branch(1)
        self.fusion = torch.nn.Sequential(torch.nn.Linear(2 * 64 + N_SCALARS, 128), torch.nn.SiLU(),
                                          torch.nn.Linear(128, 64), torch.nn.SiLU())
        self.head = torch.nn.Linear(64, 2 * N_LABELS)

    def context(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fusion(torch.cat([self.sky(b["maps_stars"]), self.phase(b["phase_stars"]), b["scalars"]], 1))

    def head_nll(self, ctx: torch.Tensor, b: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.head(ctx)
        mu, log_s = h[:, :N_LABELS], h[:, N_LABELS:].clamp(-5, 5)
        y = b["labels"] - (2 * b["scalars"][:, 1:2] + b["scalars"][:, 0:1] - LOG10_G)
        return (0.5 * ((y - mu) / log_s.exp()) ** 2 + log_s).sum(1)

    def forward(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head_nll(self.context(b), b)


def build_model(npix: int, device: torch.device) -> tuple[torch.nn.Module, str]:
    """galmass's default ``MassPosterior`` (via its own ``build_model``), else the stand-in; and which one ran."""
    try:
        from galmass.config import load_config

        cfg = load_config(None, [])
        model = galmass_io().build_model(cfg, fake_manifest(npix))
        m = cfg.model
        desc = (f"galmass MassPosterior (default config: widths {m.widths}, embed {m.embed_dim}, {m.flow} flow × "
                f"{m.flow_transforms}, ensemble {getattr(m, 'ensemble', 1)})")
    except Exception as err:  # noqa: BLE001 - any missing dependency (yaml, scipy, zuko) means: use the stand-in
        torch.manual_seed(0)
        model = StandIn(npix)
        why = " ".join(f"{type(err).__name__}: {err}".split())[:160]
        desc = f"stand-in CNN + Gaussian head (galmass model unavailable: {why})"
    return model.to(device), desc


def autocast(device: torch.device, bf16: bool) -> Any:
    """bf16 autocast on CUDA when asked (as hpc.dist.autocast_context), otherwise autocast explicitly off."""
    if bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


def split_nll(model: torch.nn.Module, b: dict[str, torch.Tensor], device: torch.device, bf16: bool
              ) -> torch.Tensor:
    """Per-sample NLL [B] with the encoders + fusion under bf16 autocast and the flow's log-density in fp32.

    With ``bf16=False`` this is ``model(b)`` (the ``model`` check verifies that on the model that runs).
    """
    off = torch.autocast(device_type=device.type, enabled=False)
    if isinstance(model, StandIn):
        with autocast(device, bf16):
            ctx = model.context(b)
        with off:
            return model.head_nll(ctx.float(), b)
    members = getattr(model, "members", None)
    if members is not None:  # MassPosterior as an ensemble of _Member networks
        with autocast(device, bf16):
            maps, inputs = model._inputs(b)
            ctxs = [m.context(maps, inputs) for m in members]
        with off:
            y = model.to_y(b["labels"], b["scalars"])
            return torch.stack([-m.flow(c.float()).log_prob(y) for m, c in zip(members, ctxs)]).mean(0)
    if hasattr(model, "flow") and hasattr(model, "context"):  # single-network MassPosterior
        with autocast(device, bf16):
            ctx = model.context(b)
        with off:
            return -model.flow(ctx.float()).log_prob(model.to_y(b["labels"], b["scalars"]))
    raise RuntimeError(f"{type(model).__name__} has neither members nor flow/context: cannot split the encoders "
                       "from the flow. HINT: update split_nll in benchmarks/gpu_check.py to the model's structure")


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v).to(device, non_blocking=True) for k, v in batch.items()}


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict[str, Any], device: torch.device,
               bf16: bool) -> float:
    """One AdamW step on ``batch`` (bf16: encoders under autocast, flow in fp32); returns the mean NLL."""
    loss = split_nll(model, to_device(batch, device), device, bf16).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())  # synchronises: the step is finished when this returns


def get_device(a: argparse.Namespace) -> torch.device:
    return torch.device("cuda", 0) if a.device == "cuda" else torch.device("cpu")


def precision_name(device: torch.device, bf16: bool) -> str:
    if not bf16:
        return "fp32"
    if device.type != "cuda":
        return "bf16 requested, fp32 on the CPU"
    return "bf16 autocast encoders + fp32 flow"


# ============================================================================================ checks


def check_device(a: argparse.Namespace) -> str:
    """Device name, versions and an fp32 matmul against a float64 CPU reference."""
    base = f"torch {torch.__version__}, {os.cpu_count()} CPU cores"
    if a.device != "cuda":
        return f"CPU self-test: {base}"
    p = torch.cuda.get_device_properties(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1024, 1024, generator=g), torch.randn(1024, 1024, generator=g)
    ref = x.double() @ y.double()
    err = float(((x.cuda() @ y.cuda()).cpu().double() - ref).abs().max() / ref.abs().max())
    # fp32 (no TF32) over K=1024 terms: relative error ~ sqrt(K) * 2^-24 ~ 2e-6; TF32 would give ~1e-3.
    verdict = "OK" if err < 1e-4 else "TOO LARGE (TF32 on for matmul?)"
    return (f"{p.name}, compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB, "
            f"{torch.cuda.device_count()} visible; {base}, CUDA {torch.version.cuda}, cuDNN "
            f"{torch.backends.cudnn.version()}, bf16 {torch.cuda.is_bf16_supported()}; fp32 matmul vs float64: "
            f"max rel. error {err:.1e} {verdict}")


def free_port() -> int:
    """A TCP port that was free a moment ago (bind port 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_nccl(a: argparse.Namespace) -> str:
    """1-rank NCCL process group on a free port + all_reduce + barrier, with a 60 s collective timeout."""
    if a.device != "cuda":
        raise CheckSkipped("NCCL needs CUDA (CPU self-test)")
    import datetime

    import torch.distributed as dist

    if not dist.is_nccl_available():
        raise RuntimeError("this torch build has no NCCL")
    port = free_port()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    torch.cuda.set_device(0)
    t0 = time.perf_counter()
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda", 0),
                            timeout=datetime.timedelta(seconds=60))
    x = torch.arange(1, 4097, dtype=torch.float32, device="cuda")
    dist.all_reduce(x)
    dist.barrier(device_ids=[0])
    torch.cuda.synchronize()
    t_init = time.perf_counter() - t0
    t1 = time.perf_counter()
    dist.all_reduce(x)
    torch.cuda.synchronize()
    t_ar = time.perf_counter() - t1
    ok = bool(torch.equal(x, torch.arange(1, 4097, dtype=torch.float32, device="cuda")))
    dist.destroy_process_group()
    if not ok:
        raise RuntimeError("all_reduce over 1 rank changed the tensor")
    return f"OK on port {port}: init + first all_reduce + barrier {t_init:.2f} s, next all_reduce {t_ar * 1e3:.2f} ms"


def check_data(a: argparse.Namespace) -> str:
    """Write the shards; verify one shuffled batch of the sampler against direct per-row h5py reads."""
    import h5py

    from hpc.dali_loader import BatchSource

    t0 = time.perf_counter()
    data = open_data(a)
    t_write = time.perf_counter() - t0
    source = BatchSource(data, KEYS, a.batch, 0, 1, seed=0, max_steps=a.steps)
    idx = source.indices(0, 0)
    batch = source.batch(0, 0)
    check_batch_size(batch, a.batch, "BatchSource.batch")
    shard_of = np.searchsorted(data.offsets, idx, side="right") - 1
    files = {int(s): h5py.File(data.files[s], "r") for s in np.unique(shard_of)}
    try:
        for j, (i, s) in enumerate(zip(idx, shard_of)):
            for key in KEYS:
                if not np.array_equal(batch[key][j], files[int(s)][key][int(i - data.offsets[s])]):
                    raise RuntimeError(f"batch row {j} ({key}) differs from sample {i} read directly")
    finally:
        for fh in files.values():
            fh.close()
    size = sum(os.path.getsize(f) for f in data.files) / 2**20
    return (f"{len(data)} samples, {len(data.files)} shards, {size:.0f} MiB ready in {t_write:.1f} s; shuffled batch "
            f"of {len(idx)} indices ({len(np.unique(shard_of))} shards) read with exactly {a.batch} rows, equal to "
            "per-row h5py reads")


def check_model(a: argparse.Namespace) -> str:
    """Which model runs; the fp32 split equals ``model(b)``; NLL errors of the bf16 split and of full autocast."""
    device = get_device(a)
    model, desc = build_model(a.npix, device)
    b = to_device(synthetic_arrays(np.random.default_rng(7), min(a.batch, 128), a.npix), device)
    model.eval()  # deterministic forward (no training-time randomness) for the comparison
    with torch.no_grad():
        with autocast(device, False):
            ref = model(b).double()
        split32 = split_nll(model, b, device, False).double()
        split16 = split_nll(model, b, device, True)
        try:
            with autocast(device, True):
                full = f"{float((model(b).double() - ref).abs().max()):.2e}"
        except Exception as err:  # noqa: BLE001 - only a comparison: report it, keep the check's verdict
            full = f"fails ({type(err).__name__}: {str(err)[:80]})"
    # Identical fp32 operations: only the order of GPU reductions may differ, ~1e-6 relative for O(10) NLLs.
    dev32 = float((split32 - ref).abs().max())
    if dev32 > 1e-4 * max(1.0, float(ref.abs().max())):
        raise RuntimeError(f"split_nll(fp32) differs from model(batch) by {dev32:.2e}: the split does not follow "
                           f"the model. HINT: update split_nll ({desc})")
    if split16.dtype != torch.float32:
        raise RuntimeError(f"the flow's NLL is {split16.dtype} under the bf16 split, expected float32")
    e_split = float((split16.double() - ref).abs().max())
    n_par = sum(p.numel() for p in model.parameters())
    return (f"{desc}, {n_par / 1e6:.2f} M parameters. NLL vs fp32 (max |Δ| over {len(ref)} samples, mean NLL "
            f"{float(ref.mean()):.2f}): bf16 encoders + fp32 flow {e_split:.2e}, everything under bf16 autocast "
            f"{full}; split in fp32 == model(batch) (Δ {dev32:.1e})")


def check_train(a: argparse.Namespace, bf16: bool) -> str:
    """Training samples/s with ``a.steps`` batches of exactly ``a.batch`` synthetic samples in host memory."""
    device = get_device(a)
    model, desc = build_model(a.npix, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(1)
    mem = [synthetic_arrays(rng, a.batch, a.npix) for _ in range(a.steps)]
    for b in mem[:3]:
        train_step(model, opt, b, device, bf16)  # warm-up: cuDNN algorithm choice, allocator, autocast caches
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    losses = [train_step(model, opt, b, device, bf16) for b in mem]
    dt = time.perf_counter() - t0
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError(f"non-finite loss during the timed steps: {losses}")
    peak = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device.type == "cuda" else ""
    return (f"{a.steps * a.batch / dt:,.0f} samples/s ({precision_name(device, bf16)}; {a.steps} steps × batch "
            f"{a.batch}, {dt / a.steps * 1e3:.1f} ms/step; loss {losses[0]:.3f} → {losses[-1]:.3f}{peak}); "
            f"model: {desc.split(' (')[0]}")


def check_loader(a: argparse.Namespace, workers: int) -> str:
    """Torch loader vs the same batches in host memory, bf16 steps interleaved one by one."""
    from hpc.dali_loader import BatchSource, TorchLoader

    device = get_device(a)
    source = BatchSource(open_data(a), KEYS, a.batch, 0, 1, seed=0, max_steps=a.steps)
    mem = [source.batch(0, k) for k in range(source.steps_per_epoch)]
    model, _ = build_model(a.npix, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for m in mem[:3]:
        train_step(model, opt, m, device, True)
    t0 = time.perf_counter()
    it = iter(TorchLoader(source, num_workers=workers).epoch(0))
    first = next(it)  # worker start-up: reported, not timed
    t_start = time.perf_counter() - t0
    check_batch_size(first, a.batch, f"torch loader ({workers} workers), step 0")
    if not np.array_equal(first["labels"].numpy(), mem[0]["labels"]):
        raise RuntimeError("the loader's first batch is not the sampler's batch 0")
    t_loader = t_mem = 0.0
    for k, m in enumerate(mem[1:], start=1):
        t0 = time.perf_counter()
        b = next(it)
        check_batch_size(b, a.batch, f"torch loader ({workers} workers), step {k}")
        train_step(model, opt, b, device, True)
        t1 = time.perf_counter()
        train_step(model, opt, m, device, True)
        t_loader, t_mem = t_loader + t1 - t0, t_mem + time.perf_counter() - t1
    n = (len(mem) - 1) * a.batch
    return (f"ratio {t_mem / t_loader:.3f}: {n / t_loader:,.0f} samples/s with the loader vs {n / t_mem:,.0f} from "
            f"memory ({precision_name(device, True)}; {len(mem) - 1} timed steps × batch {a.batch} exactly; "
            f"first batch after {t_start:.2f} s)")


def dali_hint() -> str:
    """Install hint for the DALI wheel that matches this torch's CUDA major version (nvidia-dali-cuda<major>0)."""
    major = (torch.version.cuda or "").split(".")[0]
    if major:
        return f"pip install nvidia-dali-cuda{major}0, the wheel for CUDA {major}.x, this torch's CUDA"
    return ("pip install nvidia-dali-cuda<MAJOR>0 for the node's CUDA major version, e.g. nvidia-dali-cuda130 for "
            "CUDA 13")


def check_dali(a: argparse.Namespace) -> str:
    """DALI parallel external_source (explicit prefetch depths) → .gpu(); exact batches, delivered samples/s."""
    from hpc.dali_loader import BatchSource, dali_available

    if not dali_available():
        raise CheckSkipped(f"DALI not installed (HINT: {dali_hint()})")
    from nvidia.dali import fn
    from nvidia.dali.pipeline import Pipeline

    on_gpu = a.device == "cuda"
    source = BatchSource(open_data(a), KEYS, a.batch, 0, 1, seed=0, max_steps=a.steps)
    workers = max(1, min(4, (os.cpu_count() or 2) // 2))
    pipe = Pipeline(batch_size=a.batch, num_threads=2, device_id=0 if on_gpu else None, seed=0,
                    prefetch_queue_depth=DALI_PREFETCH, py_num_workers=workers, py_start_method="fork")
    with pipe:
        outs = fn.external_source(source=source, num_outputs=len(KEYS), batch=True, batch_info=True,
                                  parallel=True, prefetch_queue_depth=DALI_PREFETCH)
        pipe.set_outputs(*[o.gpu() if on_gpu else o for o in outs])
    pipe.build()  # starts the forked workers before torch touches CUDA in this process
    device = get_device(a)
    t0, n_timed = time.perf_counter(), 0
    for k in range(source.steps_per_epoch):
        if k == 1:
            t0 = time.perf_counter()  # the first batch includes the workers' start: not timed
        batch = {key: dali_to_torch(tl, device) for key, tl in zip(KEYS, pipe.run())}
        check_batch_size(batch, a.batch, f"DALI step {k}")
        if k == 0 and not np.array_equal(batch["labels"].cpu().numpy(), source.batch(0, 0)["labels"]):
            raise RuntimeError("DALI's first batch is not the sampler's batch 0")
        n_timed += a.batch if k else 0
    if on_gpu:
        torch.cuda.synchronize()
    rate = n_timed / (time.perf_counter() - t0)
    where = ".gpu()" if on_gpu else "CPU pipeline"
    return (f"{rate:,.0f} samples/s delivered ({where}, {workers} parallel workers, prefetch_queue_depth "
            f"{DALI_PREFETCH} for the pipeline and the external_source; batch {a.batch} exactly)")


def dali_to_torch(tl: Any, device: torch.device) -> torch.Tensor:
    """One DALI output batch as a torch tensor (a copy: DALI reuses its buffers)."""
    if device.type != "cuda":
        return torch.from_numpy(np.array(tl.as_array()))
    from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

    dense = tl.as_tensor()
    out = torch.empty(dense.shape(), dtype=to_torch_type[dense.dtype], device=device)
    feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(device))
    return out


def run_galmass(args: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
    """``python -m <args>`` with the repository on PYTHONPATH; RuntimeError with its last lines if it fails."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True,
                          timeout=max(timeout, 1.0), cwd=ROOT)
    if proc.returncode != 0:
        tail = " / ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"{what} exited {proc.returncode}: {tail}")
    return proc


def importable(module: str) -> bool:
    """True if ``module`` can be found (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_train_smoke(a: argparse.Namespace) -> str:
    """``galmass mock`` (tiny) + ``galmass.train`` 1 epoch with bf16, as subprocesses with time limits."""
    missing = [m for m in ("yaml", "scipy", "zuko", "tensorboard") if not importable(m)]
    if missing:
        raise CheckSkipped(f"galmass train cannot run here: missing {', '.join(missing)} (HINT: install galmass's "
                           "dependencies, or put their wheels next to gpu.sh)")
    work = Path(a.work)
    data, run = work / "smoke_data", work / "smoke_run"
    for d in (data, run):  # both are this script's own scratch directories
        shutil.rmtree(d, ignore_errors=True)
    deadline = time.monotonic() + a.limit_s - 5
    t0 = time.perf_counter()
    run_galmass(["galmass", "mock", "--workers", str(min(8, os.cpu_count() or 1)), *TINY_DATA,
                 f"--data.path={data}"], (deadline - time.monotonic()) * 0.6, "galmass mock")
    t1 = time.perf_counter()
    proc = run_galmass(["galmass.train", *TINY_DATA, f"--data.path={data}", *TINY_MODEL, *TINY_TRAIN,
                        "--train.bf16=true", "--train.epochs=1", f"--train.run_dir={run}"],
                       deadline - time.monotonic(), "galmass train")
    t2 = time.perf_counter()
    done = json.loads((run / "done.json").read_text())
    hist = done["history"][-1]
    if done["epochs_run"] != 1 or not (run / "best.pt").exists() or not math.isfinite(hist["val_nll"]):
        raise RuntimeError(f"unexpected run state: {done['epochs_run']} epochs, best.pt "
                           f"{(run / 'best.pt').exists()}, val NLL {hist['val_nll']}")
    if a.device == "cuda" and not ("cuda" in proc.stdout and "bf16 autocast" in proc.stdout):
        raise RuntimeError("the training log does not show a CUDA device with bf16 autocast: "
                           + " ".join(proc.stdout.split())[:300])
    where = "CUDA, bf16 autocast" if a.device == "cuda" else "CPU (bf16 is ignored there)"
    return (f"1 epoch on {where}: train NLL {hist['train_nll']:.3f}, val NLL {hist['val_nll']:.3f}; mock "
            f"{t1 - t0:.1f} s, train {t2 - t1:.1f} s (tiny data set, 16×16 maps)")


def check_fail(a: argparse.Namespace) -> str:
    """Test hook: a check that always fails."""
    raise RuntimeError("deliberate failure (test hook _fail)")


def check_hang(a: argparse.Namespace) -> str:
    """Test hook: a check that never finishes (writes its pid to WORK/_hang.pid first)."""
    Path(a.work).mkdir(parents=True, exist_ok=True)
    (Path(a.work) / "_hang.pid").write_text(str(os.getpid()))
    time.sleep(3600)
    return "unreachable"


# ============================================================================================ runner


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[argparse.Namespace], str]
    limit_s: float


def registry(workers: list[int]) -> dict[str, Check]:
    """All checks in their default order (the loader ones per worker count), plus the test hooks."""
    checks = [Check("device", check_device, 45), Check("nccl", check_nccl, 60), Check("data", check_data, 60),
              Check("model", check_model, 60), Check("train_fp32", lambda a: check_train(a, False), 60),
              Check("train_bf16", lambda a: check_train(a, True), 60)]
    checks += [Check(f"loader_w{w}", lambda a, w=w: check_loader(a, w), 60) for w in workers]
    checks += [Check("dali", check_dali, 60), Check("train_smoke", check_train_smoke, 100),
               Check("_fail", check_fail, 30), Check("_hang", check_hang, 3600)]
    return {c.name: c for c in checks}


def run_single(a: argparse.Namespace) -> int:
    """Child mode: run one check, print its result line (tagged) on stdout; a traceback and exit 1 on failure."""
    check = registry(a.worker_list)[a.one]
    signal.alarm(int(a.limit_s) + 15)  # outlives no SIGKILLed runner by long: SIGALRM ends this process
    try:
        text = check.run(a)
        status = "ok"
    except CheckSkipped as why:
        text, status = str(why), "skipped"
    except Exception:  # noqa: BLE001 - the parent reports the last line of the traceback
        traceback.print_exc()
        return 1
    print(f"{RESULT_TAG}{status}\t{' '.join(text.split())}", flush=True)
    return 0


class Interrupted(Exception):
    """SIGTERM/SIGINT/SIGHUP reached the runner (e.g. gpu.sh's overall time limit)."""


def _raise_interrupted(signum: int, frame: Any) -> None:
    # `timeout` signals its child and then its whole process group: act on the first signal only.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name)


def child_args(a: argparse.Namespace, name: str, limit: float) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--one", name, "--work", a.work, "--device", a.device,
            "--n", str(a.n), "--shard", str(a.shard), "--batch", str(a.batch), "--steps", str(a.steps),
            "--npix", str(a.npix), "--workers", a.workers, "--limit-s", f"{limit:.0f}"]


def stop_group(proc: subprocess.Popen) -> None:
    """Terminate the child's whole process group (DataLoader/DALI workers included), then kill what is left."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            if sig == signal.SIGTERM:
                os.killpg(proc.pid, signal.SIGKILL)  # workers that outlived their parent
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def run_child(a: argparse.Namespace, name: str, limit: float) -> tuple[str, str, str]:
    """Run check ``name`` in a subprocess (own session) with a time limit: (status, text, stderr tail)."""
    logs = Path(a.work) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / f"{name}.out", logs / f"{name}.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(child_args(a, name, limit), stdout=out, stderr=err, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            stop_group(proc)
            return "timeout", f"TIMEOUT: no result within its limit of {limit:.0f} s", _tail(err_path)
        except Interrupted as sig:
            stop_group(proc)
            raise Interrupted(f"{sig} while '{name}' ran") from None
    result = [ln for ln in out_path.read_text().splitlines() if ln.startswith(RESULT_TAG)]
    if rc == 0 and result:
        status, text = result[-1][len(RESULT_TAG):].split("\t", 1)
        return status, ("skipped: " + text if status == "skipped" else text), ""
    tail = _tail(err_path)
    last = next((ln for ln in reversed(tail.splitlines()) if ln.strip()), "no error message")
    return "failed", f"FAILED (exit {rc}): {last.strip()}", tail


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


class Report:
    """The markdown table, one line appended (flushed, fsync'ed) per finished check; echoed on stdout."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self.rows: list[str] = []
        self.started = time.monotonic()  # when the check in progress started
        self.details: list[tuple[str, str]] = []

    def write(self, text: str) -> None:
        print(text, end="", flush=True)
        if self.path is not None:
            with open(self.path, "a") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())

    def row(self, name: str, result: str, seconds: float, detail: str = "") -> None:
        cell = " ".join(result.split()).replace("|", "\\|")
        self.write(f"| {name} | {cell} | {seconds:.1f} |\n")
        self.rows.append(name)
        if detail:
            self.details.append((name, detail))

    def finish(self) -> None:
        for name, detail in self.details:
            self.write(f"\n<details><summary>{name}: last lines of stderr</summary>\n\n```\n{detail}\n```\n"
                       "</details>\n")


def selected(a: argparse.Namespace) -> list[Check]:
    reg = registry(a.worker_list)
    names = a.checks.split(",") if a.checks else [n for n in reg if not n.startswith("_")]
    unknown = [n for n in names if n not in reg]
    if unknown:
        raise ValueError(f"--checks: unknown check(s) {unknown}. HINT: choose from {', '.join(reg)}")
    return [reg[n] for n in names]


def orchestrate(a: argparse.Namespace) -> int:
    """Run the checks one after another; 0 if none failed, 1 if some failed/timed out, 124 if interrupted."""
    checks = selected(a)
    report = Report(a.report)
    report.write(f"\nSynthetic data: {a.n} samples, {a.npix}×{a.npix} maps, HDF5 shards of {a.shard} (one chunk per "
                 f"sample; read from the page cache); batch {a.batch}, {a.steps} steps per measurement. 'bf16' = "
                 "conv encoders + fusion under bf16 autocast, the flow's log-density in fp32.\n\n"
                 "| check | result | seconds |\n|---|---|---|\n")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _raise_interrupted)
    try:
        bad = run_checks(a, checks, report)
    except Interrupted as sig:
        done = len(report.rows)
        if done < len(checks):
            report.row(checks[done].name, f"INTERRUPTED ({sig}): the run was stopped from outside",
                       time.monotonic() - report.started)
        for rest in checks[done + 1:]:
            report.row(rest.name, "not run: interrupted", 0.0)
        report.finish()
        return 124
    report.finish()
    return 1 if bad else 0


def run_checks(a: argparse.Namespace, checks: list[Check], report: Report) -> int:
    """Each check in its own process with min(its limit, budget left); returns how many failed or timed out."""
    limits, deadline, bad = dict(a.limit or []), time.monotonic() + a.budget, 0
    for check in checks:
        left = deadline - time.monotonic()
        if left < MIN_CHECK_S:
            report.row(check.name, f"not run: the time budget (--budget {a.budget:.0f} s) is spent", 0.0)
            bad += 1
            continue
        t0 = report.started = time.monotonic()
        status, text, detail = run_child(a, check.name, min(limits.get(check.name, check.limit_s), left))
        bad += status in ("failed", "timeout")
        report.row(check.name, text, time.monotonic() - t0, detail)
    return bad


def parse_limit(text: str) -> tuple[str, float]:
    name, _, sec = text.partition("=")
    try:
        return name, float(sec)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--limit wants NAME=SECONDS, got {text!r}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--report", default=None, help="markdown file to append the result table to (else stdout only)")
    p.add_argument("--work", default=str(ROOT / "benchmarks" / "_work" / "gpu"), help="scratch directory")
    p.add_argument("--checks", default="", help="comma-separated subset, in this order (default: all)")
    p.add_argument("--budget", type=float, default=215.0, help="seconds for all checks together")
    p.add_argument("--limit", type=parse_limit, action="append", metavar="NAME=S", help="a check's own time limit")
    p.add_argument("--n", type=int, default=6144, help="samples in the synthetic HDF5 data set")
    p.add_argument("--shard", type=int, default=512, help="samples per HDF5 shard")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=24, help="steps per measurement")
    p.add_argument("--npix", type=int, default=64)
    p.add_argument("--workers", default="0,4,8", help="DataLoader worker counts of the loader checks")
    p.add_argument("--cpu-selftest", action="store_true",
                   help="run on the CPU with tiny sizes (n 192, batch 16, 4 steps, 16×16 maps, workers 0,2)")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--limit-s", type=float, default=60.0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.cpu_selftest:
        a.device, a.n, a.shard, a.batch, a.steps, a.npix = "cpu", 192, 64, 16, 4, 16
        a.workers = "0,2" if a.workers == "0,4,8" else a.workers
    a.device = a.device or "cuda"
    a.worker_list = [int(w) for w in a.workers.split(",") if w.strip()]
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.one:
        return run_single(a)
    if a.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False); nothing measured. HINT: run "
              "benchmarks/gpu.sh on a node with one H100/H200, or --cpu-selftest to check the machinery.",
              file=sys.stderr)
        return 3
    if a.device == "cpu" and a.report and Path(a.report).resolve() == (ROOT / "benchmarks/results/gpu.md"):
        print("gpu_check: a CPU self-test does not write benchmarks/results/gpu.md. HINT: --report elsewhere.",
              file=sys.stderr)
        return 2
    try:
        return orchestrate(a)
    except ValueError as err:
        print(f"gpu_check: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
