"""The dataset registry and :func:`load_dataset`, the one entry point for loading data.

Split roles: ``"pretrain"`` (images for SSL pretraining: STL-10 unlabeled + train, otherwise the
train split), ``"train"`` and ``"test"`` (labelled, for probes). A dataset's own split names
(``"unlabeled"`` for STL-10, ``"val"`` for folders) are accepted too. The returned dataset's
``split`` is the on-disk split that was read (e.g. ``"train+unlabeled"``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sslbench.data import embedded, folder, formats
from sslbench.data.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetSpec,
    ImageDataset,
    TensorImageDataset,
    Triple,
    resize_images,
)
from sslbench.data.names import DATASET_NAMES
from sslbench.errors import ConfigError

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
# Measured on the default train splits (tests re-measure them).
DIGITS_MEAN, DIGITS_STD = (0.3055, 0.3055, 0.3055), (0.3237, 0.3237, 0.3237)
SHAPES_MEAN, SHAPES_STD = (0.4958, 0.4959, 0.4958), (0.2963, 0.3242, 0.2902)
UNIFORM_MEAN, UNIFORM_STD = (0.5, 0.5, 0.5), (0.2898, 0.2898, 0.2898)  # uniform bytes / 255

# Options each loader accepts (besides split, root, download, image_size).
_OPTIONS = {
    "shapes": {"num_samples", "seed"},
    "synthetic": {"num_samples", "num_classes", "seed"},
    "imagefolder": {"classes", "allow_missing_classes", "in_memory", "num_workers"},
    "imagenet100": {"allow_missing_classes", "in_memory", "num_workers"},
}


# A loader's arguments: spec, on-disk split, root, download, image_size, then its options.
Loader = Callable[..., ImageDataset]


def _cifar(layout: formats.CifarLayout) -> Loader:
    def load(spec: DatasetSpec, split: str, root: str | Path | None, download: bool,
             image_size: int | None, **_: Any) -> ImageDataset:
        return formats.load_cifar(layout, split, root, download, spec.mean, spec.std, spec.name)
    return load


def _stl10(spec: DatasetSpec, split: str, root: str | Path | None, download: bool,
           image_size: int | None, **_: Any) -> ImageDataset:
    return formats.load_stl10(split, root, download, spec.mean, spec.std, spec.name)


def _folder(spec: DatasetSpec, split: str, root: str | Path | None, download: bool,
            image_size: int | None, *,
            classes: str | None = None, allow_missing_classes: bool = False,
            in_memory: bool = False, num_workers: int | None = None) -> ImageDataset:
    if download:
        raise ConfigError(f"{spec.name} cannot be downloaded: point --data-root at an "
                          f"ImageNet-layout folder (train/ and val/ with one folder per class)")
    if spec.name == "imagenet100":
        classes = "imagenet100"
    ds = folder.load_image_folder("test" if split == "val" else split, root, name=spec.name,
                                  mean=spec.mean, std=spec.std, image_size=image_size,
                                  classes=classes, allow_missing_classes=allow_missing_classes)
    if in_memory:
        from sslbench.data.loader import to_memory
        return to_memory(ds, num_workers)
    return ds


def _digits(spec: DatasetSpec, split: str, root: str | Path | None, download: bool,
            image_size: int | None, **_: Any) -> ImageDataset:
    return embedded.load_digits_dataset(split, name=spec.name, mean=spec.mean, std=spec.std,
                                        image_size=image_size)


def _shapes(spec: DatasetSpec, split: str, root: str | Path | None, download: bool,
            image_size: int | None, **options: Any) -> ImageDataset:
    return embedded.load_shapes_dataset(split, name=spec.name, mean=spec.mean, std=spec.std,
                                        **options)


def _synthetic(spec: DatasetSpec, split: str, root: str | Path | None, download: bool,
               image_size: int | None, **options: Any) -> ImageDataset:
    return embedded.load_synthetic_dataset(split, name=spec.name, mean=spec.mean, std=spec.std,
                                           image_size=image_size, **options)


def _spec(name: str, description: str, classes: int | None, size: int | None, mean: Triple,
          std: Triple, loader: Loader, *, pretrain: str = "train", test: str = "test",
          root: bool = True, embedded_: bool = False, recipe: str = "cifar",
          probe: str = "crop-flip", extra: tuple[str, ...] = ()) -> DatasetSpec:
    return DatasetSpec(name=name, description=description, num_classes=classes, image_size=size,
                       mean=mean, std=std, pretrain_split=pretrain, train_split="train",
                       test_split=test, needs_root=root, embedded=embedded_,
                       default_recipe=recipe, loader=loader,
                       splits=("pretrain", "train", "test", *extra), probe_augment=probe)


DATASETS: dict[str, DatasetSpec] = {s.name: s for s in [
    _spec("cifar10", "CIFAR-10, torchvision's python format (cifar-10-batches-py)", 10, 32,
          CIFAR10_MEAN, CIFAR10_STD, _cifar(formats.CIFAR10)),
    _spec("cifar100", "CIFAR-100 fine labels, torchvision's python format (cifar-100-python)",
          100, 32, CIFAR100_MEAN, CIFAR100_STD, _cifar(formats.CIFAR100)),
    _spec("stl10", "STL-10 binary (stl10_binary); pretraining on unlabeled + train", 10, 96,
          IMAGENET_MEAN, IMAGENET_STD, _stl10, pretrain="train+unlabeled", recipe="byol",
          extra=("unlabeled", "train+unlabeled")),
    _spec("imagefolder", "any ImageNet-layout folder (train/<class>/*, val/<class>/*)", None,
          None, IMAGENET_MEAN, IMAGENET_STD, _folder, test="val", recipe="byol", extra=("val",)),
    _spec("imagenet100", "ImageNet-100 (CMC class list) from an ImageNet-layout folder", 100,
          None, IMAGENET_MEAN, IMAGENET_STD, _folder, test="val", recipe="byol", extra=("val",)),
    # The offline probe does not crop the embedded datasets: a digit or a shape fills a fixed
    # part of the image, and a 0.08-1 crop cuts it (77% of such crops keep half of a shape), so
    # the probe would learn from mislabelled fragments; digits are not flipped either.
    _spec("digits", "scikit-learn's handwritten digits, 8x8 upsampled to 32x32 (embedded)", 10,
          32, DIGITS_MEAN, DIGITS_STD, _digits, root=False, embedded_=True, recipe="digits",
          probe="none"),
    _spec("shapes", "generated 32x32 shapes, 10 classes (embedded; the demo's data)", 10, 32,
          SHAPES_MEAN, SHAPES_STD, _shapes, root=False, embedded_=True, recipe="small",
          probe="flip"),
    _spec("synthetic", "random pixels of any size and class count (throughput only)", None, None,
          UNIFORM_MEAN, UNIFORM_STD, _synthetic, root=False, embedded_=True),
]}


if tuple(DATASETS) != DATASET_NAMES:  # the command line lists the names from there
    raise ImportError("sslbench.data.names.DATASET_NAMES is out of step with the dataset "
                      f"registry: {', '.join(DATASETS)}")


def probe_augment_of(dataset: str) -> str:
    """The training-image augmentation of the offline probes on ``dataset`` (the paper's
    crop-flip for a dataset sslbench does not know)."""
    spec = DATASETS.get(dataset)
    return spec.probe_augment if spec else "crop-flip"


def resolve_split(spec: DatasetSpec, split: str) -> str:
    """Map a split role (pretrain/train/test) or a native split name to the on-disk split."""
    roles = {"pretrain": spec.pretrain_split, "train": spec.train_split, "test": spec.test_split}
    if split in roles:
        return roles[split]
    if split in spec.splits:
        return split
    raise ConfigError(f"unknown split {split!r} for {spec.name}: choose one of "
                      f"{', '.join(spec.splits)}")


def load_dataset(name: str, split: str, root: str | Path | None = None, *, download: bool = False,
                 image_size: int | None = None, **options: Any) -> ImageDataset:
    """Load one split of a registered dataset.

    Args:
        name: a key of :data:`DATASETS`.
        split: "pretrain", "train", "test" (or a native split name, see :func:`resolve_split`).
        root: folder holding the files (ignored by embedded datasets).
        download: fetch CIFAR / STL-10 with torchvision's downloader when missing.
        image_size: for in-memory datasets, resize once at load (antialiased bilinear) when it
            differs from the native size; for folders, the decode size (default 224).
        options: per dataset -- shapes: num_samples, seed; synthetic: num_samples, num_classes,
            seed; imagefolder: classes ("imagenet100"), allow_missing_classes, in_memory,
            num_workers; imagenet100: the same without classes.
    Raises:
        ConfigError: unknown name, split or option. DataError: missing or unreadable files.
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}: choose one of {', '.join(sorted(DATASETS))}")
    spec = DATASETS[name]
    disk_split = resolve_split(spec, split)
    unknown = sorted(set(options) - _OPTIONS.get(name, set()))
    if unknown:
        valid = ", ".join(sorted(_OPTIONS.get(name, set()))) or "none"
        raise ConfigError(f"unknown option {unknown[0]!r} for dataset {name}: valid options are "
                          f"{valid}")
    if image_size is not None and (isinstance(image_size, bool) or int(image_size) < 1):
        raise ConfigError(f"image_size={image_size!r} is invalid: expected a positive integer")
    ds = spec.loader(spec, disk_split, root, download, image_size, **options)
    if isinstance(ds, TensorImageDataset) and image_size and ds.images.shape[-1] != image_size:
        ds = TensorImageDataset(ds.name, ds.split, resize_images(ds.images, int(image_size)),
                                ds.labels, ds.class_names, ds.mean, ds.std)
    return ds
