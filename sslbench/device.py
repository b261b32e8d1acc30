"""Device handling, in one place: which device, which precision, which memory layout.

Every other module takes a ``torch.device`` from here (or from its input tensors) and never
hard-codes CUDA. On CUDA, training runs under bf16 autocast with channels_last tensors; on CPU it
runs in float32, which keeps CPU runs bit-for-bit repeatable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TypeVar

import torch

from sslbench.errors import ConfigError

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; ``cpu``, ``cuda`` and ``cuda:N`` are checked."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: no CUDA device is available here; use --device "
                              "cpu")
        device = torch.device(spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) "
                              "are visible; pick an index below that")
        return device
    raise ConfigError(f"unknown --device {spec!r}: use auto, cpu, cuda or cuda:N")


def autocast(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast on CUDA; a no-op on CPU (float32 keeps CPU runs deterministic)."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last everywhere: faster convolutions on CUDA and, measured, on CPU (oneDNN) too."""
    return torch.channels_last


def module_to_device(module: ModuleT, device: torch.device) -> ModuleT:
    """``module.to(device, memory_format=memory_format(device))``: moves and lays out the
    parameters and buffers in one pass, in place, and returns ``module``.

    (torch's type stubs lack this documented form of ``Module.to``, hence the ignore.)"""
    fmt = memory_format(device)
    module.to(device, memory_format=fmt)  # type: ignore[call-overload]  # stubs lack this form
    return module


def to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Non-blocking host-to-device copy (pinned source on CUDA)."""
    if device.type == "cuda" and not images.is_pinned():
        images = images.pin_memory()
    return images.to(device, non_blocking=True)


def device_names(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return ["cpu"]


@contextlib.contextmanager
def deterministic(enabled: bool = True) -> Iterator[None]:
    """Deterministic kernels where torch has them (used by CPU tests of resume)."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=True)
