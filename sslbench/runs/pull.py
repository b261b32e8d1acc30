"""Array tasks that pull: a task of one process that has seen its own runs through takes on runs
of its job array that no task has claimed yet, so a second wave of runs starts as soon as a
task's CPU frees, not when Slurm gets round to starting the next task (issue #15).

Ownership stays the store's: a pulled run is started through the same atomic claim as any other
(:meth:`sslbench.db.scheduling.SchedulingMixin.claim_run`), which also makes the claiming task's
job the run's last ``slurm:`` tag in the same transaction. So a run has one owner, its latest job
tag names the task that claimed it (what ``sslbench runs watch`` shows), and every task of the
array can tell a run that a sibling took (:meth:`ArrayTask.elsewhere`): it neither waits for it,
nor resumes it, nor answers for its outcome -- the task that ran it does. A task whose runs were
all taken ends at once, with exit 0.

A task pulls only runs of its own job array (one submission, one task shape: the same CPUs and
GPUs), a whole task group (a pretraining run with its evaluations) at a time and only while
that group's first run is queued under its own task's job (nobody claimed it yet). It stops
pulling for good once one of its runs did not complete, or when it is asked to stop (Slurm's
SIGTERM on scancel, the USR2 warning), so a cancelled or failing task starts nothing new.
Task groups of several processes never pull. Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sslbench.db.models import RunStatus
from sslbench.runs.scheduler import ELSEWHERE
from sslbench.runs.slurm import slurm_job

#: Outcomes after which a task goes on pulling.
_GOOD = (RunStatus.COMPLETED, RunStatus.PRUNED, ELSEWHERE)


@dataclass(frozen=True)
class ArrayTask:
    """This task's place in its Slurm job array: ``array`` the array's job id, ``index`` its
    array task id (submitit gives the array's i-th task the i-th submitted callable)."""

    array: str
    index: int

    @property
    def job(self) -> str:
        return f"{self.array}_{self.index}"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> ArrayTask | None:
        """The task of a submitit job array on Slurm, or None (a single job, submitit-local)."""
        if environ.get("SUBMITIT_EXECUTOR") != "slurm" or not environ.get("SLURM_ARRAY_JOB_ID"):
            return None
        return cls(environ["SLURM_ARRAY_JOB_ID"], int(environ["SLURM_ARRAY_TASK_ID"]))

    def elsewhere(self, record: Any) -> bool:
        """Whether another task of this array claimed the run: it left the queue under that
        task's job (a queued run's tag may name the task it was submitted to, unclaimed)."""
        job = slurm_job(record.tags)
        return (record.status != RunStatus.QUEUED and job is not None and job != self.job
                and job.startswith(f"{self.array}_"))


class Pull:
    """A scheduler :class:`~sslbench.runs.scheduler.Feed`: when the task has a free slot, the
    next task group of the array whose first run no task has claimed yet. ``groups`` are the
    array's task groups by array index; the ids of pulled runs are appended to ``taken`` (the
    task's own list, so that a requeued task resumes them too)."""

    def __init__(self, store: Any, task: ArrayTask, groups: Sequence[Sequence[str]],
                 capacity: int, taken: list[str]) -> None:
        self.store, self.task, self.capacity, self.taken = store, task, capacity, taken
        self._left = [(i, list(g)) for i, g in enumerate(groups) if i != task.index and g]
        self._done = not self._left

    @property
    def exhausted(self) -> bool:
        return self._done

    def stop(self) -> None:
        """Pull nothing more (a signal handler may call this)."""
        self._done = True

    def refill(self, pending: list[str]) -> None:
        if self._done or len(pending) >= self.capacity:
            return
        heads = self.store.runs_by_id([group[0] for _, group in self._left])
        while self._left:
            index, group = self._left.pop(0)
            head = heads.get(group[0])
            if (head is not None and head.status == RunStatus.QUEUED
                    and slurm_job(head.tags) == ArrayTask(self.task.array, index).job):
                fresh = [r for r in group if r not in pending]
                pending.extend(fresh)
                self.taken.extend(r for r in fresh if r not in self.taken)
                return
        self._done = True

    def ended(self, run_id: str, outcome: str) -> None:
        if outcome not in _GOOD:
            self._done = True
