"""Pretraining throughput and data-pipeline overhead on ``synthetic`` data.

For each (backbone, resolution, batch) it times, side by side in one process:
- ``model_step_s``: one optimisation step on two views that are already augmented and on the
  device (pure model compute: forward, VICReg loss, backward, LARS step);
- ``pipeline_step_s``: the same step fed by the real pipeline (batches drawn from the in-memory
  uint8 dataset, copied to the device, augmented with the batched recipe).
``overhead`` = pipeline_step_s / model_step_s - 1 (the issue's "epoch time / pure model step time",
minus one); ``images_per_s`` counts images (each seen as two views) through the full pipeline.
"""

from __future__ import annotations

import time
from typing import Any

import torch

CPU_CASES = (("resnet18", 32, 128, "cifar"), ("resnet50", 224, 16, "byol"))
GPU_CASES = (("resnet18", 32, 512, "cifar"), ("resnet50", 224, 256, "byol"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(backbone: str, size: int, batch: int, recipe: str, *, steps: int,
            device: torch.device) -> dict[str, Any]:
    from sslbench.data import iterate_batches, load_dataset, to_memory
    from sslbench.data.augment import build_augment
    from sslbench.device import autocast, memory_format, module_to_device, to_device
    from sslbench.losses import build_criterion
    from sslbench.models import build_model
    from sslbench.train.optim import build_optimizer

    ds = to_memory(load_dataset("synthetic", "pretrain", num_samples=batch * (steps + 1),
                                num_classes=10, image_size=size))  # in memory already
    model = build_model(backbone, "2048-d", 256, cifar_stem=size <= 64)
    fmt = memory_format(device)
    model = module_to_device(model, device)
    opt = build_optimizer("lars", model, lr=0.1, weight_decay=1e-6)
    crit = build_criterion("vicreg")
    aug1, aug2 = (a.to(device) for a in build_augment(recipe, image_size=size, mean=ds.mean,
                                                        std=ds.std))
    gen = torch.Generator(device=device).manual_seed(0)

    def step(v1: torch.Tensor, v2: torch.Tensor) -> None:
        with autocast(device):
            _, z = model(torch.cat([v1, v2]))
        loss = crit(*(t.float() for t in z.chunk(2)))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def pipeline_steps(n: int) -> float:
        _sync(device)
        t0 = time.perf_counter()
        for i, (images, _) in enumerate(iterate_batches(ds, batch, shuffle=True, drop_last=True,
                                                        seed=0, epoch=0)):
            if i == n:
                break
            x = to_device(images, device)
            step(aug1(x, gen).contiguous(memory_format=fmt),
                 aug2(x, gen).contiguous(memory_format=fmt))
        _sync(device)
        return (time.perf_counter() - t0) / n

    def model_steps(n: int) -> float:
        x = to_device(ds.images[:batch], device)
        v1 = aug1(x, gen).contiguous(memory_format=fmt)
        v2 = aug2(x, gen).contiguous(memory_format=fmt)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            step(v1, v2)
        _sync(device)
        return (time.perf_counter() - t0) / n

    model_steps(1)  # warm-up: allocator, kernels, autotuning
    pure = min(model_steps(steps), model_steps(steps))
    full = min(pipeline_steps(steps), pipeline_steps(steps))
    return {"backbone": backbone, "image_size": size, "batch": batch, "device": str(device),
            "model_step_s": round(pure, 4), "pipeline_step_s": round(full, 4),
            "overhead": round(full / pure - 1.0, 4), "images_per_s": round(batch / full, 1)}


def run(device: str = "auto", steps: int | None = None) -> list[dict[str, Any]]:
    from sslbench.device import resolve_device

    dev = resolve_device(device)
    cases = GPU_CASES if dev.type == "cuda" else CPU_CASES
    n = steps or (20 if dev.type == "cuda" else 2)
    return [measure(b, s, bs, r, steps=n, device=dev) for b, s, bs, r in cases]
