"""Batch iteration: a seeded order per epoch, DDP sharding, and file decoding in workers.

The order of an epoch is a pure function of (seed, epoch), so a run resumed at an epoch boundary
sees the same batches. With ``world_size`` W and ``batch_size`` B, global step t covers the W*B
consecutive entries ``order[t*W*B:(t+1)*W*B]`` and rank r takes the r-th block of B, so the union
over ranks is exactly what one process with batch W*B would see. Without ``drop_last`` the order
is padded (wrapping around) to a multiple of W, so every rank runs the same number of steps; the
last step is shorter. In-memory datasets are indexed directly (no DataLoader, no workers); image
folders go through a ``torch.utils.data.DataLoader`` whose workers decode the files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from sslbench.data.base import FolderImageDataset, ImageDataset, TensorImageDataset
from sslbench.errors import ConfigError, DataError


def _check_args(batch_size: int, rank: int, world_size: int) -> None:
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"invalid batching: batch_size={batch_size}, rank={rank}, "
                          f"world_size={world_size} (need batch_size >= 1, 0 <= rank < world_size)")


def epoch_order(n: int, *, shuffle: bool, seed: int, epoch: int) -> Tensor:
    """int64 (n,) order of one epoch: a permutation seeded by (seed, epoch), or 0..n-1."""
    if not shuffle:
        return torch.arange(n)
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2)
    g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return torch.randperm(n, generator=g)


def num_batches(ds: ImageDataset | int, batch_size: int, *, drop_last: bool,
                world_size: int = 1) -> int:
    """Steps per epoch for each rank (``ds`` may also be a sample count)."""
    _check_args(batch_size, 0, world_size)
    n = ds if isinstance(ds, int) else len(ds)
    if drop_last:
        return n // (batch_size * world_size)
    return math.ceil(math.ceil(n / world_size) / batch_size)


def rank_batches(order: Tensor, batch_size: int, *, drop_last: bool, rank: int = 0,
                 world_size: int = 1) -> list[Tensor]:
    """This rank's index batches for an epoch order (see the module docstring)."""
    _check_args(batch_size, rank, world_size)
    n, bw = order.numel(), batch_size * world_size
    if not drop_last and n % world_size:
        n = math.ceil(n / world_size) * world_size
        order = order[torch.arange(n) % order.numel()]  # wrap around, even past the start
    full = n // bw
    batches = [order[t * bw + rank * batch_size: t * bw + (rank + 1) * batch_size]
               for t in range(full)]
    rest = n - full * bw
    if rest and not drop_last:
        share = rest // world_size
        start = full * bw + rank * share
        batches.append(order[start:start + share])
    return batches


class _Decoding(torch.utils.data.Dataset[tuple[Tensor | None, int, str | None]]):
    """Folder dataset view for DataLoader workers: errors travel back as data, so the main
    process can raise one clean DataError instead of a wrapped worker traceback."""

    def __init__(self, ds: FolderImageDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[Tensor | None, int, str | None]:
        try:
            return self.ds.decode(i), int(self.ds.labels[i]), None
        except DataError as e:
            return None, int(self.ds.labels[i]), str(e)


def _collate(items: list[tuple[Tensor | None, int, str | None]]
             ) -> tuple[Tensor | None, Tensor | None, str | None]:
    errors = [e for _, _, e in items if e is not None]
    if errors:
        return None, None, errors[0]
    return (torch.stack([im for im, _, _ in items if im is not None]),
            torch.tensor([lab for _, lab, _ in items], dtype=torch.int64), None)


def _pin(x: Tensor, pin_memory: bool) -> Tensor:
    return x.pin_memory() if pin_memory and torch.cuda.is_available() else x


def iterate_batches(ds: ImageDataset, batch_size: int, *, shuffle: bool, drop_last: bool,
                    seed: int = 0, epoch: int = 0, num_workers: int = 0,
                    pin_memory: bool = False, rank: int = 0,
                    world_size: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (uint8 images (B, 3, H, W), int64 labels (B,)) on CPU for one epoch of this rank.

    ``num_workers`` only applies to image folders (decoding); ``pin_memory`` pins the batches
    when CUDA is available so that ``.to(device, non_blocking=True)`` overlaps the copy.
    Raises ConfigError when ``drop_last`` leaves no batch at all, DataError on an unreadable file.
    """
    _check_args(batch_size, rank, world_size)
    if drop_last and num_batches(ds, batch_size, drop_last=True, world_size=world_size) == 0:
        raise ConfigError(f"batch size {batch_size} x {world_size} process(es) is larger than "
                          f"{ds.name}/{ds.split} ({len(ds)} images): lower the batch size")
    order = epoch_order(len(ds), shuffle=shuffle, seed=seed, epoch=epoch)
    batches = rank_batches(order, batch_size, drop_last=drop_last, rank=rank,
                           world_size=world_size)
    if isinstance(ds, TensorImageDataset):
        for idx in batches:
            yield (_pin(ds.images.index_select(0, idx), pin_memory),
                   _pin(ds.labels.index_select(0, idx), pin_memory))
        return
    if not isinstance(ds, FolderImageDataset):
        raise TypeError(f"cannot iterate over {type(ds).__name__}")
    loader = torch.utils.data.DataLoader(
        _Decoding(ds), batch_sampler=[b.tolist() for b in batches], num_workers=num_workers,
        collate_fn=_collate, pin_memory=pin_memory and torch.cuda.is_available())
    for images, labels, error in loader:
        if error is not None:
            raise DataError(error)
        yield images, labels


def to_memory(ds: ImageDataset, num_workers: int | None = None) -> TensorImageDataset:
    """Decode a folder dataset once into a :class:`TensorImageDataset` (uint8 in memory)."""
    if isinstance(ds, TensorImageDataset):
        return ds
    workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
    parts = list(iterate_batches(ds, 256, shuffle=False, drop_last=False, num_workers=workers))
    images = torch.cat([p[0] for p in parts])
    return TensorImageDataset(ds.name, ds.split, images, ds.labels.clone(), ds.class_names,
                              ds.mean, ds.std)
