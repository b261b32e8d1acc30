"""A seeded subset of a dataset (``--train-samples``): quick runs on a fraction of the data."""

from __future__ import annotations

import copy

import torch

from sslbench.data.base import ImageDataset


def subset(ds: ImageDataset, n: int, *, seed: int = 0) -> ImageDataset:
    """``n`` samples of ``ds`` chosen by a seeded permutation (all of it when n >= len)."""
    if n >= len(ds):
        return ds
    g = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(ds), generator=g)[:n].sort().values
    out = copy.copy(ds)
    out.labels = ds.labels[index]
    if ds.in_memory:
        out.images = ds.images[index]
    else:
        out.paths = [ds.paths[i] for i in index.tolist()]
    return out
