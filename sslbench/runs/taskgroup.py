"""One run across the tasks of a Slurm task group: rank 0 owns it, the other ranks follow.

A sweep run of n processes on Slurm is one array task of n Slurm tasks (``nodes`` x
``ntasks-per-node``, :func:`sslbench.runs.sbatch.task_shape`), each started by submitit's
multi-task support: every task unpickles the same :class:`~sslbench.runs.slurm.SweepTask` and
learns from Slurm (``submitit.JobEnvironment``) its rank, the world size, its rank on its node and
the job's first host, the master (:class:`RankGroup`).

Rank 0 alone owns the group's runs, exactly as a task of one process does: it reaps, puts
interrupted runs back in the queue, and runs the local scheduler, which claims each attempt, books
the node's devices in the ledger and starts the rank-0 worker with the group's environment
(RANK=0, WORLD_SIZE=n, MASTER_ADDR, MASTER_PORT) instead of under torchrun. Its scheduler id is
this job's (:meth:`RankGroup.scheduler_id`), so the other ranks know whose claims to follow.

Every other rank only reads the store (:func:`follow`): when rank 0's scheduler has claimed an
attempt of the run, it starts its own worker of that attempt (its rank, the same master), whose
writes go nowhere (``sslbench.train.distributed.NullStore``); when the attempt is over it makes
sure its worker ended too; when rank 0's scheduler has ended, it returns. So there is one owner,
one writer and one heartbeat per run, and retries by failure class work as everywhere else.

Stops and requeues go through rank 0: Slurm's warning (SIGUSR2) reaches every task; rank 0 stops
its scheduler, whose SIGTERM makes the rank-0 worker ask the whole group to stop at the next
sync point (a collective: every rank stops after the same step, rank 0 saves it), and then
requeues the job through submitit, which only rank 0 does; the others return once rank 0's
scheduler has ended. A rank that fails fails the group: srun's ``--kill-on-bad-exit``.

Devices: every task of a GPU group sees its node's GPUs (Slurm's ``CUDA_VISIBLE_DEVICES`` for the
step) and trains on ``cuda:LOCAL_RANK``; rank 0's scheduler books its node's GPUs in the ledger
(their ``SLURM_STEP_GPUS`` names) and gives its worker the same list, so rank 0 is on the first.
The GPUs of the group's other nodes are Slurm's to keep apart; they are not in the ledger. On CPU
each rank gets its task's ``cpus_per_task`` as its threads.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sslbench.db.models import RunStatus

#: Seconds a follower's worker may outlive its attempt (it ends by itself at the group's stop;
#: one stuck in a collective whose peer died would wait for gloo's half-hour timeout).
GRACE_S = 15.0


def master_port(job_id: str, attempt: int) -> int:
    """The group's rendezvous port: fixed by the job and the attempt (every rank computes the
    same one, with no exchange), in 10000-29999, below Linux's ephemeral ports (32768+), and a
    new one for each attempt, so a retry never meets the last attempt's socket."""
    digits = "".join(c for c in job_id if c.isdigit()) or "0"
    return 10000 + (int(digits) % 2000) * 10 + attempt % 10


@dataclass(frozen=True)
class RankGroup:
    """This task's place in its task group, as Slurm (through submitit) tells it."""

    rank: int
    size: int
    local_rank: int
    nodes: int
    master: str
    job_id: str
    restarts: int = 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> RankGroup:
        """From submitit's ``JobEnvironment`` (Slurm's SLURM_PROCID, SLURM_NTASKS,
        SLURM_LOCALID, SLURM_JOB_NUM_NODES, SLURM_JOB_NODELIST, SLURM_JOB_ID)."""
        import submitit

        environ = os.environ if environ is None else environ
        job = submitit.JobEnvironment()
        restarts = environ.get("SLURM_RESTART_COUNT", "0")
        return cls(job.global_rank, job.num_tasks, job.local_rank, job.num_nodes,
                   job.hostnames[0], str(job.job_id), int(restarts) if restarts.isdigit() else 0)

    @property
    def per_node(self) -> int:
        return self.size // self.nodes

    def scheduler_id(self) -> str:
        """Rank 0's scheduler in this start of the job (a requeued job gets a new one)."""
        return f"slurm:{self.master}:job{self.job_id}.{self.restarts}"

    def env(self, attempt: int, rank: int | None = None, local_rank: int | None = None
            ) -> dict[str, str]:
        """A worker's torch.distributed environment (``env://``) for ``attempt``."""
        rank = self.rank if rank is None else rank
        return {"RANK": str(rank), "WORLD_SIZE": str(self.size),
                "LOCAL_RANK": str(self.local_rank if local_rank is None else local_rank),
                "LOCAL_WORLD_SIZE": str(self.per_node), "MASTER_ADDR": self.master,
                "MASTER_PORT": str(master_port(self.job_id, attempt))}


def _leader(store: Any, scheduler_id: str) -> Any:
    return next((s for s in store.schedulers(running_only=False)
                 if s.scheduler_id == scheduler_id), None)


def _claimed(store: Any, run_id: str, scheduler_id: str) -> int | None:
    """The attempt of ``run_id`` that ``scheduler_id`` claimed and that is running now.

    The attempt's number and its scheduler come from one row: the run's attempt count, read a
    moment before, may predate a claim made in between (another scheduler's attempt is never
    taken for this one's)."""
    if store.get_run(run_id).status != RunStatus.RUNNING:
        return None
    attempts = store.attempt_details(run_id)
    if not attempts or attempts[-1]["scheduler_id"] != scheduler_id:
        return None
    return int(attempts[-1]["attempt"])


def follow(store: Any, run_id: str, group: RankGroup, command: list[str],
           log: Callable[[int], Any], *, env: Mapping[str, str] | None = None,
           poll_s: float = 0.5) -> list[int]:
    """Rank ``group.rank`` (not 0) of ``run_id``: join each attempt rank 0's scheduler starts
    (its workers get ``env`` too: devices and threads, as rank 0's scheduler gives its own),
    until that scheduler ends; returns the exit codes of this rank's workers."""
    from sslbench.runs.worker import spawn, worker_environ

    leader = group.scheduler_id()
    codes: list[int] = []
    joined: set[int] = set()
    while True:
        found = _leader(store, leader)
        if found is not None and found.ended_at is not None:
            return codes
        attempt = _claimed(store, run_id, leader)
        if attempt is not None and attempt not in joined:
            joined.add(attempt)
            proc = spawn(command, worker_environ(store.url, {
                **(env or {}), **group.env(attempt), "SSLBENCH_ATTEMPT": str(attempt)}),
                log(attempt))
            codes.append(_see_through(store, run_id, leader, attempt, proc, poll_s))
        time.sleep(poll_s)


def _see_through(store: Any, run_id: str, leader: str, attempt: int, proc: Any,
                 poll_s: float) -> int:
    """Wait for this rank's worker of ``attempt``; kill it if it outlives the attempt."""
    over: float | None = None
    while proc.poll() is None:
        if over is None and _claimed(store, run_id, leader) != attempt:
            over = time.monotonic()
        if over is not None and time.monotonic() - over > GRACE_S:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            return int(proc.wait())
        time.sleep(poll_s)
    return int(proc.returncode)
