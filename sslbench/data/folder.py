"""ImageNet-layout image folders: ``ROOT/train/<class>/<image>`` and ``ROOT/val/<class>/<image>``.

Classes are the sub-folders of ``ROOT/train`` (sorted), so train and val always share indices;
``classes="imagenet100"`` keeps only the standard ImageNet-100 subset (the CMC list of Tian et al.
2019, shipped as ``imagenet100.txt``), with indices in sorted synset order. The test split reads
``val/`` (or ``test/`` when there is no ``val/``).

A split is checked when it is loaded, before any run is written: every class folder must hold
images (an empty one would silently become a class no sample has), and every image's header must
be readable (a corrupt file would otherwise fail a run midway). Headers only, no pixel is
decoded: about 40 us per file from the page cache (0.4 s for 10,000 small JPEGs), which is why
the scan is not cached.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from sslbench.data.base import IMAGE_SUFFIXES, FolderImageDataset, Triple, check_image_headers
from sslbench.data.formats import require_root
from sslbench.errors import ConfigError, DataError

SPLIT_FOLDERS = {"train": ("train",), "test": ("val", "test")}


def imagenet100_classes() -> list[str]:
    """The 100 ImageNet synsets of the standard ImageNet-100 subset, in the list's order."""
    text = resources.files("sslbench.data").joinpath("imagenet100.txt").read_text()
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def _split_dir(root: Path, split: str) -> Path:
    for name in SPLIT_FOLDERS[split]:
        if (root / name).is_dir():
            return root / name
    wanted = " or ".join(f"{root / n}/<class>/<image>" for n in SPLIT_FOLDERS[split])
    raise DataError(f"no {split} split under {root}: expected {wanted} (ImageNet layout)")


def _class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _select_classes(root: Path, split_dir: Path, classes: str | None,
                    allow_missing: bool) -> list[str]:
    source = root / "train" if (root / "train").is_dir() else split_dir
    present = _class_dirs(source)
    if classes is None:
        if not present:
            raise DataError(f"no class folders in {source}: expected {source}/<class>/<image>")
        return present
    if classes != "imagenet100":
        raise ConfigError(f"unknown class subset {classes!r} for an image folder: use "
                          f"classes=imagenet100 or leave it unset for every class folder")
    wanted = sorted(imagenet100_classes())
    missing = sorted(set(wanted) - set(present))
    if len(missing) == len(wanted) or (missing and not allow_missing):
        raise DataError(f"ImageNet-100 under {source}: {len(missing)} of the 100 synset folders "
                        f"are missing (first: {missing[0]}); expected an ImageNet train folder, "
                        f"or set allow_missing_classes=true")
    return wanted


def _list_images(split_dir: Path, class_names: list[str],
                 subset: bool) -> tuple[list[str], list[int]]:
    """Image paths and labels; class folders outside ``class_names`` are skipped for a subset
    (ImageNet-100) and an error otherwise (a val class the train split does not have)."""
    index = {c: i for i, c in enumerate(class_names)}
    stray = [e.name for e in os.scandir(split_dir)
             if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES)]
    if stray:
        raise DataError(f"images directly in {split_dir} (e.g. {stray[0]}): expected them sorted "
                        f"into class folders, {split_dir}/<class>/<image>")
    paths: list[str] = []
    labels: list[int] = []
    for cls in _class_dirs(split_dir):
        if cls not in index:
            if subset:
                continue
            raise DataError(f"class folder {split_dir / cls} has no counterpart in the train "
                            f"split: expected the same class folders in train/ and "
                            f"{split_dir.name}/")
        files = sorted(e.name for e in os.scandir(split_dir / cls)
                       if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES))
        if not files:
            raise DataError(f"class folder {split_dir / cls} has no images: add its images "
                            f"({', '.join(IMAGE_SUFFIXES)}) or remove the folder")
        paths.extend(str(split_dir / cls / f) for f in files)
        labels.extend([index[cls]] * len(files))
    if not paths:
        raise DataError(f"no images under {split_dir}: expected {split_dir}/<class>/<image> with "
                        f"one of {', '.join(IMAGE_SUFFIXES)}")
    return paths, labels


def load_image_folder(split: str, root: str | Path | None, *, name: str, mean: Triple,
                      std: Triple, image_size: int | None, classes: str | None = None,
                      allow_missing_classes: bool = False) -> FolderImageDataset:
    """Index ``ROOT/<split>/<class>/*`` (split "train" or "test"), decoding later at
    ``image_size`` (default 224). Every class folder must hold images and every image's header
    must be readable (DataError naming the first bad file); pixels are decoded later."""
    base = require_root(root, name, "train/ and val/ class folders (ImageNet layout)")
    split_dir = _split_dir(base, split)
    class_names = _select_classes(base, split_dir, classes, allow_missing_classes)
    paths, labels = _list_images(split_dir, class_names, subset=classes is not None)
    check_image_headers(paths)
    return FolderImageDataset(name, split, paths, labels, class_names, mean, std,
                              image_size or 224)
