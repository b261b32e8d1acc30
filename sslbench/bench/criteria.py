"""Speed and memory of the criteria's forward + backward, per ``impl`` (direct / dual / auto).

``run()`` returns one row per (criterion, impl, N, M):
``{criterion, impl, n, m, fwd_bwd_ms, peak_mem_mb, input_grad_mb}``.

- ``fwd_bwd_ms``: the fastest of ``repeats`` timed calls of forward + ``loss.backward()`` on
  (N, M) float32 inputs that require grad, after one warm-up call (CUDA: synchronised). The
  minimum, as ``timeit`` recommends, because background load only ever adds time.
- ``peak_mem_mb``: the largest amount of memory the loss holds at any moment beyond its inputs,
  *including* the two input gradients it returns. On CUDA this is
  ``torch.cuda.max_memory_allocated`` minus the memory allocated before the call. On CPU, where
  PyTorch keeps no allocator statistics, one extra call runs under ``torch.profiler`` with
  ``profile_memory=True``; its allocation / free events are replayed in time order and the
  maximum of the running sum is the peak.
- ``input_grad_mb``: the size of the two input gradients (2·N·M·4 bytes), which every
  implementation must allocate; ``peak_mem_mb − input_grad_mb`` is the loss's own working set.

The default grid includes N=256, M=8192 (the case the dual path is for) and N=2048, M=256 (the
case where the direct path is cheaper and ``auto`` must choose it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from sslbench.losses import build_criterion

DEFAULT_GRID: tuple[tuple[int, int], ...] = ((256, 8192), (2048, 256), (512, 2048))
DEFAULT_CRITERIA: tuple[str, ...] = ("vicreg", "barlow", "scl")
DEFAULT_IMPLS: tuple[str, ...] = ("direct", "dual", "auto")
_MB = 2.0**20


def _step(criterion: torch.nn.Module, z1: torch.Tensor, z2: torch.Tensor) -> None:
    criterion(z1, z2)["loss"].backward()
    z1.grad = z2.grad = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(criterion: torch.nn.Module, z1: torch.Tensor, z2: torch.Tensor, repeats: int) -> float:
    """Fastest of ``repeats`` forward + backward calls in milliseconds, after one warm-up call."""
    _step(criterion, z1, z2)
    times = []
    for _ in range(repeats):
        _sync(z1.device)
        start = time.perf_counter()
        _step(criterion, z1, z2)
        _sync(z1.device)
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def _cpu_peak_bytes(criterion: torch.nn.Module, z1: torch.Tensor, z2: torch.Tensor) -> int:
    from torch.profiler import DeviceType, ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        criterion(z1, z2)["loss"].backward()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())
    running = peak = 0
    for event in events:
        running += event.nbytes()
        peak = max(peak, running)
    z1.grad = z2.grad = None
    return peak


def peak_mem_mb(criterion: torch.nn.Module, z1: torch.Tensor, z2: torch.Tensor) -> float:
    """Peak memory (MiB) held by forward + backward beyond the inputs; see the module docstring."""
    if z1.device.type == "cuda":
        torch.cuda.synchronize(z1.device)
        torch.cuda.reset_peak_memory_stats(z1.device)
        base = torch.cuda.memory_allocated(z1.device)
        _step(criterion, z1, z2)
        torch.cuda.synchronize(z1.device)
        return (torch.cuda.max_memory_allocated(z1.device) - base) / _MB
    return _cpu_peak_bytes(criterion, z1, z2) / _MB


def measure(name: str, impl: str, n: int, m: int, repeats: int = 3,
            device: str | torch.device = "cpu", seed: int = 0) -> dict[str, object]:
    """One benchmark row for criterion ``name`` with ``impl`` on random (n, m) float32 inputs."""
    gen = torch.Generator().manual_seed(seed)
    dev = torch.device(device)
    z1 = torch.randn(n, m, generator=gen).to(dev).requires_grad_()
    z2 = torch.randn(n, m, generator=gen).to(dev).requires_grad_()
    criterion = build_criterion(name, impl=impl)
    ms = time_ms(criterion, z1, z2, repeats)
    mem = peak_mem_mb(criterion, z1, z2)
    return {"criterion": name, "impl": impl, "n": n, "m": m, "fwd_bwd_ms": round(ms, 3),
            "peak_mem_mb": round(mem, 3),
            "input_grad_mb": round(2 * n * m * z1.element_size() / _MB, 3)}


def run(grid: Sequence[tuple[int, int]] | None = None,
        criteria: Sequence[str] = DEFAULT_CRITERIA,
        impls: Sequence[str] = DEFAULT_IMPLS, repeats: int = 3,
        device: str | torch.device = "cpu", threads: int | None = None) -> list[dict[str, object]]:
    """Benchmark every (criterion, impl, N, M); criteria must accept ``impl`` (ConfigError if not).

    Args:
        grid: (N, M) pairs; default :data:`DEFAULT_GRID`.
        criteria: registry names with an ``impl`` hyperparameter.
        impls: subset of ``("direct", "dual", "auto")``.
        repeats: timed calls per row (the fastest is reported).
        device: where the inputs live.
        threads: CPU threads for the run (restored afterwards); ``None`` keeps torch's setting.
            On a CPU shared with other busy processes, OpenMP barriers make every small op wait
            for descheduled threads; ``threads=1`` then gives stable, comparable numbers.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return [measure(name, impl, n, m, repeats, device)
                for n, m in (grid or DEFAULT_GRID) for name in criteria for impl in impls]
    finally:
        torch.set_num_threads(previous)
