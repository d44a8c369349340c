"""Training batches from any batch-readable data set, through NVIDIA DALI or a torch DataLoader, in the same order.

The data set is anything with ``__len__`` and ``get_batch(indices) -> dict[str, np.ndarray]`` that pickles without
open file handles and opens them lazily in the process that reads (e.g. ``galmass.datasets.ShardedDataset``).
Both paths read through one picklable callable, :class:`BatchSource`, which turns ``(epoch, step)`` into this
rank's slice of global batch ``step`` of :class:`hpc.sampler.GlobalBatchSampler`. Hence:

* **global-rank sharding, equal steps**: rank ``r`` of ``W`` (the *global* rank: with local ranks, two nodes would read the same shard) reads the
  ``r``-th slice of every global batch; every rank runs ``steps_per_epoch`` steps (the last global batch is padded
  by wrapping around, so at most ``global_batch - 1`` samples per epoch are seen twice; pitfall 2);
* **same samples, same order** in the torch and the DALI path, and for any number of ranks;
* **exact resume**: the position is ``(epoch, step)``; nothing else needs saving;
* **no whole-dataset copies** (pitfall 4): each reader process holds only the batches in flight.

Reads are batch-wise: ``get_batch`` receives a whole rank batch, so a sharded HDF5 reader can sort the indices and
use slice reads (3–8× faster than per-item reads on a 2-core development machine, benchmarks/results/hdf5_read.md).

DALI path (:class:`DaliLoader`): a pipeline with a (parallel, when ``num_workers > 0``) batch-mode
``fn.external_source`` that calls the :class:`BatchSource` in DALI's Python worker processes. With a GPU
(``device_id`` set) the maps are moved to the device right after the source and the symmetry/noise augmentation
runs there; with ``device_id=None`` the same graph runs on the CPU, which is what the tests exercise. The random
choices (which symmetry, the noise fields) are drawn in the source from ``(seed, epoch, step, position)``
(:mod:`hpc.augment`), not by DALI's RNG operators: that keeps the augmentation identical between the two paths and
across resumes.

Torch path (:class:`TorchLoader`): a ``DataLoader`` over the steps of the epoch, each item a whole rank batch read
by the same source, augmented on the CPU by :func:`hpc.augment.apply_numpy`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from hpc.augment import apply_numpy, draw_symmetries, hide_mask, noise_for_sample, target_noise
from hpc.sampler import GlobalBatchSampler

__all__ = ["DaliUnavailableError", "dali_available", "BatchSource", "TorchLoader", "DaliLoader"]

_FLAGS = "_aug_flags"
_NOISE = "_noise_"


class DaliUnavailableError(RuntimeError):
    """NVIDIA DALI is not installed (or not importable) but the DALI loader was requested."""


def dali_available() -> bool:
    """True if ``nvidia.dali`` imports."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def _require_dali() -> None:
    if not dali_available():
        raise DaliUnavailableError(
            "the DALI loader needs NVIDIA DALI, which is not importable here. HINT: `pip install "
            "nvidia-dali-cudaXXX` wheel matching your CUDA major version (e.g. nvidia-dali-cuda120, "
            "nvidia-dali-cuda130; the project extra `pip install -e .[dali]` takes the CUDA 12 one), or use the torch loader "
            "(--train.loader=torch)."
        )


class BatchSource:
    """Picklable reader of this rank's batch ``(epoch, step)``; the DALI ``external_source`` callable.

    Parameters
    ----------
    data : object
        ``len(data)`` samples and ``data.get_batch(indices) -> dict[str, np.ndarray]``.
    keys : sequence of str
        Entries of the batch dict to deliver, in this order.
    global_batch, rank, world_size, seed, shuffle, pad, max_steps, block
        As for :class:`hpc.sampler.GlobalBatchSampler` (``rank`` is the global rank).
    sky_keys : sequence of str
        Entries that are sky maps ``[C, N, N]`` (augmented; the last channel is the mask).
    augment : bool
        Random D4 symmetries of the sky maps (:mod:`hpc.augment`).
    noise : float
        Relative noise amplitude for the sky maps (0: none); only used with ``augment``.
    target_key, target_noise : str or None, float
        Add Gaussian jitter of standard deviation ``target_noise`` to the entry ``target_key`` (e.g. regression
        targets lying on a thin manifold; :func:`hpc.augment.target_noise`); 0: none.
    hide_key, hide_rate : str or None, float
        Replace each element of the entry ``hide_key`` by NaN with probability ``hide_rate``
        (:func:`hpc.augment.hide_mask`): a conditioning input the model must also learn to do without; 0: none.

    Notes
    -----
    :meth:`batch` returns the finished (augmented) batch for the torch path. Called by DALI (:meth:`__call__` with
    a ``BatchInfo``) it returns the raw maps plus the augmentation parameters, and the DALI graph applies them.
    """

    def __init__(self, data: Any, keys: Sequence[str], global_batch: int, rank: int, world_size: int, seed: int,
                 shuffle: bool = True, pad: bool = True, max_steps: int = 0, sky_keys: Sequence[str] = (),
                 augment: bool = False, noise: float = 0.0, block: int = 1, target_key: str | None = None,
                 target_noise: float = 0.0, hide_key: str | None = None, hide_rate: float = 0.0) -> None:
        if not hasattr(data, "get_batch"):
            raise ValueError(f"data ({type(data).__name__}) has no get_batch(indices). HINT: wrap it so that "
                             "get_batch(indices) returns a dict of arrays.")
        missing = [k for k in sky_keys if k not in keys]
        if missing:
            raise ValueError(f"sky_keys {missing} are not among keys {list(keys)}.")
        if noise < 0 or target_noise < 0:
            raise ValueError(f"noise and target_noise must be >= 0, got {noise}, {target_noise}.")
        if target_noise > 0 and target_key not in keys:
            raise ValueError(f"target_key {target_key!r} is not among keys {list(keys)}.")
        if not 0.0 <= hide_rate <= 1.0 or (hide_rate > 0 and hide_key not in keys):
            raise ValueError(f"hide_rate must be in [0, 1] and hide_key among keys {list(keys)}, got {hide_rate}, "
                             f"{hide_key!r}.")
        self.data = data
        self.keys = tuple(keys)
        self.sky_keys = tuple(sky_keys)
        self.augment = bool(augment)
        self.noise = float(noise) if augment else 0.0
        self.target_key, self.target_noise = target_key, float(target_noise)
        self.hide_key, self.hide_rate = hide_key, float(hide_rate)
        self.sampler = GlobalBatchSampler(len(data), global_batch, rank, world_size, seed, shuffle=shuffle,
                                          pad=pad, max_steps=max_steps, block=block)
        # Position at which a DALI pipeline starts (its BatchInfo counts from there); see DaliLoader.
        self.base_epoch = 0
        self.start_step = 0
        self._cache: tuple[int, torch.Tensor] | None = None

    @property
    def steps_per_epoch(self) -> int:
        """Steps per epoch, the same on every rank."""
        return self.sampler.steps_per_epoch

    @property
    def local_batch(self) -> int:
        """Samples per rank and step."""
        return self.sampler.local_batch

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = None  # recomputed per worker; keeps pickles small
        return state

    def indices(self, epoch: int, step: int) -> np.ndarray:
        """Data-set indices of this rank's part of global batch ``step`` of ``epoch`` (int64)."""
        if not 0 <= step < self.steps_per_epoch:
            raise ValueError(f"step must be in [0, {self.steps_per_epoch}), got {step}.")
        if self._cache is None or self._cache[0] != epoch:
            self.sampler.set_epoch(epoch)
            self._cache = (epoch, self.sampler.global_batches())
        lo = self.sampler.rank * self.local_batch
        return self._cache[1][step, lo:lo + self.local_batch].numpy()

    def _aug_params(self, epoch: int, step: int, batch: dict[str, np.ndarray]
                    ) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        lo = self.sampler.rank * self.local_batch
        flags = draw_symmetries(self.sampler.seed, epoch, step, self.sampler.global_batch)[lo:lo + self.local_batch]
        if self.noise <= 0:
            return flags, None
        shapes = [batch[k].shape[1:] for k in self.sky_keys]
        per_sample = [noise_for_sample(self.sampler.seed, epoch, step, lo + i, shapes)
                      for i in range(self.local_batch)]
        noises = {}
        for j, key in enumerate(self.sky_keys):
            field = np.stack([s[j] for s in per_sample])
            field[:, -1] = 0.0  # no noise on the mask channel
            noises[key] = field
        return flags, noises

    def raw(self, epoch: int, step: int) -> dict[str, np.ndarray]:
        """This rank's batch as read (no augmentation), in sampler order.

        One ``get_batch`` call with the whole rank batch: the reader sorts the indices and reads each shard in
        slices (one per contiguous run, or one over a dense span), never with h5py's point/fancy selection, which
        was measured 2–70× slower here (benchmarks/results/hdf5_read.md).
        """
        batch = self.data.get_batch(self.indices(epoch, step))
        out = {k: np.ascontiguousarray(batch[k]) for k in self.keys}
        if self.target_noise > 0:
            y = out[self.target_key]
            lo = self.sampler.rank * self.local_batch
            jitter = target_noise(self.sampler.seed, epoch, step, self.sampler.global_batch, int(np.prod(y.shape[1:])))
            out[self.target_key] = y + self.target_noise * jitter[lo:lo + self.local_batch].reshape(y.shape)
        if self.hide_rate > 0:
            x = out[self.hide_key].astype(np.float32)
            lo = self.sampler.rank * self.local_batch
            hide = hide_mask(self.sampler.seed, epoch, step, self.sampler.global_batch, int(np.prod(x.shape[1:])),
                             self.hide_rate)[lo:lo + self.local_batch].reshape(x.shape)
            out[self.hide_key] = np.where(hide, np.float32(np.nan), x)
        return out

    def batch(self, epoch: int, step: int) -> dict[str, np.ndarray]:
        """This rank's finished batch: read, then augmented on the CPU if requested."""
        batch = self.raw(epoch, step)
        if self.augment and self.sky_keys:
            flags, noises = self._aug_params(epoch, step, batch)
            batch = apply_numpy(batch, self.sky_keys, flags, self.noise, noises)
        return batch

    # -- DALI ----------------------------------------------------------------------------------------------------
    def output_names(self) -> tuple[str, ...]:
        """Outputs of :meth:`__call__`: the keys, then the augmentation flags and noise fields when used."""
        names = self.keys
        if self.augment and self.sky_keys:
            names += (_FLAGS,)
            if self.noise > 0:
                names += tuple(_NOISE + k for k in self.sky_keys)
        return names

    def __call__(self, info: Any) -> tuple[np.ndarray, ...]:
        """DALI batch-mode source: ``info.epoch_idx`` epochs after ``base_epoch``, iteration ``info.iteration``."""
        epoch = self.base_epoch + int(info.epoch_idx)
        step = int(info.iteration) + (self.start_step if info.epoch_idx == 0 else 0)
        if step >= self.steps_per_epoch:
            raise StopIteration
        batch = self.raw(epoch, step)
        out = [batch[k] for k in self.keys]
        if self.augment and self.sky_keys:
            flags, noises = self._aug_params(epoch, step, batch)
            out.append(flags)
            if noises is not None:
                out.extend(noises[k] for k in self.sky_keys)
        return tuple(out)


class _StepDataset(torch.utils.data.Dataset):
    """Map-style view for the torch DataLoader: item ``(epoch, step)`` is a whole rank batch."""

    def __init__(self, source: BatchSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return self.source.steps_per_epoch

    def __getitem__(self, item: tuple[int, int]) -> dict[str, np.ndarray]:
        return self.source.batch(*item)


class TorchLoader:
    """The torch ``DataLoader`` path: ``epoch(e, start_step)`` yields dicts of CPU tensors.

    Parameters
    ----------
    source : BatchSource
    num_workers : int
        DataLoader worker processes (0: read in the training process).
    """

    name = "torch DataLoader"

    def __init__(self, source: BatchSource, num_workers: int = 0) -> None:
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}.")
        self.source = source
        self.num_workers = int(num_workers)

    @property
    def steps_per_epoch(self) -> int:
        return self.source.steps_per_epoch

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of steps ``start_step … steps_per_epoch - 1`` of ``epoch``."""
        if not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(f"start_step must be in [0, {self.steps_per_epoch}], got {start_step}.")
        steps = [(epoch, k) for k in range(start_step, self.steps_per_epoch)]
        loader = torch.utils.data.DataLoader(_StepDataset(self.source), batch_size=None, sampler=steps,
                                             num_workers=self.num_workers)
        for batch in loader:
            yield {k: torch.as_tensor(v) for k, v in batch.items()}


def _dali_augment(x: Any, flags: Any, noise: Any | None, scale: float, on_gpu: bool) -> Any:
    """The DALI graph of :func:`hpc.augment.apply_numpy` for one sky-map output (layout CHW)."""
    from nvidia.dali import fn, types

    t = fn.cast(flags[0], dtype=types.FLOAT)
    if on_gpu:
        t = t.gpu()
    xt = fn.transpose(x, perm=[0, 2, 1], transpose_layout=False)
    # Select by arithmetic (x·t + y·(1−t) with t ∈ {0, 1} is exact): transpose has no per-sample on/off switch.
    y = xt * t + x * (1 - t)
    y = fn.flip(y, horizontal=fn.cast(flags[1], dtype=types.INT32), vertical=fn.cast(flags[2], dtype=types.INT32))
    if noise is not None:
        y = fn.cast(y, dtype=types.FLOAT)
        rms = fn.reductions.rms(y, axes=[1, 2], keep_dims=True)
        y = y + scale * rms * y[-1:] * noise
    return y


def _convert(tl: Any, on_gpu: bool, device: torch.device) -> torch.Tensor:
    """One DALI output batch as a torch tensor (a copy: DALI reuses its buffers at the next run)."""
    if not on_gpu:
        return torch.from_numpy(np.array(tl.as_array()))
    from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

    dense = tl.as_tensor()
    out = torch.empty(dense.shape(), dtype=to_torch_type[dense.dtype], device=device)
    feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(device))
    return out


class DaliLoader:
    """The DALI path: ``epoch(e, start_step)`` yields dicts of torch tensors (on the GPU when ``device_id`` set).

    Parameters
    ----------
    source : BatchSource
        Copied; the pipeline starts at ``(start_epoch, start_step)`` and then runs whole epochs in order.
    start_epoch, start_step : int
        First position the pipeline delivers (a resumed run passes its checkpointed position).
    num_workers : int
        DALI Python worker processes running the source in parallel (0: the source runs in the pipeline's
        thread, no parallel external_source).
    device_id : int or None
        CUDA device of this rank, or None for a CPU-only pipeline.
    prefetch : int
        Batches prepared ahead (DALI ``prefetch_queue_depth``).
    start_method : {"auto", "fork", "spawn"}
        How DALI starts its workers. "auto": "spawn" once CUDA is initialised in this process (forking a CUDA
        process is unsafe), else "fork" (faster start).
    """

    name = "NVIDIA DALI"

    def __init__(self, source: BatchSource, start_epoch: int = 0, start_step: int = 0, num_workers: int = 2,
                 device_id: int | None = None, prefetch: int = 2, start_method: str = "auto",
                 num_threads: int = 1) -> None:
        _require_dali()
        from nvidia.dali import fn
        from nvidia.dali.pipeline import Pipeline

        if not 0 <= start_step <= source.steps_per_epoch:
            raise ValueError(f"start_step must be in [0, {source.steps_per_epoch}], got {start_step}.")
        if start_method not in ("auto", "fork", "spawn"):
            raise ValueError(f"start_method must be 'auto', 'fork' or 'spawn', got {start_method!r}.")
        if start_method == "auto":
            start_method = "spawn" if torch.cuda.is_initialized() else "fork"
        self.source = copy.copy(source)
        self.source.base_epoch, self.source.start_step = int(start_epoch), int(start_step)
        self.on_gpu = device_id is not None
        self.device = torch.device("cuda", device_id) if self.on_gpu else torch.device("cpu")
        self._next = (int(start_epoch), int(start_step))
        names = self.source.output_names()
        layouts = ["CHW" if (k in self.source.sky_keys or k.startswith(_NOISE)) else "" for k in names]
        parallel = num_workers > 0
        kwargs: dict[str, Any] = {"py_num_workers": num_workers, "py_start_method": start_method} if parallel else {}
        self.pipe = Pipeline(batch_size=self.source.local_batch, num_threads=max(1, num_threads),
                             device_id=device_id, prefetch_queue_depth=prefetch, seed=self.source.sampler.seed,
                             **kwargs)
        with self.pipe:
            # The parallel source's own queue defaults to depth 1 (one batch ahead per worker pool): set it to the
            # pipeline's depth so the workers keep `prefetch` batches ready.
            extra = {"prefetch_queue_depth": prefetch} if parallel else {}
            outs = fn.external_source(source=self.source, num_outputs=len(names), batch=True, batch_info=True,
                                      parallel=parallel, layout=layouts, **extra)
            by_name = dict(zip(names, outs))
            results = []
            for key in self.source.keys:
                x = by_name[key]
                if self.on_gpu:
                    x = x.gpu()  # the only GPU-specific step: everything after runs on the device
                if key in self.source.sky_keys and _FLAGS in by_name:
                    noise = by_name.get(_NOISE + key)
                    if noise is not None and self.on_gpu:
                        noise = noise.gpu()
                    x = _dali_augment(x, by_name[_FLAGS], noise, self.source.noise, self.on_gpu)
                results.append(x)
            self.pipe.set_outputs(*results)
        self.pipe.build()

    @property
    def steps_per_epoch(self) -> int:
        return self.source.steps_per_epoch

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of ``epoch`` from ``start_step``; epochs must be requested in order from the start position."""
        if (epoch, start_step) != self._next:
            raise ValueError(
                f"this DALI pipeline is positioned at epoch {self._next[0]} step {self._next[1]}, not epoch {epoch} "
                f"step {start_step}. HINT: build a new DaliLoader with start_epoch/start_step to jump."
            )
        for _ in range(start_step, self.steps_per_epoch):
            outs = self.pipe.run()
            yield {k: _convert(tl, self.on_gpu, self.device) for k, tl in zip(self.source.keys, outs)}
        # The source ends the epoch with StopIteration; DALI then needs a reset before the next epoch.
        try:
            self.pipe.run()
        except StopIteration:
            self.pipe.reset()
        else:
            raise RuntimeError("DALI pipeline delivered more batches than steps_per_epoch (internal error).")
        self._next = (epoch + 1, 0)
