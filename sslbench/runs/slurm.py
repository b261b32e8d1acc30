"""Beyond one machine: a sweep as a Slurm job array, through submitit.

Each array task is one pretraining run followed by its evaluations (:class:`SweepTask`). Inside
the task an ordinary :class:`~sslbench.runs.scheduler.LocalScheduler` runs them on the task's
GPUs (or one CPU worker), so claims, the device ledger, retries by failure class and heartbeats
work exactly as on a workstation, and two tasks -- or a task and a workstation sharing a
PostgreSQL store -- never run one run twice.

Requeue: a task is checkpointable (submitit's ``Checkpointable`` protocol). When Slurm warns it
before a timeout or a preemption (SIGUSR2, submitit's ``--signal``), the task stops its
scheduler -- the workers get SIGTERM, finish their step, checkpoint and end as 'interrupted' --
and only then hands over to submitit, which requeues the same task. The requeued task re-queues
its interrupted runs, and ``runs exec`` resumes each from its checkpoint. The same path runs on
one machine with ``submitit.LocalExecutor`` (``--backend submitit-local``), which is how the
tests exercise it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sslbench.db.models import RunStatus
from sslbench.errors import ConfigError

#: ``[slurm]`` keys of a sweep file -> SlurmExecutor parameters.
_SLURM_PARAMS = {"partition": "partition", "timeout_min": "time", "gpus_per_node":
                 "gpus_per_node", "cpus_per_task": "cpus_per_task", "array_parallelism":
                 "array_parallelism", "account": "account", "qos": "qos",
                 "constraint": "constraint", "setup": "setup"}
#: What a requeued task puts back in the queue: its runs that were stopped, not finished.
_RESUMABLE = (RunStatus.INTERRUPTED, RunStatus.KILLED, RunStatus.QUEUED)


def _require_submitit() -> None:
    import importlib.util

    if importlib.util.find_spec("submitit") is None:
        raise ConfigError("the Slurm backend needs submitit: pip install 'sslbench[slurm]'")


class SweepTask:
    """One array task: see ``run_ids`` (a pretraining run, then its evaluations) through.

    It follows submitit's ``Checkpointable`` protocol (a ``checkpoint`` method returning the
    resubmission), without importing submitit where the task is only built.
    """

    def __init__(self, run_ids: Sequence[str], store_url: str, home: str, *,
                 max_attempts: int = 3, transient: Sequence[str] = (), per_device: int = 1,
                 worker: Sequence[str] | None = None) -> None:
        self.run_ids = list(run_ids)
        self.store_url, self.home = store_url, home
        self.max_attempts, self.transient = max_attempts, tuple(transient)
        self.per_device = per_device
        self.worker = list(worker) if worker else None  # argv before the run id (tests)

    def __call__(self) -> dict[str, str]:
        from sslbench.db import Store
        from sslbench.runs.control import reap
        from sslbench.runs.devices import build_pool, visible_cuda_devices
        from sslbench.runs.policy import RetryPolicy
        from sslbench.runs.scheduler import LocalScheduler

        os.environ["SSLBENCH_HOME"] = self.home
        with Store.open(self.store_url) as store:
            reap(store)
            self._resume(store)
            count = visible_cuda_devices()
            pool = build_pool(",".join(str(i) for i in range(count)) if count else None,
                              per_device=self.per_device, workers=None if count else 1,
                              cuda_count=count)
            scheduler = LocalScheduler(store, pool, backend="slurm", install_signals=False,
                                       policy=RetryPolicy(self.max_attempts, self.transient),
                                       command=self._command)
            warned: list[int] = []

            def _usr2(*_: Any) -> None:
                warned.append(1)
                scheduler.request_stop()

            previous = _on_usr2(_usr2)
            try:
                report = scheduler.run(self.run_ids)
            finally:
                if previous is not None:
                    signal.signal(signal.SIGUSR2, previous)
        if warned and callable(previous):
            previous(signal.SIGUSR2, None)  # submitit: checkpoint() and requeue this task
        return dict(report.outcomes)

    def _command(self, run_id: str) -> list[str]:
        from sslbench.runs.worker import worker_command

        return [*self.worker, run_id] if self.worker else worker_command(run_id)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """What submitit requeues after a timeout or preemption: this same task."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)

    def _resume(self, store: Any) -> None:
        """Put this task's interrupted or killed runs back in the queue (after a requeue)."""
        for run_id, record in store.runs_by_id(self.run_ids).items():
            if record.status in _RESUMABLE:
                store.requeue(run_id, statuses=_RESUMABLE,
                              attempt_limit=record.attempts + self.max_attempts)


def _on_usr2(handler: Any) -> Any:
    """Install ``handler`` for SIGUSR2; returns the previous handler (submitit's)."""
    if not hasattr(signal, "SIGUSR2"):  # pragma: no cover - Windows
        return None
    return signal.signal(signal.SIGUSR2, handler)


def task_groups(plan: Any) -> list[list[str]]:
    """The queue split into array tasks: each pretraining run with its evaluations; evaluations
    whose pretraining is not in the queue grouped by parent; baselines in one task."""
    queued = set(plan.queue)
    groups: dict[str, list[str]] = {}
    for run in plan.runs:
        if run.run_id not in queued:
            continue
        key = run.run_id if run.kind == "pretrain" else (run.parent_id or "baselines")
        groups.setdefault(key, []).append(run.run_id)
    return list(groups.values())


@contextlib.contextmanager
def _importable() -> Iterator[None]:
    """Make this sslbench importable by the task processes (submitit copies the environment)."""
    root = str(Path(__file__).resolve().parents[2])
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, old) if p)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def make_executor(backend: str, folder: Path, params: dict[str, Any], *,
                  max_num_timeout: int = 3) -> Any:
    """A submitit executor: ``slurm`` (sbatch) or ``submitit-local`` (this machine)."""
    _require_submitit()
    import submitit

    if backend == "slurm":
        if shutil.which("sbatch") is None:
            raise ConfigError("--backend slurm: sbatch is not on PATH (no Slurm here): use "
                              "--backend local, or submitit-local to try the Slurm path here")
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=max_num_timeout)
        converted = {_SLURM_PARAMS[k]: v for k, v in params.items() if k in _SLURM_PARAMS}
        if "mem_gb" in params:
            converted["mem"] = f"{params['mem_gb']}GB"
        executor.update_parameters(**converted)
        return executor
    if backend == "submitit-local":
        local_executor = submitit.LocalExecutor(folder=folder, max_num_timeout=max_num_timeout)
        local = {k: params[k] for k in ("timeout_min", "gpus_per_node", "signal_delay_s")
                 if k in params}
        local_executor.update_parameters(**local)
        return local_executor
    raise ConfigError(f"unknown --backend {backend!r}: use local, slurm or submitit-local")


def submit(plan: Any, store_url: str, home: str, executor: Any, *, max_attempts: int,
           transient: Sequence[str] = (), per_device: int = 1) -> list[Any]:
    """Submit the plan's queue as one job array; returns the submitit jobs."""
    groups = task_groups(plan)
    if not groups:
        return []
    tasks = [SweepTask(ids, store_url, home, max_attempts=max_attempts, transient=transient,
                       per_device=per_device) for ids in groups]
    with _importable():
        return list(executor.submit_array(tasks))
