"""Tests for hpc.sampler: equal steps per rank, rank slices = 1-rank global batch, determinism, padding."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from hpc.sampler import GlobalBatchSampler, split_evenly

GEOMETRIES = [(10, 4, 2), (13, 4, 4), (100, 12, 3), (3, 8, 2), (64, 8, 8), (7, 1, 1)]


def _ranks(n, b, w, seed=0, epoch=0, **kw) -> list[GlobalBatchSampler]:
    samplers = [GlobalBatchSampler(n, b, r, w, seed, **kw) for r in range(w)]
    for s in samplers:
        s.set_epoch(epoch)
    return samplers


@pytest.mark.parametrize("n, b, w", GEOMETRIES)
def test_union_over_ranks_is_dataset_plus_wraparound_padding(n, b, w):
    samplers = _ranks(n, b, w, seed=5, epoch=1)
    steps = math.ceil(n / b)
    counts = Counter(i for s in samplers for batch in s for i in batch)
    assert sum(counts.values()) == steps * b
    assert set(counts) == set(range(n))  # every sample is seen
    perm = samplers[0].permutation().tolist()
    assert sorted(perm) == list(range(n))
    # the padding repeats the start of the epoch's order: k-th element of the sequence is perm[k mod n]
    expected = Counter(perm[k % n] for k in range(steps * b))
    assert counts == expected


@pytest.mark.parametrize("n, b, w", [(10, 4, 2), (100, 12, 3), (64, 8, 8)])
def test_drop_tail_without_padding(n, b, w):
    samplers = _ranks(n, b, w, seed=1, pad=False)
    seen = [i for s in samplers for batch in s for i in batch]
    assert len(seen) == (n // b) * b
    assert len(set(seen)) == len(seen)  # nothing repeated


@pytest.mark.parametrize("pad", [True, False])
@pytest.mark.parametrize("n, b, w", [(10, 4, 2), (101, 12, 4), (64, 8, 8)])
def test_every_rank_takes_the_same_number_of_equal_steps(n, b, w, pad):
    samplers = _ranks(n, b, w, pad=pad)
    lens = {len(s) for s in samplers}
    yielded = {len(list(s)) for s in samplers}
    sizes = {len(batch) for s in samplers for batch in s}
    expected_steps = math.ceil(n / b) if pad else n // b
    assert lens == yielded == {expected_steps}
    assert sizes == {b // w}


@pytest.mark.parametrize("n, b, w", GEOMETRIES)
def test_rank_slices_concatenate_to_the_single_rank_batch(n, b, w):
    single = list(_ranks(n, b, 1, seed=9, epoch=3)[0])
    per_rank = [list(s) for s in _ranks(n, b, w, seed=9, epoch=3)]
    for step, batch in enumerate(single):
        assert sum((per_rank[r][step] for r in range(w)), []) == batch


def test_deterministic_per_seed_and_epoch_and_different_across_epochs():
    a = _ranks(50, 10, 2, seed=7, epoch=4)[1]
    b = _ranks(50, 10, 2, seed=7, epoch=4)[1]
    assert list(a) == list(b)
    b.set_epoch(5)
    assert list(a) != list(b)
    c = _ranks(50, 10, 2, seed=8, epoch=4)[1]
    assert list(a) != list(c)
    # (seed, epoch) pairs that a naive seed + epoch would confuse give different orders
    assert not torch.equal(_ranks(50, 10, 1, seed=1, epoch=0)[0].permutation(),
                           _ranks(50, 10, 1, seed=0, epoch=1)[0].permutation())


def test_no_shuffle_is_identity_order():
    s = _ranks(10, 4, 2, shuffle=False)[0]
    assert list(s) == [[0, 1], [4, 5], [8, 9]]


def test_small_dataset_wraps_several_times():
    (s,) = _ranks(3, 8, 1, seed=2)
    (batch,) = list(s)
    perm = s.permutation().tolist()
    assert batch == (perm * 3)[:8]


def test_max_steps_caps_length():
    s = _ranks(100, 10, 2, max_steps=3)[1]
    assert len(s) == 3 and len(list(s)) == 3
    full = _ranks(100, 10, 2)[1]
    assert list(s) == list(full)[:3]


def test_resume_mid_epoch_reproduces_the_remaining_steps():
    full = _ranks(40, 8, 2, seed=4, epoch=6)[0]
    resumed = GlobalBatchSampler(40, 8, 0, 2, 4)
    resumed.set_epoch(6, start_step=3)
    assert len(resumed) == len(full) - 3
    assert list(resumed) == list(full)[3:]


def test_works_as_dataloader_batch_sampler():
    data = TensorDataset(torch.arange(20) * 10)
    s = _ranks(20, 6, 2, seed=1)[1]
    got = [batch[0].tolist() for batch in DataLoader(data, batch_sampler=s)]
    assert got == [[i * 10 for i in idx] for idx in s]
    assert len(DataLoader(data, batch_sampler=s)) == len(s)


def test_argument_errors():
    with pytest.raises(ValueError, match=r"not divisible by world_size=4.*HINT: use global_batch=8 or 12"):
        GlobalBatchSampler(100, 10, 0, 4, 0)
    with pytest.raises(ValueError, match=r"HINT: use global_batch=4"):
        GlobalBatchSampler(100, 3, 0, 4, 0)
    with pytest.raises(ValueError, match="rank must be in"):
        GlobalBatchSampler(100, 8, 2, 2, 0)
    with pytest.raises(ValueError, match="0 steps per epoch"):
        GlobalBatchSampler(5, 8, 0, 1, 0, pad=False)
    with pytest.raises(ValueError, match="n_samples"):
        GlobalBatchSampler(0, 8, 0, 1, 0)
    s = GlobalBatchSampler(10, 2, 0, 1, 0)
    with pytest.raises(ValueError, match="start_step"):
        s.set_epoch(0, start_step=6)


@pytest.mark.parametrize("n, world", [(10, 3), (3, 5), (0, 2), (12, 4), (1, 1)])
def test_split_evenly(n, world):
    parts = [range(*split_evenly(n, r, world)) for r in range(world)]
    assert [i for p in parts for i in p] == list(range(n))  # contiguous, ordered, complete, no overlap
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_split_evenly_example():
    # worked by hand: 10 items over 3 ranks -> 4, 3, 3
    assert [split_evenly(10, r, 3) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]


def test_split_evenly_errors():
    with pytest.raises(ValueError):
        split_evenly(10, 3, 3)
    with pytest.raises(ValueError):
        split_evenly(-1, 0, 1)
