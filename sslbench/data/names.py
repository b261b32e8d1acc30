"""Dataset and augmentation-recipe names, without importing torch (the command line lists and
checks them); :mod:`sslbench.data.registry` and :mod:`sslbench.data.augment` refuse to load when
their registries disagree."""

from __future__ import annotations

DATASET_NAMES: tuple[str, ...] = ("cifar10", "cifar100", "stl10", "imagefolder", "imagenet100",
                                  "digits", "shapes", "synthetic")
RECIPE_NAMES: tuple[str, ...] = ("byol", "cifar", "small", "digits", "shapes", "eval")
