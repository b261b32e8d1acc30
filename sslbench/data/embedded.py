"""Datasets that need no files: ``digits``, ``shapes`` and ``synthetic``.

- ``digits``: scikit-learn's bundled handwritten digits (1797 real 8x8 grey images, 10 classes),
  upsampled to 32x32 (bilinear) and repeated to 3 channels; a fixed stratified 80/20 split.
- ``shapes``: see :mod:`sslbench.data.shapes` (train 5000, test 1000 by default).
- ``synthetic``: uniform random pixels and labels, any size, for throughput benchmarks only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from sslbench.data import shapes
from sslbench.data.base import TensorImageDataset, Triple
from sslbench.data.shapes import CLASS_NAMES, generate_shapes
from sslbench.errors import ConfigError

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
SHAPES_DEFAULT_SIZES = {"train": 5000, "test": 1000}


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ConfigError(f"dataset option {name}={value!r} is invalid: "
                          f"expected a positive integer")
    return int(value)


def digits_split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Stratified, seeded train/test indices: 20% of each class (rounded) goes to test."""
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(len(idx) * DIGITS_TEST_FRACTION))
        test.append(idx[:k])
        train.append(idx[k:])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}


def load_digits_dataset(split: str, *, name: str, mean: Triple, std: Triple,
                        image_size: int | None = None) -> TensorImageDataset:
    """scikit-learn digits as uint8 (N, 3, S, S), S = image_size or 32."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    labels = np.asarray(bunch.target, dtype=np.int64)
    idx = digits_split_indices(labels)[split]
    grey = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32)[idx] * (255.0 / 16.0))
    size = image_size or 32
    up = torch.nn.functional.interpolate(grey[:, None], size=(size, size), mode="bilinear",
                                         align_corners=False, antialias=True)
    images = up.round_().clamp_(0, 255).to(torch.uint8).expand(-1, 3, -1, -1)
    return TensorImageDataset(name, split, images.contiguous(), torch.from_numpy(labels[idx]),
                              [str(d) for d in range(10)], mean, std)


def load_shapes_dataset(split: str, *, name: str, mean: Triple, std: Triple,
                        num_samples: int | None = None, seed: int = 0) -> TensorImageDataset:
    """The generated shapes split ("train" or "test"), ``num_samples`` images from ``seed``."""
    n = _positive_int("num_samples", num_samples if num_samples is not None
                      else SHAPES_DEFAULT_SIZES[split])
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"dataset option seed={seed!r} is invalid: expected an integer >= 0")
    images, labels = _stored_shapes(n, int(seed), split)
    return TensorImageDataset(name, split, images, labels, CLASS_NAMES, mean, std)


def _stored_shapes(n: int, seed: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`generate_shapes`, kept in the cache (``paths.cache_root()/datasets``) so that each
    process reads the default 6000 images in milliseconds instead of drawing them for a second.

    The file name carries a hash of the generator's source and of the numpy and torch versions,
    so a changed generator never reads an old file. A missing, unreadable or malformed file is
    regenerated; files are written atomically under unique temporary names (concurrent writers
    are harmless), and a cache that cannot be written is skipped.
    """
    path = None
    try:
        path = _shapes_cache_path(n, seed, split)
        blob = torch.load(path, weights_only=True)
        images, labels = blob["images"], blob["labels"]
        if (images.dtype == torch.uint8 and tuple(images.shape) == (n, 3, shapes.SIZE, shapes.SIZE)
                and labels.dtype == torch.int64 and tuple(labels.shape) == (n,)):
            return images, labels
    except Exception:  # noqa: BLE001 -- missing or unreadable: regenerate below
        pass
    images, labels = generate_shapes(n, seed, split)
    if path is not None:
        with contextlib.suppress(Exception):  # a read-only or full disk only costs the speed-up
            _write_atomically({"images": images, "labels": labels}, path)
    return images, labels


def _shapes_cache_path(n: int, seed: int, split: str) -> Path:
    from sslbench import paths

    key = hashlib.sha256(Path(shapes.__file__).read_bytes())
    key.update(f"{np.__version__} {torch.__version__}".encode())
    return paths.cache_root() / "datasets" / f"shapes-{split}-{n}-{seed}-{key.hexdigest()[:12]}.pt"


def _write_atomically(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def load_synthetic_dataset(split: str, *, name: str, mean: Triple, std: Triple,
                           num_samples: int = 1024, num_classes: int = 10,
                           image_size: int | None = None, seed: int = 0) -> TensorImageDataset:
    """Uniform random uint8 images and labels (different streams per split)."""
    n = _positive_int("num_samples", num_samples)
    k = _positive_int("num_classes", num_classes)
    size = _positive_int("image_size", image_size if image_size is not None else 32)
    g = torch.Generator().manual_seed(int(seed) * 2 + (split == "test"))
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, k, (n,), generator=g)
    return TensorImageDataset(name, split, images, labels, [f"class_{i}" for i in range(k)],
                              mean, std)
