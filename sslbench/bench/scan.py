"""How long the up-front image-folder check costs: ``sslbench bench scan``.

Training and evaluation scan an image folder before anything is written (every class folder
non-empty, every file's header readable: :func:`sslbench.data.base.check_image_headers`), so that
a corrupt JPEG fails the command in one line instead of failing a run mid-epoch. The scan reads
headers only. ``run()`` writes ``images`` small JPEGs in an ImageNet-layout folder (10 classes,
in a temporary folder it removes afterwards) and times, side by side in one process:

* ``list_s``: listing the folder (what loading cost before the check existed);
* ``load_s``: loading the split as ``sslbench train`` does, listing and header scan;
* ``decode_s``: fully decoding every image, which a scan must stay far below.

Each phase keeps its fastest of ``repeats`` (background load only ever adds time). It returns::

    {"images": 10000, "list_s": ..., "load_s": ..., "scan_s": ..., "decode_s": ...,
     "scan_us_per_image": ..., "repeats": 3}
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _write_folder(root: Path, images: int, classes: int = 10) -> list[Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(images):
        folder = root / "train" / f"class{i % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:06d}.jpg"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _fastest(fn: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(images: int = 10_000, repeats: int = 3) -> dict[str, Any]:
    from PIL import Image

    from sslbench.data import load_dataset

    with tempfile.TemporaryDirectory(prefix="sslbench-bench-scan-") as tmp:
        root = Path(tmp)
        paths = _write_folder(root, images)

        def listing() -> None:
            for entry in os.scandir(root / "train"):
                list(os.scandir(entry.path))

        def decode() -> None:
            for path in paths:
                with Image.open(path) as im:
                    im.convert("RGB")

        list_s = _fastest(listing, repeats)
        load_s = _fastest(lambda: load_dataset("imagefolder", "train", str(root)), repeats)
        decode_s = _fastest(decode, repeats)
    scan_s = max(load_s - list_s, 0.0)
    return {"images": images, "list_s": round(list_s, 4), "load_s": round(load_s, 4),
            "scan_s": round(scan_s, 4), "decode_s": round(decode_s, 4),
            "scan_us_per_image": round(1e6 * scan_s / images, 1), "repeats": repeats}
