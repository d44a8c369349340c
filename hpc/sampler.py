"""Deterministic global-batch sharding: every rank gets an equal, contiguous slice of the same global batch.

Why not ``torch.utils.data.DistributedSampler``? It shards *samples* (rank r takes every W-th index), so the
global batch of a 2-rank run differs from that of a 1-rank run, and its per-rank step count differs between
``drop_last`` settings. Here the unit is the *global batch*: the sample order of an epoch depends only on
``(seed, epoch, n_samples, global_batch)``, global batch ``j`` is the same set of indices whatever the number of
ranks, and rank ``r`` of ``W`` takes the ``r``-th contiguous slice of it. Consequences:

* **Resume**: after a requeue, ``set_epoch(e, start_step=k)`` reproduces exactly the batches the lost job would
  have seen (no sampler state needs saving beyond epoch and step).
* **1 rank vs W ranks**: concatenating the rank slices of step ``j`` gives the 1-rank batch ``j``, so a DDP run
  averages gradients over the same samples as a single-GPU run with the same global batch.
* **No collective hangs**: every rank yields the same number of batches (pad or drop, never a ragged tail).
* **No memory duplication**: only indices are sharded; the dataset is read lazily by index on each rank.

Example
-------
>>> s = GlobalBatchSampler(n_samples=10, global_batch=4, rank=1, world_size=2, seed=0, shuffle=False)
>>> list(s)   # global batches [0..3], [4..7], [8, 9, 0, 1] (padded by wrapping around); rank 1 takes 2 of 4
[[2, 3], [6, 7], [0, 1]]
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["GlobalBatchSampler", "split_evenly", "epoch_seed"]


def epoch_seed(seed: int, epoch: int) -> int:
    """Mix ``(seed, epoch)`` into one 64-bit generator seed.

    ``numpy.random.SeedSequence`` hashes the pair, so nearby pairs give unrelated streams and there are no
    trivial collisions such as ``seed + epoch`` would have ((1, 0) vs (0, 1)).
    """
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got seed={seed}, epoch={epoch}.")
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0])


class GlobalBatchSampler:
    """Per-rank index lists cut from a shared, deterministic sequence of global batches.

    Parameters
    ----------
    n_samples : int
        Dataset size ``n`` (>= 1).
    global_batch : int
        Samples per optimizer step over all ranks, ``B``; must be divisible by ``world_size``.
    rank, world_size : int
        This process's rank ``r`` and the number of ranks ``W``.
    seed : int
        Base seed (>= 0); with the epoch it fixes the permutation.
    shuffle : bool
        Permute the indices each epoch (``torch.randperm`` with a generator seeded from ``(seed, epoch)``);
        otherwise use ``0..n-1`` in order.
    pad : bool
        True: complete the last global batch by wrapping around to the start of the epoch's permutation (a few
        samples are seen twice per epoch). False: drop the incomplete tail (a few samples are skipped per epoch).
    max_steps : int
        If > 0, cap the steps per epoch (smoke tests, benchmarks).
    block : int
        Chunk-level shuffle: permute blocks of ``block`` consecutive indices instead of single indices (1: full
        shuffle, the default). A global batch then holds ``B / block`` contiguous runs, which a sharded reader
        serves with a few slice reads instead of ``B`` scattered ones (3–20× cheaper on HDF5; see
        benchmarks/results/hdf5_read.md). The price: samples of one run stay together in a batch (in galmass,
        neighbouring indices are projections of the same galaxy), so keep ``block`` well below ``B``.

    Notes
    -----
    The yielded indices depend only on ``(seed, epoch, n, B, W, r)``; the global batches only on
    ``(seed, epoch, n, B)``. This is what makes a resumed run and a 1-rank vs 2-rank run identical. The
    permutation comes from ``torch.randperm`` on a CPU generator, so a different torch version may permute
    differently; resume with the same environment.

    Use as ``DataLoader(dataset, batch_sampler=sampler)`` and call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, n_samples: int, global_batch: int, rank: int, world_size: int, seed: int,
                 shuffle: bool = True, pad: bool = True, max_steps: int = 0, block: int = 1) -> None:
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}. HINT: is the dataset/split empty?")
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}.")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}.")
        if global_batch < 1:
            raise ValueError(f"global_batch must be >= 1, got {global_batch}.")
        if global_batch % world_size != 0:
            lo = global_batch // world_size * world_size
            options = " or ".join(str(v) for v in (lo, lo + world_size) if v > 0)
            raise ValueError(
                f"global_batch={global_batch} is not divisible by world_size={world_size}, so ranks would get "
                f"unequal batches. HINT: use global_batch={options}."
            )
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}.")
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}. HINT: 1 shuffles single samples.")
        if max_steps < 0:
            raise ValueError(f"max_steps must be >= 0 (0 = no cap), got {max_steps}.")
        if not pad and n_samples < global_batch:
            raise ValueError(
                f"n_samples={n_samples} < global_batch={global_batch} with pad=False gives 0 steps per epoch. "
                f"HINT: use pad=True or global_batch <= {n_samples}."
            )
        self.n_samples = int(n_samples)
        self.global_batch = int(global_batch)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.pad = bool(pad)
        self.max_steps = int(max_steps)
        self.block = int(block)
        self.local_batch = self.global_batch // self.world_size
        self.epoch = 0
        self.start_step = 0

    @property
    def steps_per_epoch(self) -> int:
        """Steps in a full epoch (after the ``max_steps`` cap); the same on every rank."""
        full = -(-self.n_samples // self.global_batch) if self.pad else self.n_samples // self.global_batch
        return min(full, self.max_steps) if self.max_steps > 0 else full

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch (changes the permutation) and optionally skip its first ``start_step`` steps (resume).

        Parameters
        ----------
        epoch : int
            Epoch number (>= 0).
        start_step : int
            Steps of this epoch already done, ``0 <= start_step <= steps_per_epoch``.
        """
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}.")
        if not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(f"start_step must be in [0, {self.steps_per_epoch}], got {start_step}.")
        self.epoch = int(epoch)
        self.start_step = int(start_step)

    def permutation(self) -> torch.Tensor:
        """The epoch's order of ``0..n-1`` (int64, length ``n``), identical on every rank."""
        if not self.shuffle:
            return torch.arange(self.n_samples, dtype=torch.int64)
        g = torch.Generator(device="cpu")
        g.manual_seed(epoch_seed(self.seed, self.epoch))
        if self.block == 1:
            return torch.randperm(self.n_samples, generator=g, dtype=torch.int64)
        n_blocks = -(-self.n_samples // self.block)
        starts = torch.randperm(n_blocks, generator=g, dtype=torch.int64) * self.block
        order = (starts[:, None] + torch.arange(self.block, dtype=torch.int64)[None, :]).reshape(-1)
        return order[order < self.n_samples]  # the last block may be short

    def global_batches(self) -> torch.Tensor:
        """All global batches of the epoch, ``[steps_per_epoch, global_batch]`` (int64), before ``start_step``."""
        perm = self.permutation()
        steps = self.steps_per_epoch
        needed = steps * self.global_batch
        if needed > self.n_samples:
            # Wrap around (possibly several times when n < B) so the tail batch is full.
            perm = perm.repeat(-(-needed // self.n_samples))
        return perm[:needed].view(steps, self.global_batch)

    def rank_batches(self) -> torch.Tensor:
        """This rank's slices, ``[steps_per_epoch - start_step, global_batch // world_size]`` (int64)."""
        lo = self.rank * self.local_batch
        return self.global_batches()[self.start_step:, lo:lo + self.local_batch]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.rank_batches().tolist()

    def __len__(self) -> int:
        """Batches this iterator yields: ``steps_per_epoch - start_step`` (``steps_per_epoch`` on a fresh epoch)."""
        return self.steps_per_epoch - self.start_step

    def __repr__(self) -> str:
        return (
            f"GlobalBatchSampler(n_samples={self.n_samples}, global_batch={self.global_batch}, rank={self.rank}, "
            f"world_size={self.world_size}, seed={self.seed}, shuffle={self.shuffle}, pad={self.pad}, "
            f"max_steps={self.max_steps}, block={self.block}, epoch={self.epoch}, start_step={self.start_step})"
        )


def split_evenly(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous share ``[start, stop)`` of ``range(n)`` for ``rank`` of ``world`` (evaluation).

    Shares differ in size by at most one: the first ``n % world`` ranks get one extra item, e.g. ``n=10, world=3``
    -> ``(0, 4)``, ``(4, 7)``, ``(7, 10)``; a rank may get an empty share ``(k, k)`` when ``n < world``. Unlike
    training, evaluation must see every item exactly once, so nothing is padded: reduce sums and counts (as
    :func:`hpc.dist.all_reduce_sum` does) rather than using fixed-size collectives.

    Returns
    -------
    (start, stop) : tuple[int, int]
        Use as ``range(start, stop)`` or a slice; a tuple so callers can write ``lo, hi = split_evenly(...)``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}.")
    if world < 1:
        raise ValueError(f"world must be >= 1, got {world}.")
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, {world}), got {rank}.")
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)
