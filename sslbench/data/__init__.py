"""Datasets and batched augmentations.

Loading: :func:`load_dataset` (registry :data:`DATASETS`, names from :func:`dataset_names`)
returns an :class:`ImageDataset`; :func:`iterate_batches` yields uint8 CPU batches in a seeded,
DDP-shardable order. Augmenting on the training device: :func:`build_augment` (two
:class:`BatchAugment` views of a recipe in :data:`RECIPES`) and :func:`eval_transform`.
"""

from sslbench.data.augment import (
    RECIPES,
    BatchAugment,
    Recipe,
    ViewRecipe,
    build_augment,
    eval_transform,
    recipe_names,
)
from sslbench.data.base import DatasetSpec, FolderImageDataset, ImageDataset, TensorImageDataset
from sslbench.data.loader import epoch_order, iterate_batches, num_batches, rank_batches, to_memory
from sslbench.data.registry import DATASETS, dataset_names, load_dataset, resolve_split

__all__ = [
    "DATASETS", "DatasetSpec", "ImageDataset", "TensorImageDataset", "FolderImageDataset",
    "dataset_names", "load_dataset", "resolve_split", "iterate_batches", "num_batches",
    "epoch_order", "rank_batches", "to_memory",
    "RECIPES", "Recipe", "ViewRecipe", "BatchAugment", "build_augment", "eval_transform",
    "recipe_names",
]
