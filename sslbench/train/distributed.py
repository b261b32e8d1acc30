"""Multi-process training under ``torchrun``: process group, devices, and who writes.

``torchrun --nproc-per-node K -m sslbench train ...`` starts K processes with RANK, WORLD_SIZE and
LOCAL_RANK set. Each process takes ``batch_size / K`` samples per step and device
``cuda:LOCAL_RANK`` (gloo on CPU, NCCL on CUDA); the criteria gather embeddings across processes
with the correct gather (sslbench.losses.gather). Only rank 0 writes the store and checkpoints.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from sslbench.db.models import RunStatus
from sslbench.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def check_batch(batch_size: int, info: DistInfo) -> int:
    """The per-process batch; the global batch must split evenly."""
    if batch_size % info.world_size:
        raise ConfigError(f"--batch-size {batch_size} does not split across {info.world_size} "
                          f"processes: use a multiple of {info.world_size}")
    return batch_size // info.world_size


def peer_lost(err: BaseException, info: DistInfo) -> bool:
    """Whether ``err`` says another process of the group went away (killed, crashed): a
    collective's error (torch's DistError; gloo raises a RuntimeError from its TCP transport)."""
    if not info.enabled:
        return False
    return isinstance(err, dist.DistError) or (
        isinstance(err, RuntimeError) and "gloo/transport" in str(err))


def setup(info: DistInfo, device_spec: str) -> torch.device:
    """Initialises the process group (once) and returns this process's device."""
    from sslbench.device import resolve_device

    device = resolve_device(device_spec)
    if not info.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def broadcast(obj, info: DistInfo):
    """Rank 0's value of a picklable ``obj`` on every process."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


class NullStore:
    """The :class:`~sslbench.db.writer.RunWriter` of non-zero ranks: every write is dropped.

    Only rank 0 writes the run (one row per metric, one checkpoint, one status), but every rank
    runs the same loop; handing the others this writer keeps the loop free of rank tests. It
    spells out the protocol's signatures so a call rank 0 accepts is never a TypeError here
    (``tests/test_store_protocol.py`` compares them).
    """

    def set_status(self, run_id: str, status: RunStatus | str, *, error: str | None = None,
                   failure_class: str | None = None) -> None:
        pass

    def log_metrics(self, run_id: str, step: int, metrics: Mapping[str, Any], *,
                    epoch: int | None = None) -> None:
        pass

    def log_series(self, run_id: str, key: str, values: Iterable[Any], *,
                   start: int = 0) -> None:
        pass

    def log_artifact(self, run_id: str, kind: str, path: str, *, size: int | None = None,
                     sha256: str | None = None) -> None:
        pass

    def heartbeat(self, run_id: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def truncate_metrics(self, run_id: str, after_step: int) -> None:
        pass

    def summary(self, run_id: str) -> dict[str, float]:
        return {}
