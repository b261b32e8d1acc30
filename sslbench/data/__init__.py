"""Datasets and batched augmentations.

Loading: :func:`load_dataset` (registry :data:`DATASETS`, names from :func:`dataset_names`)
returns an :class:`ImageDataset`; :func:`iterate_batches` yields uint8 CPU batches in a seeded,
DDP-shardable order. Augmenting on the training device: :func:`build_augment` (two
:class:`BatchAugment` views of a recipe in :data:`RECIPES`) and :func:`eval_transform`.

Importing the package is cheap: the names (:func:`dataset_names`, :func:`recipe_names`) come
from the torch-free :mod:`sslbench.data.names`; everything else loads torch on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sslbench.data.names import DATASET_NAMES, RECIPE_NAMES

if TYPE_CHECKING:
    from sslbench.data.augment import (
        RECIPES,
        BatchAugment,
        Recipe,
        ViewRecipe,
        build_augment,
        eval_transform,
    )
    from sslbench.data.base import (
        DatasetSpec,
        FolderImageDataset,
        ImageDataset,
        TensorImageDataset,
    )
    from sslbench.data.loader import (
        epoch_order,
        iterate_batches,
        num_batches,
        rank_batches,
        to_memory,
    )
    from sslbench.data.registry import DATASETS, load_dataset, resolve_split

#: What loads torch, and from which module.
_LAZY = {
    **dict.fromkeys(("RECIPES", "BatchAugment", "Recipe", "ViewRecipe", "build_augment",
                     "eval_transform"), "augment"),
    **dict.fromkeys(("DatasetSpec", "FolderImageDataset", "ImageDataset", "TensorImageDataset"),
                    "base"),
    **dict.fromkeys(("epoch_order", "iterate_batches", "num_batches", "rank_batches",
                     "to_memory"), "loader"),
    **dict.fromkeys(("DATASETS", "load_dataset", "resolve_split"), "registry"),
}


def dataset_names() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(DATASET_NAMES)


def recipe_names() -> list[str]:
    """Names accepted by :func:`build_augment`."""
    return sorted(RECIPE_NAMES)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"sslbench.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DATASETS", "DatasetSpec", "ImageDataset", "TensorImageDataset", "FolderImageDataset",
    "dataset_names", "load_dataset", "resolve_split", "iterate_batches", "num_batches",
    "epoch_order", "rank_batches", "to_memory",
    "RECIPES", "Recipe", "ViewRecipe", "BatchAugment", "build_augment", "eval_transform",
    "recipe_names",
]
