"""A seeded subset of a dataset (``--train-samples``): quick runs on a fraction of the data."""

from __future__ import annotations

import copy

import torch

from sslbench.data.base import FolderImageDataset, ImageDataset, TensorImageDataset


def subset(ds: ImageDataset, n: int, *, seed: int = 0) -> ImageDataset:
    """``n`` samples of ``ds`` chosen by a seeded permutation (all of it when n >= len)."""
    if n >= len(ds):
        return ds
    g = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(ds), generator=g)[:n].sort().values
    out: ImageDataset
    if isinstance(ds, TensorImageDataset):
        in_memory = copy.copy(ds)
        in_memory.images = ds.images[index]
        out = in_memory
    elif isinstance(ds, FolderImageDataset):
        from_files = copy.copy(ds)
        from_files.paths = [ds.paths[i] for i in index.tolist()]
        out = from_files
    else:
        raise TypeError(f"cannot take a subset of {type(ds).__name__}")
    out.labels = ds.labels[index]
    return out
