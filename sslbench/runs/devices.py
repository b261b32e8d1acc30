"""The devices a local scheduler owns, their slots, and what each worker's environment gets.

A pool is either CUDA devices (``--devices 0,1,2,3``, ``--per-device K`` runs on each) or CPU
workers (``--workers N``, when there is no GPU or none is asked for). The scheduler never asks
``nvidia-smi`` which device looks free: it hands out slots from its reservation ledger (the
``reservations`` table, shared by every scheduler on the host), and pins each worker to its
device with ``CUDA_VISIBLE_DEVICES`` -- so inside the worker the device is always ``cuda:0`` and
runs spread over the devices instead of all landing on GPU 0.

CPU threads are shared out: each worker gets ``OMP_NUM_THREADS = cores // slots`` (at least 1),
so N concurrent workers do not each spawn one thread per core and thrash.

The ledger names a device by what it is on the host, not by how one process sees it: a GPU by
its index on the machine (the parent's ``CUDA_VISIBLE_DEVICES`` entry, or Slurm's
``SLURM_STEP_GPUS``), so schedulers that see the GPUs through different
``CUDA_VISIBLE_DEVICES`` never share one by accident; the CPU workers of a Slurm task by the task's
allocation (:func:`allocation_pool`), since Slurm, not the ledger, shares a node's cores out
between tasks -- two tasks on one node run at once, each on its own CPUs. A run's intra-op
thread count inside the worker is the one recorded with the run (``sslbench.numerics``), so the
number of workers never changes a result.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from sslbench.errors import ConfigError

CPU = "cpu"
#: CPU workers when neither --workers nor --devices is given (capped by the core count).
DEFAULT_CPU_WORKERS = 4


@dataclass(frozen=True)
class DevicePool:
    """``devices``: CUDA indices as seen by this process ("0", "1", ...) or ``("cpu",)``."""

    devices: tuple[str, ...]
    per_device: int
    cores: int
    physical: tuple[str, ...] = ()  # what CUDA_VISIBLE_DEVICES must say for each device
    ledger: tuple[str, ...] = ()  # each device's name in the reservation ledger (see above)

    @property
    def is_cpu(self) -> bool:
        return self.devices == (CPU,)

    @property
    def total_slots(self) -> int:
        return len(self.devices) * self.per_device

    def threads_per_worker(self) -> int:
        return max(1, self.cores // self.total_slots)

    def describe(self) -> list[str]:
        """``["cpu:0", "cpu:1"]`` or ``["cuda0:0", "cuda0:1", "cuda1:0", ...]``."""
        prefix = "" if self.is_cpu else "cuda"
        return [f"{prefix}{d}:{s}" for d in self.devices for s in range(self.per_device)]

    def ledger_key(self, device: str) -> str:
        """``device``'s name in the reservation ledger of this host (several: comma-separated,
        as for a run of several GPUs)."""
        names = self.ledger or self.physical or self.devices
        return ",".join(names[self.devices.index(d)] for d in device.split(","))

    @property
    def max_devices_per_run(self) -> int:
        """The most processes one run can have here: every CPU slot, or every GPU (a run of
        several GPUs takes each of them whole)."""
        return self.total_slots if self.is_cpu else len(self.devices)

    def worker_env(self, device: str) -> dict[str, str]:
        """Environment of a worker on ``device`` (several: comma-separated): its GPUs only
        (none on CPU), its threads per process."""
        threads = str(self.threads_per_worker())
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        if self.is_cpu:
            env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU worker must not grab a GPU by accident
        else:
            physical = self.physical or self.devices
            env["CUDA_VISIBLE_DEVICES"] = ",".join(physical[self.devices.index(d)]
                                                   for d in device.split(","))
        return env


def parse_device_list(text: str) -> tuple[str, ...]:
    """``"0,1,3"`` -> ``("0", "1", "3")``; anything else is a one-line ConfigError."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise ConfigError(f"--devices {text!r} must list CUDA device indices, e.g. --devices "
                          "0,1,2,3 (or leave it out to run on CPU workers)")
    if len(set(parts)) != len(parts):
        raise ConfigError(f"--devices {text!r} lists a device twice: use --per-device K to run "
                          "several runs on one device")
    return tuple(str(int(p)) for p in parts)


def visible_cuda_devices() -> int:
    """How many CUDA devices this process sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def build_pool(devices: str | None, per_device: int = 1, workers: int | None = None, *,
               cuda_count: int | None = None, cores: int | None = None,
               environ: Mapping[str, str] | None = None) -> DevicePool:
    """The pool for ``--devices`` / ``--per-device`` / ``--workers``; checks that the devices
    exist (``cuda_count`` defaults to what torch sees)."""
    cores = cores or os.cpu_count() or 1
    environ = os.environ if environ is None else environ
    if per_device < 1:
        raise ConfigError(f"--per-device must be >= 1, got {per_device}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if devices is not None and workers is not None:
        raise ConfigError("--workers sets CPU workers; with --devices use --per-device K "
                          "(runs per device) instead")
    if devices is None or devices.strip().lower() == CPU:
        count = workers if workers is not None else min(DEFAULT_CPU_WORKERS, cores)
        return DevicePool((CPU,), count, cores)
    wanted = parse_device_list(devices)
    count = visible_cuda_devices() if cuda_count is None else cuda_count
    if count == 0:
        raise ConfigError(f"--devices {devices}: this machine has no CUDA device; leave "
                          "--devices out to run on CPU workers (--workers N)")
    missing = [d for d in wanted if int(d) >= count]
    if missing:
        raise ConfigError(f"--devices {devices}: device {missing[0]} does not exist, only "
                          f"{count} CUDA device(s) are visible (0-{count - 1})")
    parent = [p.strip() for p in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if p.strip()]
    physical = tuple(parent[int(d)] for d in wanted) if len(parent) >= count else wanted
    return DevicePool(wanted, per_device, cores, physical)


def pick_places(pool: DevicePool, reserved: Mapping[str, Mapping[int, str]],
                processes: int) -> list[tuple[str, int]] | None:
    """The (device, slot) pairs a run of ``processes`` processes reserves, or None while they
    are not free: ``processes`` CPU slots, or ``processes`` whole GPUs (every slot of each, in
    pool order: NCCL waits for the slowest process, so none shares its GPU)."""
    if pool.is_cpu:
        busy = set(reserved.get(pool.ledger_key(CPU), {}))
        free = [s for s in range(pool.per_device) if s not in busy]
        return [(CPU, s) for s in free[:processes]] if len(free) >= processes else None
    idle = [d for d in pool.devices if not reserved.get(pool.ledger_key(d))][:processes]
    if len(idle) < processes:
        return None
    return [(d, s) for d in idle for s in range(pool.per_device)]


def pick_slots(pool: DevicePool, reserved: Mapping[str, Mapping[int, str]], *,
               exclusive: bool) -> tuple[str, list[int]] | None:
    """A device and the slots to reserve on it, or None when nothing fits.

    Shared runs go to the device with the fewest busy slots (so K runs per device spread over
    every device before doubling up); an exclusive run needs a device with no busy slot and
    takes all of them.
    """
    best: tuple[int, int, str, int] | None = None
    for order, device in enumerate(pool.devices):
        # other schedulers' slots on this host count too
        busy = set(reserved.get(pool.ledger_key(device), {}))
        if exclusive:
            if not busy:
                return device, list(range(pool.per_device))
            continue
        free = [s for s in range(pool.per_device) if s not in busy]
        if free and (best is None or (len(busy), order) < best[:2]):
            best = (len(busy), order, device, free[0])
    return None if best is None else (best[2], [best[3]])


def _ids(text: str | None) -> tuple[str, ...]:
    """``"0,2"`` -> ``("0", "2")``; anything that is not a list of indices (unset, empty,
    Slurm's ``NoDevFiles``) -> ``()``."""
    parts = tuple(p.strip() for p in (text or "").split(",") if p.strip())
    return parts if parts and all(p.isdigit() for p in parts) else ()


def allocation_pool(environ: Mapping[str, str], per_device: int = 1) -> DevicePool | None:
    """The pool of the Slurm allocation this process runs in, None outside Slurm.

    GPU tasks get exactly the GPUs Slurm gave them: ``SLURM_STEP_GPUS`` (or ``SLURM_JOB_GPUS``)
    names them on the node -- their ledger names -- and the task's ``CUDA_VISIBLE_DEVICES`` says
    how a worker must address them (Slurm renumbers them from 0 when it confines devices). CPU
    tasks get one worker with the task's ``SLURM_CPUS_PER_TASK`` threads, booked in the ledger
    under the allocation's name, so tasks sharing a node never wait for each other's slots."""
    job = environ.get("SLURM_JOB_ID")
    if not job:
        return None
    cpus = next((int(v) for v in (environ.get("SLURM_CPUS_PER_TASK"),
                                  environ.get("SLURM_CPUS_ON_NODE")) if v and v.isdigit()),
                os.cpu_count() or 1)
    on_node = _ids(environ.get("SLURM_STEP_GPUS") or environ.get("SLURM_JOB_GPUS"))
    if not on_node:
        where = f"slurm:{environ.get('SLURM_CLUSTER_NAME', '')}:{job}"
        return DevicePool((CPU,), 1, cpus, ledger=(f"{where}/{CPU}",))
    visible = _ids(environ.get("CUDA_VISIBLE_DEVICES"))
    return DevicePool(tuple(str(i) for i in range(len(on_node))), per_device, cpus,
                      physical=visible if len(visible) == len(on_node) else on_node,
                      ledger=on_node)
