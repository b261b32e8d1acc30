"""Checks of a resolved training config against its loaded data and its device.

``resolve_train_config`` checks what needs no data. What depends on the data (is the batch
larger than the training set?) or on the machine (does the model fit in memory?) is checked
here, after the data is loaded and before the store or the run folder is touched, so a run
that could never take a step is refused with one line instead of failing as a stored run.

The memory check is deliberately a lower bound: weights, gradients and optimiser state, plus
the outputs of every layer for both views of the batch (what autograd keeps for backward),
without the criterion's temporaries or allocator slack. It refuses only runs that cannot fit,
never runs that might; where free memory cannot be read it checks nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sized
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from sslbench.config import TrainConfig
from sslbench.errors import ConfigError

# Optimiser state kept per parameter (LARS and SGD: a momentum buffer; AdamW: two moments).
OPTIMIZER_STATES = {"lars": 1, "sgd": 1, "adamw": 2}
GIB = 2**30


# --------------------------------------------------------------------------- sizes

def check_sizes(cfg: TrainConfig, train_images: int, test_images: int,
                world_size: int = 1) -> None:
    """``--train-samples`` and ``--batch-size`` against a pretraining split of ``train_images``
    (before or after ``subset``) and a test split of ``test_images``; ConfigError if wrong."""
    where = f"the {train_images} training images of {cfg.dataset}"
    if cfg.train_samples > train_images:
        raise ConfigError(f"--train-samples {cfg.train_samples} is more than {where}: lower it "
                          f"to {train_images} or less (0 = all)")
    used = cfg.train_samples or train_images
    if cfg.train_samples:
        where = f"the {used} training images that --train-samples selects"
    local = cfg.batch_size // world_size
    if local == 0 or local * world_size > used:
        fit = used - used % world_size
        fix = f"lower --batch-size to {fit} or less" if fit else "use more training images"
        if world_size > 1:
            fix += f" (a multiple of the {world_size} processes)"
        raise ConfigError(f"--batch-size {cfg.batch_size} is larger than {where}, so no step "
                          f"would run: {fix}")
    if test_images < 1:
        raise ConfigError(f"the test split of {cfg.dataset} has no images: the online probe "
                          "needs some; check --data-root")


# --------------------------------------------------------------------------- memory

@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one training process needs at least (see the module docstring)."""

    parameters: int
    state_bytes: int
    activation_bytes: int
    views: int

    @property
    def total(self) -> int:
        return self.state_bytes + self.activation_bytes


@lru_cache(maxsize=64)
def _model_numbers(backbone: str, projector: str, dim: int, cifar_stem: bool,
                   image_size: int) -> tuple[int, int, int]:
    """(parameters, layer-output elements per image, embedding width) of the model, built on
    the meta device (shapes only: nothing is allocated, whatever --dim is)."""
    from sslbench.models import build_model

    with torch.device("meta"):
        model = build_model(backbone, projector, dim, cifar_stem=cifar_stem)
    parameters = sum(p.numel() for p in model.parameters())
    outputs = 0

    def count(module: torch.nn.Module, inputs: tuple[object, ...], output: object) -> None:
        nonlocal outputs
        # In-place layers (ReLU) and identities return their input: no new memory.
        if isinstance(output, torch.Tensor) and not any(output is x for x in inputs):
            outputs += output.numel()

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        model.train()  # BatchNorm in training mode needs 2 samples per channel: count 2 images
        _, embeddings = model(torch.empty(2, 3, image_size, image_size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return parameters, outputs // 2, int(embeddings.shape[1])


def estimate_memory(cfg: TrainConfig, device: torch.device,
                    world_size: int = 1) -> MemoryEstimate:
    """A lower bound of the memory one process of the run needs on ``device``."""
    parameters, per_image, width = _model_numbers(cfg.backbone, cfg.projector, cfg.dim,
                                                  cfg.cifar_stem, cfg.image_size)
    # Weights, gradients (kept from the previous step until the next forward has run) and
    # optimiser state, all float32.
    copies = 2 + OPTIMIZER_STATES.get(cfg.optimizer, 1)
    views = 2 * max(1, cfg.batch_size // world_size)
    element = 2 if device.type == "cuda" else 4  # CUDA trains under bf16 autocast
    # Every criterion keeps one float32 copy of the embeddings (normalised or centred).
    activations = per_image * views * element + width * views * 4
    return MemoryEstimate(parameters, parameters * 4 * copies, activations, views)


def _meminfo(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == key:
                return int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room() -> int | None:
    """What a cgroup v2 memory limit still allows (containers), if there is one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - used)


def device_memory(device: torch.device) -> int | None:
    """Free bytes of ``device`` now; None where that cannot be read."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    if device.type == "cpu":
        known = [v for v in (_meminfo("MemAvailable"), _cgroup_room()) if v is not None]
        return min(known) if known else None
    return None


def _local_processes(device: torch.device, world_size: int) -> int:
    """Processes sharing this device's memory: every process on this host for CPU runs."""
    if device.type != "cpu" or world_size <= 1:
        return 1
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))
    except ValueError:
        return world_size


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def check_memory(cfg: TrainConfig, device: torch.device, world_size: int = 1) -> None:
    """ConfigError when the run's lower-bound estimate exceeds the device's free memory;
    nothing when that cannot be read."""
    available = device_memory(device)
    if available is None:
        return
    try:
        est = estimate_memory(cfg, device, world_size)
    except RuntimeError as err:  # even a shape-only tensor cannot be that large
        if "overflow" not in str(err):
            raise
        raise ConfigError(f"--dim {cfg.dim}, --projector {cfg.projector} and --image-size "
                          f"{cfg.image_size} make tensors whose sizes overflow 64 bits: lower "
                          "them") from None
    processes = _local_processes(device, world_size)
    if est.total * processes <= available:
        return
    each = f" for each of {processes} processes" if processes > 1 else ""
    raise ConfigError(
        f"not enough memory on {device}: training needs at least {_gib(est.total)}{each} "
        f"({est.parameters / 1e6:,.1f} M parameters with gradients and {cfg.optimizer} state "
        f"{_gib(est.state_bytes)}, activations of {est.views} views at {cfg.image_size}px "
        f"{_gib(est.activation_bytes)}) but {_gib(available)} is available: lower --dim, "
        "--batch-size or the --projector widths")


# --------------------------------------------------------------------------- entry point

def check_train(cfg: TrainConfig, train_ds: Sized, test_ds: Sized, device: torch.device,
                world_size: int = 1) -> None:
    """Every check of ``cfg`` that needs its loaded datasets (``train_ds`` as ``load_data``
    returns it, subset or not) or its device; call before anything is written."""
    check_sizes(cfg, len(train_ds), len(test_ds), world_size)
    check_memory(cfg, device, world_size)
