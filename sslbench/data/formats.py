"""Readers for torchvision's on-disk formats of CIFAR-10, CIFAR-100 and STL-10.

The files are read directly (no checksum step, so any subset with the right layout loads); the
optional download goes through torchvision's own downloaders.

- CIFAR-10: ``cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta`` (pickled dicts,
  ``data`` uint8 (N, 3072) as R, G, B planes of 32x32, ``labels``; meta ``label_names``).
- CIFAR-100: ``cifar-100-python/train, test, meta`` (``fine_labels``; meta ``fine_label_names``).
- STL-10: ``stl10_binary/{train,test}_X.bin, {train,test}_y.bin, unlabeled_X.bin,
  class_names.txt``; images uint8, 3 x 96 x 96, each channel stored column-major; labels 1..10.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslbench.data.base import TensorImageDataset, Triple
from sslbench.errors import DataError

STL_SIDE = 96
STL_BYTES = 3 * STL_SIDE * STL_SIDE


@dataclass(frozen=True)
class CifarLayout:
    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    torchvision_class: str


CIFAR10 = CifarLayout("CIFAR-10", "cifar-10-batches-py",
                      tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                      "batches.meta", "labels", "label_names", "CIFAR10")
CIFAR100 = CifarLayout("CIFAR-100", "cifar-100-python", ("train",), ("test",), "meta",
                       "fine_labels", "fine_label_names", "CIFAR100")


def require_root(root: str | Path | None, dataset: str, holds: str) -> Path:
    """The root as a Path; DataError when it is not given or does not exist."""
    if root is None:
        raise DataError(f"{dataset} needs a data root: pass --data-root DIR (the folder holding "
                        f"{holds}), or --download to fetch it")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data root {path} does not exist: expected a folder holding {holds}")
    return path


def _download(dataset_cls: str, root: Path, title: str, **kwargs: Any) -> None:
    import torchvision.datasets as tvd

    root.mkdir(parents=True, exist_ok=True)
    try:
        getattr(tvd, dataset_cls)(str(root), download=True, **kwargs)
    except Exception as e:  # network, disk, checksum: all reported as one line
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"could not download {title} to {root} ({reason}); fetch it by hand and "
                        f"point --data-root at its folder") from None


def _unpickle(path: Path, title: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, AttributeError) as e:
        raise DataError(f"corrupt {title} file {path}: expected a pickled python batch "
                        f"({type(e).__name__}); re-download it with --download") from None
    if not isinstance(obj, dict):
        raise DataError(f"corrupt {title} file {path}: expected a pickled dict, got "
                        f"{type(obj).__name__}")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _cifar_folder(root: Path, layout: CifarLayout, download: bool) -> Path:
    folder = root / layout.folder
    if not folder.is_dir() and (root / layout.meta_file).is_file():
        return root  # root points at the batches folder itself
    if not (folder / layout.meta_file).is_file() and download:
        _download(layout.torchvision_class, root, layout.title)
    return folder


def load_cifar(layout: CifarLayout, split: str, root: str | Path | None, download: bool,
               mean: Triple, std: Triple, name: str) -> TensorImageDataset:
    """Load one split ("train" or "test") of CIFAR-10/100 as uint8 (N, 3, 32, 32)."""
    if root is None and download:
        raise DataError(f"{name} --download needs --data-root DIR to download into")
    base = (Path(root).expanduser() if download and root is not None
            else require_root(root, name, layout.folder))
    folder = _cifar_folder(base, layout, download)
    files = layout.train_files if split == "train" else layout.test_files
    paths = [folder / f for f in (*files, layout.meta_file)]
    for p in paths:
        if not p.is_file():
            raise DataError(f"no {layout.title} at {base}: expected {p} (download with --download "
                            f"or point --data-root at the folder holding {layout.folder})")
    images, labels = [], []
    for p in paths[:-1]:
        batch = _unpickle(p, layout.title)
        try:
            data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            lab = np.asarray(batch[layout.label_key], dtype=np.int64)
        except (KeyError, ValueError) as e:
            raise DataError(f"corrupt {layout.title} file {p}: expected 'data' (N x 3072 uint8) "
                            f"and '{layout.label_key}' ({type(e).__name__}: {e})") from None
        if lab.shape != (data.shape[0],):
            raise DataError(f"corrupt {layout.title} file {p}: {data.shape[0]} images but "
                            f"{lab.shape[0]} labels")
        images.append(data)
        labels.append(lab)
    meta = _unpickle(paths[-1], layout.title)
    if layout.names_key not in meta:
        raise DataError(f"corrupt {layout.title} file {paths[-1]}: expected '{layout.names_key}'")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[layout.names_key]]
    label_t = torch.from_numpy(np.concatenate(labels))
    if label_t.numel() and (label_t.min() < 0 or label_t.max() >= len(names)):
        raise DataError(f"corrupt {layout.title} under {folder}: "
                        f"labels outside 0..{len(names) - 1}")
    return TensorImageDataset(name, split, torch.from_numpy(np.concatenate(images)), label_t,
                              names, mean, std)


def _stl_count(path: Path) -> int:
    size = path.stat().st_size
    if size == 0 or size % STL_BYTES:
        raise DataError(f"corrupt STL-10 file {path}: expected a multiple of {STL_BYTES} bytes "
                        f"(96x96x3 images), got {size}")
    return size // STL_BYTES


def _stl_read_into(path: Path, out: torch.Tensor) -> None:
    """Fill uint8 (n, 3, 96, 96) ``out`` from a column-major STL-10 image file, in chunks."""
    raw = np.memmap(path, dtype=np.uint8, mode="r").reshape(-1, 3, STL_SIDE, STL_SIDE)
    for i in range(0, raw.shape[0], 4096):
        chunk = np.ascontiguousarray(raw[i:i + 4096].transpose(0, 1, 3, 2))
        out[i:i + chunk.shape[0]] = torch.from_numpy(chunk)


def _stl_labels(path: Path, count: int) -> np.ndarray:
    lab = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1
    if lab.shape != (count,) or (lab.size and (lab.min() < 0 or lab.max() > 9)):
        raise DataError(f"corrupt STL-10 file {path}: expected {count} labels in 1..10, got "
                        f"{lab.size} values")
    return lab


def load_stl10(split: str, root: str | Path | None, download: bool, mean: Triple, std: Triple,
               name: str) -> TensorImageDataset:
    """Load STL-10 as uint8 (N, 3, 96, 96).

    split: "train", "test", "unlabeled" (labels -1) or "train+unlabeled" (pretraining: the
    unlabeled images first, then train with its labels).
    """
    if root is None and download:
        raise DataError(f"{name} --download needs --data-root DIR to download into")
    base = (Path(root).expanduser() if download and root is not None
            else require_root(root, name, "stl10_binary"))
    folder = base / "stl10_binary"
    if not folder.is_dir() and (base / "class_names.txt").is_file():
        folder = base
    parts = split.split("+")
    needed = []
    for part in parts:
        needed.append(folder / f"{part}_X.bin")
        if part != "unlabeled":
            needed.append(folder / f"{part}_y.bin")
    needed.append(folder / "class_names.txt")
    if download and not all(p.is_file() for p in needed):
        _download("STL10", base, "STL-10", split="train")  # one archive holds every split
    for p in needed:
        if not p.is_file():
            raise DataError(f"no STL-10 at {base}: expected {p} (download with --download or point "
                            f"--data-root at the folder holding stl10_binary)")
    names_file = needed[-1]
    names = [ln.strip() for ln in names_file.read_text(errors="replace").splitlines() if ln.strip()]
    if len(names) != 10:
        raise DataError(f"corrupt STL-10 file {names_file}: expected 10 class names, "
                        f"got {len(names)}")
    parts = sorted(parts, key=lambda p: p != "unlabeled")
    counts = [_stl_count(folder / f"{part}_X.bin") for part in parts]
    images = torch.empty((sum(counts), 3, STL_SIDE, STL_SIDE), dtype=torch.uint8)
    labels, start = [], 0
    for part, n in zip(parts, counts):
        _stl_read_into(folder / f"{part}_X.bin", images[start:start + n])
        start += n
        if part == "unlabeled":
            labels.append(np.full(n, -1, dtype=np.int64))
        else:
            labels.append(_stl_labels(folder / f"{part}_y.bin", n))
    return TensorImageDataset(name, split, images, torch.from_numpy(np.concatenate(labels)),
                              names, mean, std)
