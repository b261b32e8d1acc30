"""Dataset descriptions and the two concrete kinds of :class:`ImageDataset`.

- :class:`TensorImageDataset` keeps every image in memory as one uint8 tensor (N, 3, H, W); batches
  are plain index lookups (CIFAR, STL-10, digits, shapes, synthetic).
- :class:`FolderImageDataset` keeps file paths and decodes on demand, in DataLoader workers, to a
  fixed square size (ImageNet-style folders).

Both expose ``name, split, num_classes, class_names, mean, std, labels, in_memory, image_size``,
``len()`` and ``ds[i] -> (uint8 (3, H, W), int label)``. Labels are int64, -1 for unlabeled
samples (STL-10's unlabeled split).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sslbench.errors import DataError

Triple = tuple[float, float, float]

IMAGENET_MEAN: Triple = (0.485, 0.456, 0.406)
IMAGENET_STD: Triple = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


@dataclass(frozen=True)
class DatasetSpec:
    """What the registry knows about a dataset before loading it.

    ``num_classes`` / ``image_size`` are None when they depend on the root (image folders).
    Split fields name what each role reads: ``pretrain_split`` the images for SSL pretraining,
    ``train_split`` / ``test_split`` the labelled images for probes. ``default_recipe`` is the
    augmentation recipe (:data:`sslbench.data.augment.RECIPES`) suggested for this dataset.
    ``probe_augment`` is the training-image augmentation of the offline linear probe
    (:data:`sslbench.config.PROBE_AUGMENTS`): the paper's crop + flip unless that destroys the
    label, as it does for the embedded 32x32 datasets.
    """

    name: str
    description: str
    num_classes: int | None
    image_size: int | None
    mean: Triple
    std: Triple
    pretrain_split: str
    train_split: str
    test_split: str
    needs_root: bool
    embedded: bool
    default_recipe: str
    loader: Callable[..., ImageDataset] = field(repr=False, compare=False)
    splits: tuple[str, ...] = ("pretrain", "train", "test")
    probe_augment: str = "crop-flip"


class ImageDataset:
    """Common interface; use :class:`TensorImageDataset` or :class:`FolderImageDataset`."""

    name: str
    split: str
    num_classes: int
    class_names: list[str]
    mean: Triple
    std: Triple
    labels: Tensor
    in_memory: bool
    image_size: int | None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        raise NotImplementedError

    def __repr__(self) -> str:
        kind = "in memory" if self.in_memory else "from files"
        return (f"{type(self).__name__}({self.name}/{self.split}: {len(self)} images, "
                f"{self.num_classes} classes, {kind})")


class TensorImageDataset(ImageDataset):
    """Images held as one uint8 tensor (N, 3, H, W) (grayscale sources repeated to 3 channels)."""

    in_memory = True

    def __init__(self, name: str, split: str, images: Tensor, labels: Tensor,
                 class_names: Sequence[str], mean: Triple, std: Triple) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels {tuple(labels.shape)} do not match images "
                             f"{tuple(images.shape)}")
        self.name, self.split = name, split
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64)
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.mean, self.std = mean, std
        self.image_size = int(images.shape[-1]) if images.shape[-1] == images.shape[-2] else None

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], int(self.labels[index])


class FolderImageDataset(ImageDataset):
    """Image files decoded on demand to uint8 (3, S, S): shorter side resized to S (bilinear,
    antialiased), centre square kept. Augmentations then crop inside that square."""

    in_memory = False
    image_size: int  # always known: the decode size

    def __init__(self, name: str, split: str, paths: Sequence[str], labels: Sequence[int],
                 class_names: Sequence[str], mean: Triple, std: Triple, image_size: int) -> None:
        self.name, self.split = name, split
        self.paths = list(paths)
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.mean, self.std = mean, std
        self.image_size = int(image_size)

    def decode(self, index: int) -> Tensor:
        """uint8 (3, S, S) of file ``index``; :class:`DataError` naming the file if unreadable."""
        return decode_image(self.paths[index], self.image_size)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.decode(index), int(self.labels[index])


def decode_image(path: str | Path, size: int) -> Tensor:
    """Read an image file as uint8 (3, size, size): RGB, shorter side -> size, centre square.

    JPEGs are decoded at a reduced scale first when much larger than needed (PIL ``draft``).
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            if (nw, nh) != (w, h):
                im = im.resize((nw, nh), Image.Resampling.BILINEAR)
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.crop((left, top, left + size, top + size))
            arr = np.asarray(im, dtype=np.uint8)
    except _pil_errors() as e:
        raise unreadable_image(path, e) from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _pil_errors() -> tuple[type[BaseException], ...]:
    """What PIL raises for a file that is not an image it can read (imported late: PIL is
    needed only by image folders)."""
    from PIL import Image, UnidentifiedImageError

    return (OSError, SyntaxError, ValueError, UnidentifiedImageError,
            Image.DecompressionBombError)


def unreadable_image(path: str | Path, err: BaseException) -> DataError:
    """The one-line error for an image file PIL cannot read."""
    from PIL import UnidentifiedImageError

    if isinstance(err, UnidentifiedImageError):  # its own text only repeats the path
        reason = "no known image format: not an image, or its header is cut short"
    else:
        reason = " ".join(str(err).split()) or type(err).__name__
    return DataError(f"unreadable image {path}: expected a JPEG/PNG image PIL can decode "
                     f"({reason}); remove or replace the file")


def check_image_headers(paths: Sequence[str]) -> None:
    """Open every file's header (format, size; no pixels are decoded) and raise DataError for
    the first that is not a readable image, so a bad file fails the command up front rather
    than a run midway. About 40 us per file on a local disk (see the folder loader)."""
    from PIL import Image

    errors = _pil_errors()
    for path in paths:
        try:
            with Image.open(path) as im:
                width, height = im.size
        except errors as e:
            raise unreadable_image(path, e) from None
        if width < 1 or height < 1:
            raise DataError(f"unreadable image {path}: its header says {width}x{height} "
                            "pixels; remove or replace the file")


def resize_images(images: Tensor, size: int) -> Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, size, size), antialiased bilinear, in chunks."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((images.shape[0], 3, size, size), dtype=torch.uint8)
    for i in range(0, images.shape[0], 1024):
        x = images[i:i + 1024].float()
        y = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                            align_corners=False, antialias=True)
        out[i:i + 1024] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out
