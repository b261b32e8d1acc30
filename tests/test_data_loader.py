"""iterate_batches / num_batches: seeded order, drop_last, DDP sharding, contents."""

from __future__ import annotations

import itertools

import pytest
import torch

from sslbench.data import TensorImageDataset, epoch_order, iterate_batches, num_batches
from sslbench.errors import ConfigError


def _indexed(n: int) -> TensorImageDataset:
    """Image i is filled with the value i and labelled i: a batch shows which samples it holds."""
    images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 3, 4, 4).clone()
    return TensorImageDataset("indexed", "train", images, torch.arange(n),
                              [str(i) for i in range(n)],
                              (0.5,) * 3, (0.25,) * 3)


def _epoch(ds, batch, **kw) -> list[list[int]]:
    out = []
    for images, labels in iterate_batches(ds, batch, **kw):
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        assert images.device.type == "cpu" and images.shape == (len(labels), 3, 4, 4)
        assert len(labels) > 0
        assert torch.equal(images[:, 0, 0, 0].long(), labels)  # images travel with their labels
        out.append(labels.tolist())
    return out


def test_order_is_a_pure_function_of_seed_and_epoch():
    ds = _indexed(50)
    a = _epoch(ds, 8, shuffle=True, drop_last=False, seed=1, epoch=3)
    assert a == _epoch(ds, 8, shuffle=True, drop_last=False, seed=1, epoch=3)
    assert a != _epoch(ds, 8, shuffle=True, drop_last=False, seed=1, epoch=4)
    assert a != _epoch(ds, 8, shuffle=True, drop_last=False, seed=2, epoch=3)
    assert sorted(itertools.chain(*a)) == list(range(50))  # a permutation
    assert list(itertools.chain(*_epoch(ds, 8, shuffle=False, drop_last=False))) == list(range(50))
    order = epoch_order(50, shuffle=True, seed=1, epoch=3)
    assert torch.equal(order, torch.tensor(list(itertools.chain(*a))))


def test_drop_last_and_batch_sizes():
    ds = _indexed(50)
    kept = _epoch(ds, 8, shuffle=True, drop_last=True, seed=0)
    assert [len(b) for b in kept] == [8] * 6 and num_batches(ds, 8, drop_last=True) == 6
    full = _epoch(ds, 8, shuffle=True, drop_last=False, seed=0)
    assert [len(b) for b in full] == [8] * 6 + [2] and num_batches(ds, 8, drop_last=False) == 7
    assert full[:6] == kept  # dropping the tail does not change the order


def test_sharding_gives_disjoint_blocks_matching_one_big_batch():
    ds = _indexed(50)
    ranks = [_epoch(ds, 4, shuffle=True, drop_last=True, seed=5, epoch=1, rank=r, world_size=2)
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == num_batches(ds, 4, drop_last=True, world_size=2) == 6
    seen = [set(itertools.chain(*r)) for r in ranks]
    assert not seen[0] & seen[1] and len(seen[0]) == len(seen[1]) == 24
    single = _epoch(ds, 8, shuffle=True, drop_last=True, seed=5, epoch=1)
    assert [a + b for a, b in zip(*ranks)] == single  # step t of both ranks = step t of batch 8


@pytest.mark.parametrize("n,batch,world", [(10, 2, 3), (7, 4, 2), (1, 3, 2), (2, 1, 5), (64, 8, 4)])
def test_sharding_without_drop_last_covers_everything_in_equal_steps(n, batch, world):
    ds = _indexed(n)
    ranks = [_epoch(ds, batch, shuffle=True, drop_last=False, seed=0, rank=r, world_size=world)
             for r in range(world)]
    steps = num_batches(ds, batch, drop_last=False, world_size=world)
    assert all(len(r) == steps for r in ranks)  # no rank waits for another at a collective
    for t in range(steps):
        assert len({len(r[t]) for r in ranks}) == 1 and len(ranks[0][t]) > 0  # same, non-empty
    flat = list(itertools.chain(*itertools.chain(*ranks)))
    assert set(flat) == set(range(n)) and len(flat) == -(-n // world) * world  # minimal padding


def test_num_batches_matches_iteration_on_a_grid():
    grid = itertools.product([1, 5, 16, 33], [1, 4, 7], [1, 2, 3], [False, True])
    for n, batch, world, drop in grid:
        if drop and n < batch * world:
            continue
        ds = _indexed(n)
        count = len(_epoch(ds, batch, shuffle=True, drop_last=drop, rank=world - 1,
                           world_size=world))
        expected = num_batches(n, batch, drop_last=drop, world_size=world)
        assert count == expected, (n, batch, world, drop)


def test_errors_and_pinning():
    ds = _indexed(10)
    with pytest.raises(ConfigError, match="larger than"):
        next(iterate_batches(ds, 8, shuffle=False, drop_last=True, world_size=2))
    with pytest.raises(ConfigError):
        next(iterate_batches(ds, 2, shuffle=False, drop_last=False, rank=2, world_size=2))
    with pytest.raises(ConfigError):
        num_batches(ds, 0, drop_last=False)
    # pin_memory is a no-op without CUDA and pins with it; the batches are the same either way.
    pinned = list(iterate_batches(ds, 4, shuffle=False, drop_last=False, pin_memory=True))
    assert torch.equal(torch.cat([b[1] for b in pinned]), torch.arange(10))
    assert all(b[0].is_pinned() == torch.cuda.is_available() for b in pinned)
