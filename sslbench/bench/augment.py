"""Throughput of the batched augmentation pipeline against torchvision's per-sample PIL pipeline.

``run()`` returns one row per (image size, pipeline):
``{size, pipeline, images_per_s, speedup, recipe, batch_size, device, threads}``.

- Both pipelines produce the two views of the same recipe (``sslbench.data.augment.RECIPES``)
  from the same random uint8 source images of side ``size``, as normalised float tensors
  stacked into (B, 3, size, size) batches.
- ``batched``: :class:`~sslbench.data.augment.BatchAugment` on a uint8 batch on ``device``
  (CUDA: synchronised before the clock stops).
- ``pil``: ``torchvision.transforms`` (v1) applied per sample to PIL images in one process,
  the way a DataLoader worker runs it: RandomResizedCrop, flip, RandomApply(ColorJitter),
  RandomGrayscale, RandomApply(GaussianBlur) (same kernel size), RandomSolarize(128), ToTensor,
  Normalize, then ``torch.stack``. Converting the sources to PIL is not timed.
- ``images_per_s`` counts source images (each yields two views) for the fastest of
  ``repeats`` timed batches after one warm-up batch; the two pipelines alternate, so background
  load affects both alike, and the minimum time is the least disturbed measurement.
- ``speedup`` = batched / pil images per second at the same size (1.0 on the pil row).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from sslbench.data.augment import RECIPES, BatchAugment, ViewRecipe
from sslbench.data.augment_ops import blur_kernel_size

if TYPE_CHECKING:
    from PIL.Image import Image

BENCH_MEAN, BENCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def pil_view(view: ViewRecipe, size: int) -> Callable[[Image], torch.Tensor]:
    """A per-sample torchvision (v1) transform implementing one view recipe on PIL images."""
    import torchvision.transforms as T

    steps: list[Callable[[Any], Any]] = []
    if view.crop_scale is None:
        steps += [T.Resize(size), T.CenterCrop(size)]
    else:
        steps.append(T.RandomResizedCrop(size, scale=view.crop_scale, ratio=view.crop_ratio))
    if view.flip_p > 0:
        steps.append(T.RandomHorizontalFlip(view.flip_p))
    if view.jitter_p > 0:
        jitter = T.ColorJitter(view.brightness, view.contrast, view.saturation, view.hue)
        steps.append(T.RandomApply([jitter], p=view.jitter_p))
    if view.gray_p > 0:
        steps.append(T.RandomGrayscale(view.gray_p))
    if view.blur_p > 0:
        blur = T.GaussianBlur(blur_kernel_size(size), sigma=view.blur_sigma)
        steps.append(T.RandomApply([blur], p=view.blur_p))
    if view.solarize_p > 0:
        steps.append(T.RandomSolarize(128, p=view.solarize_p))
    steps += [T.ToTensor(), T.Normalize(BENCH_MEAN, BENCH_STD)]
    transform: Callable[[Image], torch.Tensor] = T.Compose(steps)
    return transform


def _timer(fn: Callable[[], object], sync: Callable[[], None]) -> Callable[[], float]:
    def once() -> float:
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start
    return once


def _measure(size: int, recipe: str, batch_size: int, repeats: int, device: torch.device,
             seed: int) -> tuple[float, float]:
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    source = torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8, generator=g)
    views = RECIPES[recipe].views
    augs = [BatchAugment.from_recipe(v, image_size=size, mean=BENCH_MEAN, std=BENCH_STD).to(device)
            for v in views]
    pils = [pil_view(v, size) for v in views]
    images = [Image.fromarray(x.permute(1, 2, 0).numpy()) for x in source]
    on_device = source.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def batched() -> None:
        for aug in augs:
            aug(on_device, g)

    def per_sample() -> None:
        for view in pils:
            torch.stack([view(im) for im in images])

    timers = [_timer(batched, sync), _timer(per_sample, lambda: None)]
    for t in timers:
        t()  # warm-up
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, t in enumerate(timers):
            best[i] = min(best[i], t())
    return batch_size / best[0], batch_size / best[1]


def run(sizes: Sequence[int] = (32, 224), batch_size: int = 256, repeats: int = 3, *,
        recipe: str = "byol", device: str | torch.device = "cpu", seed: int = 0,
        threads: int | None = None) -> list[dict[str, Any]]:
    """Measure both pipelines at each size; two rows per size (see the module docstring).

    ``threads`` sets torch's intra-op threads for the measurement (restored afterwards); the
    PIL pipeline is single-process either way.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose from {sorted(RECIPES)}")
    dev = torch.device(device)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    rows: list[dict[str, Any]] = []
    try:
        for size in sizes:
            fast, slow = _measure(int(size), recipe, batch_size, max(1, repeats), dev, seed)
            common = {"size": int(size), "recipe": recipe, "batch_size": batch_size,
                      "device": str(dev), "threads": torch.get_num_threads()}
            rows.append({**common, "pipeline": "batched", "images_per_s": fast,
                         "speedup": fast / slow})
            rows.append({**common, "pipeline": "pil", "images_per_s": slow, "speedup": 1.0})
    finally:
        torch.set_num_threads(previous)
    return rows
