"""The execution settings that change a run's numbers: recorded once, applied on every attempt.

A run id names one configuration, and the store must hold one result for it however the run is
executed or resumed. Two settings outside the configuration still change the bits:

* **CPU intra-op threads.** torch splits reductions (convolution weight gradients, sums) across
  threads, so the same run trained with 1 and with 2 threads ends with different weights. The
  local scheduler hands each worker ``cores // slots`` threads and ``sslbench train`` would use
  every core: left alone, whichever mode ran first would become "the" result, and a run resumed
  in another mode would mix two numerics.
* **CUDA kernel selection.** cuDNN autotuning, non-deterministic algorithms and TF32 matmuls.
* **The number of processes** (``torchrun --nproc-per-node``, a sweep's ``devices_per_run``).
  The global batch is the same, but each process draws its own share of it, BatchNorm
  normalises each process's share with its own statistics (unless ``--sync-bn``) and the
  gradients are summed in another order. It cannot be changed from inside a process, so a
  resume with another count is refused (``sslbench.train.loop``) rather than adopted, and the
  local scheduler starts every attempt with the recorded count. A run that recorded its
  numerics before the count was recorded ran as one process.

:func:`proposed` gives the settings a new run starts with. They do not depend on how it is
started: ``DEFAULT_CPU_THREADS`` everywhere unless the user asks for more, so a run started by
``sslbench train``, by a sweep worker or by a Slurm task computes the same thing. The store keeps
the first attempt's settings (``Store.adopt_numerics``, first writer wins) and :func:`applied`
puts them in force for every later attempt, whoever runs it.

Importing this module does not import torch: a scheduler reads a run's recorded process count
(:func:`recorded_processes`) before it starts the run's worker, and a Slurm task's scheduler
would otherwise pay torch's import (over a second) before its first run could start. Only
putting settings in force (:func:`applied`) imports it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: Intra-op threads of a CPU run unless its configuration asks for more. One thread is what the
#: local scheduler gives each worker on a machine with as many cores as workers, and the only
#: count every machine can honour.
DEFAULT_CPU_THREADS = 1


def proposed(device: torch.device, threads: int = 0, processes: int = 1) -> dict[str, Any]:
    """The settings a run on ``device`` in ``processes`` processes starts with (``threads`` 0:
    the default count)."""
    settings: dict[str, Any] = {"cpu_threads": int(threads) or DEFAULT_CPU_THREADS,
                                "processes": int(processes)}
    if device.type == "cuda":
        settings.update(cudnn_benchmark=False, cudnn_deterministic=True, matmul_tf32=False,
                        cudnn_tf32=False)
    return settings


def recorded_processes(settings: Mapping[str, Any]) -> int:
    """The process count of recorded ``settings`` (1 when they predate its recording)."""
    return int(settings.get("processes", 1))


def _current() -> dict[str, Any]:
    import torch

    return {"cpu_threads": torch.get_num_threads(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_tf32": torch.backends.cudnn.allow_tf32}


def _set(settings: Mapping[str, Any]) -> None:
    import torch

    if "cpu_threads" in settings and settings["cpu_threads"] != torch.get_num_threads():
        torch.set_num_threads(int(settings["cpu_threads"]))
    if "cudnn_benchmark" in settings:
        torch.backends.cudnn.benchmark = bool(settings["cudnn_benchmark"])
    if "cudnn_deterministic" in settings:
        torch.backends.cudnn.deterministic = bool(settings["cudnn_deterministic"])
    if "matmul_tf32" in settings:
        torch.backends.cuda.matmul.allow_tf32 = bool(settings["matmul_tf32"])
    if "cudnn_tf32" in settings:
        torch.backends.cudnn.allow_tf32 = bool(settings["cudnn_tf32"])


@contextlib.contextmanager
def applied(settings: Mapping[str, Any]) -> Iterator[None]:
    """Put ``settings`` in force for the block, then restore what was there (the process may
    go on with other work: a sweep's tests, an interactive session)."""
    before = _current()
    _set(settings)
    try:
        yield
    finally:
        _set(before)
