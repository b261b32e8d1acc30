"""Beyond one machine: a sweep as a Slurm job array, through submitit.

Each array task is one pretraining run followed by its evaluations (:class:`SweepTask`). Inside
the task an ordinary :class:`~sslbench.runs.scheduler.LocalScheduler` runs them on the task's
GPUs (or one CPU worker), so claims, the device ledger, retries by failure class and heartbeats
work exactly as on a workstation, and two tasks -- or a task and a workstation sharing a
PostgreSQL store -- never run one run twice.

Each task owns its allocation (:func:`sslbench.runs.devices.allocation_pool`): its CPUs as the
worker's threads, exactly its GPUs, booked in the ledger under names that no other task on the
node uses, so tasks that Slurm starts together on one node train together. A task whose run did
not complete exits non-zero (Slurm records it FAILED); each run carries the id of the task that
runs it (a ``slurm:JOBID`` tag), which ``sslbench runs watch`` shows with the job's state.

Submission (:func:`submit_sweep`) writes nothing before sbatch accepted the job: the array is
submitted held, then the runs are queued, then it is released; a refusal is one line with
sbatch's message and the option to change, and the store is as it was. No secret is written: the
store URL goes into the task files without its password, which reaches the tasks through the
environment Slurm propagates (``SSLBENCH_DB_PASSWORD``, or the file ``SSLBENCH_DB_PASSWORD_FILE``
names), and the sweep folder's files are created readable by their owner only.

A task of one process that has seen its own runs through pulls the runs of its array that no
task has claimed yet (:mod:`sslbench.runs.pull`): each claim makes the task's job the run's last
``slurm:`` tag, and a run a sibling claimed is left to that sibling.

A run of several processes (a sweep's ``devices_per_run``) is one task group: its array task has
one Slurm task per process (one job array per task shape, :func:`task_arrays`; the ``#SBATCH``
lines from :func:`sslbench.runs.sbatch.task_shape`). Rank 0 owns its runs as above, the other
ranks follow its attempts (:mod:`sslbench.runs.taskgroup`).

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
import dataclasses
import io
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sslbench.db.models import RunStatus
from sslbench.db.values import JOB_TAG  # the tag that records a run's job: slurm:1234_0
from sslbench.errors import ConfigError
from sslbench.paths import environ

#: What a requeued task puts back in the queue: its runs that were stopped, not finished.
_RESUMABLE = (RunStatus.INTERRUPTED, RunStatus.KILLED, RunStatus.QUEUED)
#: Outcomes of a task that did its work (anything else: the task exits non-zero).
_DONE = (RunStatus.COMPLETED, RunStatus.PRUNED)


def slurm_job(tags: Sequence[str]) -> str | None:
    """The Slurm job of a run's latest submission or claim, from its tags."""
    found = [t[len(JOB_TAG):] for t in tags if t.startswith(JOB_TAG)]
    return found[-1] if found else None


def require_submitit() -> None:
    import importlib.util

    if importlib.util.find_spec("submitit") is None:
        raise ConfigError("the Slurm backend needs submitit: pip install 'sslbench[slurm]'")


class TaskFailed(RuntimeError):
    """Raised at the end of a task whose runs did not all complete: Slurm sees a failed task."""


class SweepTask:
    """One array task: see ``run_ids`` (a pretraining run, then its evaluations) through.

    It follows submitit's ``Checkpointable`` protocol (a ``checkpoint`` method returning the
    resubmission), without importing submitit where the task is only built. ``store_url``
    holds no password (it is pickled into the sweep folder); ``umask`` is the submitting
    user's, which the task's workers get back (the task files themselves are private).
    """

    def __init__(self, run_ids: Sequence[str], store_url: str, home: str, *,
                 max_attempts: int = 3, transient: Sequence[str] = (), per_device: int = 1,
                 worker: Sequence[str] | None = None, umask: int | None = None,
                 processes: Mapping[str, int] | None = None,
                 array: Sequence[Sequence[str]] = ()) -> None:
        self.run_ids = list(run_ids)  # with the runs it pulled (sslbench.runs.pull)
        self.store_url, self.home = store_url, home
        self.max_attempts, self.transient = max_attempts, tuple(transient)
        self.per_device = per_device
        self.worker = list(worker) if worker else None  # argv before the run id (tests)
        self.umask = umask
        self.processes = dict(processes or {})  # runs of several processes: one task group
        self.array = [list(ids) for ids in array]  # the array's tasks' runs, by index: to pull

    def __call__(self) -> dict[str, str]:
        from sslbench.db import Store
        from sslbench.runs.control import reap
        from sslbench.runs.policy import RetryPolicy
        from sslbench.runs.pull import ArrayTask, Pull
        from sslbench.runs.scheduler import ELSEWHERE, LocalScheduler

        os.environ["SSLBENCH_HOME"] = self.home
        group = self._group()
        with Store.open(self.store_url) as store:
            if group is not None and group.rank != 0:
                return self._follow(store, group)
            reap(store)
            task = ArrayTask.from_environment(os.environ)
            self._resume(store, (lambda _: False) if task is None else task.elsewhere)
            pool = self._pool(group)
            scheduler = LocalScheduler(
                store, pool, backend="slurm", install_signals=False,
                command=self._command, policy=RetryPolicy(self.max_attempts, self.transient),
                processes=self.processes, group=group,
                scheduler_id=group.scheduler_id() if group is not None else None,
                claim_tag=None if task is None else f"{JOB_TAG}{task.job}",
                elsewhere=None if task is None else task.elsewhere)
            pull = None
            if task is not None and group is None and len(getattr(self, "array", ())) > 1:
                pull = Pull(store, task, self.array, pool.total_slots, self.run_ids)
            warned: list[int] = []

            def _usr2(*_: Any) -> None:
                warned.append(1)
                scheduler.request_stop()

            def _term(signum: int, frame: Any) -> None:  # scancel: start nothing new
                if pull is not None:
                    pull.stop()
                if callable(previous_term):
                    previous_term(signum, frame)

            previous = _on_usr2(_usr2)
            previous_term = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, _term)
            try:
                with _umask(getattr(self, "umask", None)):  # None: pickled by an older sslbench
                    report = scheduler.run(list(self.run_ids), feed=pull)
            finally:
                signal.signal(signal.SIGTERM, previous_term)
                if previous is not None:
                    signal.signal(signal.SIGUSR2, previous)
            if warned and callable(previous):
                previous(signal.SIGUSR2, None)  # submitit: checkpoint() and requeue this task
            # A run another task claimed is that task's to answer for.
            failed = {r: s for r, s in report.outcomes.items() if s not in (*_DONE, ELSEWHERE)}
            if failed:
                raise TaskFailed("; ".join(
                    f"run {r} {s}" + (f": {_last_line(store.get_run(r).error)}"
                                      if s == RunStatus.FAILED else "")
                    for r, s in failed.items()))
        return dict(report.outcomes)

    def _group(self) -> Any:
        """This task's place in its task group (None: a task of one process)."""
        if max(getattr(self, "processes", {}).values(), default=1) == 1:  # older pickles: {}
            return None
        from sslbench.runs.taskgroup import RankGroup

        return RankGroup.from_environment()

    def _follow(self, store: Any, group: Any) -> dict[str, str]:
        """A rank other than 0: run this rank of each attempt rank 0 starts (see taskgroup)."""
        from sslbench.runs.taskgroup import follow
        from sslbench.runs.worker import attempt_log

        (run_id,) = self.processes
        pool = self._pool(group)  # this task's devices, all of them for its one process
        with _umask(self.umask):
            codes = follow(store, run_id, group, self._command(run_id), lambda attempt: (
                attempt_log(run_id, attempt).with_suffix(f".rank{group.rank}.log")),
                env=pool.worker_env(",".join(pool.devices)))
        return {run_id: f"rank {group.rank}: worker exit codes {codes}"}

    def _pool(self, group: Any = None) -> Any:
        """This Slurm allocation's devices; outside Slurm (submitit-local) this machine's.
        Rank 0 of a CPU task group books one slot for each task of its node."""
        from sslbench.runs.devices import allocation_pool, build_pool, visible_cuda_devices

        pool = allocation_pool(os.environ, self.per_device)
        if pool is not None and group is not None and pool.is_cpu:
            return dataclasses.replace(pool, per_device=group.per_node,
                                       cores=pool.cores * group.per_node)
        if pool is not None:
            return pool
        count = visible_cuda_devices()
        return build_pool(",".join(str(i) for i in range(count)) if count else None,
                          per_device=self.per_device, workers=None if count else 1,
                          cuda_count=count)

    def _command(self, run_id: str) -> list[str]:
        from sslbench.runs.worker import worker_command

        return [*self.worker, run_id] if self.worker else worker_command(run_id)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """What submitit requeues after a timeout or preemption: this same task."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)

    def _resume(self, store: Any, elsewhere: Callable[[Any], bool]) -> None:
        """Put this task's interrupted or killed runs back in the queue (after a requeue), but
        not those another task of the array claimed (``elsewhere``): that task resumes them."""
        for run_id, record in store.runs_by_id(self.run_ids).items():
            if record.status in _RESUMABLE and not elsewhere(record):
                store.requeue(run_id, statuses=_RESUMABLE,
                              attempt_limit=record.attempts + self.max_attempts)


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no error recorded"


def _on_usr2(handler: Any) -> Any:
    """Install ``handler`` for SIGUSR2; returns the previous handler (submitit's)."""
    if not hasattr(signal, "SIGUSR2"):  # pragma: no cover - Windows
        return None
    return signal.signal(signal.SIGUSR2, handler)


@contextlib.contextmanager
def _umask(mask: int | None) -> Iterator[None]:
    previous = os.umask(mask) if mask is not None else None
    try:
        yield
    finally:
        if previous is not None:
            os.umask(previous)


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


def task_arrays(plan: Any) -> list[tuple[int, list[list[str]]]]:
    """:func:`task_groups` by the processes of their runs, fewest first: one job array per
    task shape (each task of an array has as many Slurm tasks as its run has processes)."""
    arrays: dict[int, list[list[str]]] = {}
    for group in task_groups(plan):
        arrays.setdefault(max(plan.processes.get(r, 1) for r in group), []).append(group)
    return sorted(arrays.items())


def _shape(executor: Any, options: Mapping[str, Any], processes: int) -> None:
    """Set ``executor`` up for task groups of ``processes`` processes."""
    import submitit

    if isinstance(executor, submitit.SlurmExecutor):
        from sslbench.runs.sbatch import task_shape

        executor.update_parameters(**task_shape(options, processes).parameters(options))
    else:  # submitit's LocalExecutor: one node
        executor.update_parameters(tasks_per_node=processes)


@contextlib.contextmanager
def _importable() -> Iterator[None]:
    """Make this sslbench importable by the task processes (submitit copies the environment)."""
    root = str(Path(__file__).resolve().parents[2])
    with environ({"PYTHONPATH": os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH")) if p)}):
        yield


# ------------------------------------------------------------------------------ submission

def make_executor(backend: str, folder: Path, options: Mapping[str, Any], *,
                  max_num_timeout: int = 3, hold: bool = False,
                  processes: Iterable[int] = ()) -> Any:
    """A submitit executor: ``slurm`` (sbatch, with the checked ``[slurm]`` ``options``) or
    ``submitit-local`` (this machine). Checks what only the cluster can tell first: among it,
    that task groups of each of ``processes`` (the runs' process counts) fit."""
    require_submitit()
    import submitit

    if backend == "slurm":
        if shutil.which("sbatch") is None:
            raise ConfigError("--backend slurm: sbatch is not on PATH (no Slurm here): use "
                              "--backend local, or submitit-local to try the Slurm path here")
        from sslbench.runs.sbatch import check_cluster, executor_parameters

        check_cluster(options, processes)
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=max_num_timeout)
        executor.update_parameters(**executor_parameters(options, hold=hold))
        return executor
    if backend == "submitit-local":
        local_executor = submitit.LocalExecutor(folder=folder, max_num_timeout=max_num_timeout)
        local = {k: options[k] for k in ("gpus_per_node", "signal_delay_s") if k in options}
        if "time" in options:
            local["timeout_min"] = options["time"]
        local_executor.update_parameters(**local)
        return local_executor
    raise ConfigError(f"unknown --backend {backend!r}: use local, slurm or submitit-local")


@contextlib.contextmanager
def _private_submission(folder: Path, secret: str | None) -> Iterator[None]:
    """Around sbatch: files created owner-only (the task files, and through Slurm's
    SLURM_UMASK the tasks' logs), the password in sbatch's environment (Slurm hands it to the
    tasks) rather than in any file, and a refusal left to the caller to report (submitit
    would also print sbatch's stderr). A refused submission's files are removed."""
    from sslbench.db.engine import PASSWORD_ENV

    top = folder
    while not top.parent.exists():
        top = top.parent
    existed = top.exists()
    before = set(top.rglob("*")) if existed else set()
    previous = os.umask(0o077)
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.chmod(0o700)  # a folder of an older sslbench, or made by hand
        with environ({PASSWORD_ENV: secret} if secret else {}), \
                contextlib.redirect_stderr(io.StringIO()):
            yield
    except BaseException:
        new = (set(top.rglob("*")) - before) | (set() if existed else {top})
        for path in sorted(new, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
        raise
    finally:
        os.umask(previous)


def submit(plan: Any, store_url: str, home: str, executor: Any, *, max_attempts: int,
           transient: Sequence[str] = (), per_device: int = 1,
           options: Mapping[str, Any] | None = None) -> list[Any]:
    """Submit the plan's queue as one job array per task shape (:func:`task_arrays`, with the
    ``[slurm]`` ``options``); returns the submitit jobs in :func:`task_arrays`' order. sbatch's
    refusal is a one-line ConfigError, and leaves no file and no job behind."""
    arrays = task_arrays(plan)
    if not arrays:
        return []
    from sslbench.db.engine import split_password

    url, secret = split_password(store_url)
    umask = os.umask(0o077)
    os.umask(umask)
    from submitit.core.utils import FailedJobError

    jobs: list[Any] = []
    try:
        with _private_submission(Path(executor.folder), secret), _importable():
            for processes, groups in arrays:
                if processes > 1 or len(arrays) > 1:
                    _shape(executor, options or {}, processes)
                jobs += executor.submit_array([SweepTask(
                    ids, url, home, max_attempts=max_attempts, transient=transient,
                    per_device=per_device, umask=umask,
                    processes={r: plan.processes[r] for r in ids if r in plan.processes},
                    array=groups if processes == 1 else ())  # tasks of one process pull
                    for ids in groups])
            return jobs
    except FailedJobError as err:
        from sslbench.runs.sbatch import refusal

        if jobs:
            _scontrol("cancel", jobs)
        raise ConfigError(refusal(str(err))) from None


def _scontrol(verb: str, jobs: Sequence[Any]) -> None:
    ids = sorted({str(job.job_id).split("_")[0] for job in jobs})
    command = ["scancel", *ids] if verb == "cancel" else ["scontrol", verb, ",".join(ids)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def submit_sweep(plan: Any, store: Any, executor: Any, *, held: bool,
                 queue: Callable[[], list[str]], max_attempts: int,
                 transient: Sequence[str] = (), per_device: int = 1,
                 options: Mapping[str, Any] | None = None) -> list[Any]:
    """Submit ``plan`` and ``queue()`` its runs in the store: with a ``held`` executor (sbatch)
    the array first, so a refusal leaves the store untouched, then the runs, then the release;
    otherwise (submitit-local, which cannot hold) the runs first. Each run is tagged with its
    task's job id. Returns the jobs."""
    from sslbench import paths

    if not held:
        queue()
    jobs = submit(plan, store.url, str(paths.home()), executor, max_attempts=max_attempts,
                  transient=transient, per_device=per_device, options=options)
    try:
        if held:
            queue()
        tag_jobs(store, plan, jobs)
    except BaseException:
        if held:
            _scontrol("cancel", jobs)
        raise
    if held and jobs:
        _scontrol("release", jobs)
    return jobs


def tag_jobs(store: Any, plan: Any, jobs: Sequence[Any]) -> None:
    """Record each run's job: a ``slurm:JOBID`` tag (the latest one is its current job)."""
    groups = [group for _, shaped in task_arrays(plan) for group in shaped]
    for job, group in zip(jobs, groups):
        for run_id in group:
            store.add_tags(run_id, [f"{JOB_TAG}{job.job_id}"])


def job_states(job_ids: Sequence[str]) -> dict[str, str] | None:
    """Slurm's state of each job (``1234_0`` -> ``RUNNING``) that the controller still knows
    (squeue; a finished job for MinJobAge): a job left out has ended longer ago. None when
    Slurm cannot be asked (no squeue here, the controller unreachable)."""
    wanted = sorted({j.split("_")[0] for j in job_ids})
    if not wanted:
        return {}
    if shutil.which("squeue") is None:
        return None
    found = _squeue(wanted)
    if found is None and len(wanted) > 1:  # one id the controller forgot fails them all
        single = [_squeue([i]) for i in wanted]
        return None if any(s is None for s in single) else \
            {k: v for states in single if states for k, v in states.items()}
    return found


def _squeue(ids: Sequence[str]) -> dict[str, str] | None:
    try:
        found = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j",
                                ",".join(ids)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if found.returncode != 0:
        # A single id the controller no longer knows is an answer: that job has ended.
        return {} if len(ids) == 1 and "Invalid job id" in found.stderr else None
    pairs = (line.split("|", 1) for line in found.stdout.splitlines() if "|" in line)
    return {job: state for job, state in pairs}
