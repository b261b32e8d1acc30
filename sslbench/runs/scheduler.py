"""The local scheduler: it owns the devices and sees a queue of runs through to the end.

One loop, readable top to bottom (:meth:`LocalScheduler.run`):

1. handle every worker that exited: record its exit code, free its slots, and decide by
   failure class whether the run gets another attempt (:mod:`sslbench.runs.policy`);
2. heartbeat (so the reaper of another process knows this scheduler lives), read the stop flag
   that ``sslbench runs stop`` sets, and every few beats reap dead runs of dead schedulers;
3. start queued runs on free slots: claim (an atomic compare-and-set in the store, together with
   the slot reservation), spawn ``python -m sslbench runs exec RUN_ID`` in its own session with
   ``CUDA_VISIBLE_DEVICES`` and thread counts from the pool, attach its pid and start time.

A run of n processes (a sweep's ``devices_per_run``, or the count recorded at its first start,
which every later attempt keeps) waits for n free CPU slots or n idle GPUs, reserves them all in
the ledger and is started by torchrun (:func:`worker.distributed_command`: gloo on CPU, NCCL on
CUDA, as ``sslbench.train.distributed.setup`` picks). When one of its processes dies, torchrun's
agent stops the others and the attempt ends as 'killed' (retried, or resumed by the next sweep).
In a Slurm task group (:mod:`sslbench.runs.taskgroup`) the scheduler is rank 0's: it books this
node's share of the run's devices and starts the rank-0 worker itself; the group's other tasks
start the other ranks. A run that does not fit yet drains: no run after it in the queue starts
until enough slots have freed, so a stream of 1-slot runs cannot starve it.

A :class:`Feed` may add runs while the queue drains: ``sslbench tune`` asks its study for the
next trial each time one ends, so trials run as the slots free up. Evaluations wait for their
pretraining run. A run claimed by another scheduler (or a plain
``sslbench train``) is waited for, not run twice. On SIGTERM/SIGINT (or the store's stop flag)
the scheduler starts nothing new and forwards SIGTERM to its workers, which checkpoint and end
as 'interrupted'; a second Ctrl-C kills them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sslbench.db.models import TERMINAL_STATUSES, RunStatus
from sslbench.db.scheduling import DEFAULT_ATTEMPT_LIMIT
from sslbench.runs import worker
from sslbench.runs.devices import DevicePool, pick_places, pick_slots
from sslbench.runs.plan import launch_processes
from sslbench.runs.policy import Decision, RetryPolicy, decide, describe_exit

#: The outcome of a run this scheduler leaves to another that claimed it (``elsewhere``).
ELSEWHERE = "elsewhere"


@dataclass
class _Child:
    run_id: str
    attempt: int
    proc: subprocess.Popen
    device: str
    slots: list[int]
    log_path: Path
    started: float
    processes: int = 1
    width: int = 1  # ledger slots it holds

    def process_ids(self, sig: signal.Signals) -> list[int]:
        """The processes to send ``sig``: the worker; under torchrun its processes (sessions of
        their own) and, for SIGKILL or while they are not started, the agent. A SIGTERM spares
        a started group's agent, which would kill its processes 30 s later: they take the time
        they need to reach a sync point and checkpoint, as a single worker does."""
        if self.processes == 1:
            return [self.proc.pid]
        ranks = worker.child_pids(self.proc.pid)
        return ranks + [self.proc.pid] if sig == signal.SIGKILL or not ranks else ranks


@dataclass
class SchedulerReport:
    """What one scheduler invocation did. ``outcomes``: run id -> final status (or 'blocked',
    'pending' when stopped before it ran)."""

    outcomes: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    launched: int = 0
    retried: int = 0
    wall_s: float = 0.0
    bookkeeping_s: float = 0.0  # time spent claiming, spawning, recording (not waiting)
    busy_s: float = 0.0  # summed worker lifetimes, spawn to exit seen
    stopped: bool = False

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for status in self.outcomes.values():
            out[status] = out.get(status, 0) + 1
        return out


class Feed(Protocol):
    """A source of runs beyond the first queue (a tuning study's trials)."""

    def refill(self, pending: list[str]) -> None:
        """Append the ids of runs to start now (queued in the store) to ``pending``."""

    def ended(self, run_id: str, outcome: str) -> None:
        """A run this scheduler saw through has its final ``outcome`` (a status, 'blocked')."""

    @property
    def exhausted(self) -> bool:
        """No run will be added any more (refill is no longer called)."""


def new_scheduler_id(backend: str = "local") -> str:
    return f"{backend}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LocalScheduler:
    """Runs a queue of stored runs on a :class:`DevicePool`. One instance per ``run`` call."""

    def __init__(self, store: Any, pool: DevicePool, *, policy: RetryPolicy | None = None,
                 command: Callable[[str], list[str]] = worker.worker_command,
                 echo: Callable[[str], None] | None = None, poll_s: float = 0.05,
                 beat_s: float = 1.0, reap_every: int = 10, backend: str = "local",
                 install_signals: bool = True, processes: Mapping[str, int] | None = None,
                 group: Any = None, scheduler_id: str | None = None,
                 claim_tag: str | None = None,
                 elsewhere: Callable[[Any], bool] | None = None) -> None:
        self.store, self.pool = store, pool
        self.policy = policy or RetryPolicy()
        self.command, self.echo = command, echo or (lambda _msg: None)
        self.poll_s, self.beat_s, self.reap_every = poll_s, beat_s, reap_every
        self.install_signals = install_signals
        self.processes = dict(processes or {})  # planned processes of runs that need several
        # In a Slurm task group (sslbench.runs.taskgroup.RankGroup) this scheduler is rank 0's:
        # a run of n processes is started as its rank-0 worker, on this node's share of them.
        self.group = group
        self.scheduler_id = scheduler_id or new_scheduler_id(backend)
        self.backend = backend
        # A Slurm array task: the tag each claim makes the run's last (its job), and which runs
        # a sibling task claimed -- left to it, not waited for (sslbench.runs.pull).
        self.claim_tag, self.elsewhere = claim_tag, elsewhere
        self.stopping = False
        self._kill = False
        self._forwarded: signal.Signals | None = None  # the signal passed on to the workers
        self._children: dict[str, _Child] = {}
        self._exclusive: set[str] = set()
        self._report = SchedulerReport()
        self._feed: Feed | None = None

    # ------------------------------------------------------------------------------ control

    def request_stop(self) -> None:
        """Stop starting runs and ask the workers to checkpoint (idempotent)."""
        self.stopping = True

    def _on_signal(self, signum: int, _frame: Any) -> None:
        """SIGTERM/SIGINT: stop gracefully; a second Ctrl-C kills the workers."""
        if self.stopping and signum == signal.SIGINT:
            self._kill = True
        self.request_stop()

    def _install(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        if not self.install_signals:
            return previous
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread
                pass
        return previous

    # --------------------------------------------------------------------------------- loop

    def run(self, queue: list[str], feed: Feed | None = None) -> SchedulerReport:
        """See ``queue`` (run ids, pretraining first) and what ``feed`` adds through; returns
        the report."""
        t0 = time.perf_counter()
        pending = list(dict.fromkeys(queue))
        self._feed = feed
        self.store.register_scheduler(self.scheduler_id, backend=self.backend,
                                      slots=self.pool.describe())
        previous = self._install()
        beats, last_beat, dirty = 0, 0.0, True
        try:
            while pending or self._children or self._fed(pending):
                if self._collect(pending):
                    dirty = True
                now = time.monotonic()
                if now - last_beat >= self.beat_s:
                    last_beat, beats, dirty = now, beats + 1, True
                    self._beat(reap_now=beats % self.reap_every == 0)
                if self.stopping:
                    self._forward_stop()
                    if not self._children:
                        break
                elif dirty:
                    dirty = False
                    self._fed(pending)
                    self._launch(pending)
                time.sleep(self.poll_s)
        finally:
            self._shutdown(previous)
        for run_id in pending:
            self._report.outcomes.setdefault(run_id, "pending")
        self._report.stopped = self.stopping
        self._report.wall_s = time.perf_counter() - t0
        return self._report

    def _fed(self, pending: list[str]) -> bool:
        """Let the feed add runs (not while stopping); returns whether it may add more."""
        if self._feed is None or self.stopping or self._feed.exhausted:
            return False
        before = len(pending)
        self._feed.refill(pending)
        return len(pending) > before or not self._feed.exhausted

    def _settle(self, pending: list[str], run_id: str, outcome: str, reason: str | None) -> None:
        """``run_id`` is over for this scheduler: record its outcome and tell the feed."""
        pending.remove(run_id)
        self._report.outcomes[run_id] = outcome
        if reason is not None:
            self._report.reasons[run_id] = reason
        if self._feed is not None:
            self._feed.ended(run_id, outcome)

    def _beat(self, *, reap_now: bool) -> None:
        """Heartbeat, stop flag, and now and then the reaper; a store that is briefly
        unreachable must not bring the workers down, so its errors only skip this beat."""
        from sslbench.errors import SSLBenchError

        try:
            if self.store.scheduler_beat(self.scheduler_id):
                self.request_stop()
            if reap_now:
                from sslbench.runs.control import reap

                reap(self.store)
        except SSLBenchError as err:
            self.echo(f"warning: heartbeat skipped ({err})")

    def _shutdown(self, previous: dict[int, Any]) -> None:
        try:
            if self._children:  # an exception in the loop: leave no worker unattended
                self._kill = True
                self._forward_stop()
                for child in list(self._children.values()):
                    child.proc.wait()
                    try:
                        self.store.record_exit(child.run_id, child.attempt,
                                               child.proc.returncode)
                        self._record_unrecorded_end(child, child.proc.returncode)
                    except Exception:  # the store may be what failed: the reaper will see it
                        pass
            self.store.end_scheduler(self.scheduler_id)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _forward_stop(self) -> None:
        sig = signal.SIGKILL if self._kill else signal.SIGTERM
        if self._forwarded == sig:
            return
        for child in self._children.values():
            for pid in child.process_ids(sig):
                try:
                    os.killpg(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        self._forwarded = sig

    # ------------------------------------------------------------------------------ launch

    def _busy(self) -> bool:
        return sum(c.width for c in self._children.values()) >= self.pool.total_slots

    def _launch(self, pending: list[str]) -> None:
        if self._busy():
            return
        records = self.store.runs_by_id(pending)
        ordered = sorted(pending, key=lambda r: r not in self._exclusive)  # OOM retries first
        draining = False
        for run_id in ordered:
            record = records.get(run_id)
            if run_id in self._children:
                continue
            if record is not None and self.elsewhere is not None and self.elsewhere(record):
                self._settle(pending, run_id, ELSEWHERE, "claimed by another task")
                continue
            if record is None or record.status in TERMINAL_STATUSES:
                self._finish_foreign(pending, run_id, record)
                continue
            if (record.status != RunStatus.QUEUED
                    or not self._parent_ready(record, records, pending)):
                continue
            if record.attempts >= (record.attempt_limit or DEFAULT_ATTEMPT_LIMIT):
                self._settle(pending, run_id, RunStatus.QUEUED, f"out of attempts "
                             f"({record.attempts}): re-run the sweep to give it more")
                continue
            processes = launch_processes(record.numerics, self.processes.get(run_id, 1))
            if self._here(processes) > self.pool.max_devices_per_run:
                self._settle(pending, run_id, RunStatus.QUEUED, f"needs {processes} devices, "
                             f"this scheduler has {self.pool.max_devices_per_run}")
                continue
            exclusive = run_id in self._exclusive and processes == 1
            if draining and not exclusive:
                break
            placed = self._start(run_id, exclusive, processes)
            if placed is None and (exclusive or processes > 1):
                draining = True  # let slots empty out for it (an out-of-memory retry, n devices)
            if self._busy():
                return

    def _here(self, processes: int) -> int:
        """The processes of a run that this node starts (in a task group: its share)."""
        return processes if self.group is None or processes == 1 else self.group.per_node

    def _parent_ready(self, record: Any, records: dict[str, Any], pending: list[str]) -> bool:
        if record.kind != "eval" or record.parent_id is None:
            return True
        parent = records.get(record.parent_id) or self.store.get_run(record.parent_id)
        if parent.status == RunStatus.COMPLETED:
            return True
        if parent.status in TERMINAL_STATUSES and parent.run_id not in pending:
            self._settle(pending, record.run_id, "blocked",
                         f"its pretraining run {parent.run_id} is {parent.status}")
        return False

    def _finish_foreign(self, pending: list[str], run_id: str, record: Any) -> None:
        """A run that ended without this scheduler's decision (another process ran it)."""
        self._settle(pending, run_id, record.status if record is not None else "missing", None)

    def _place(self, exclusive: bool, processes: int
               ) -> tuple[str, list[int], list[tuple[str, int]]] | None:
        """(device(s) for the attempt, slots on it, (device, slot) places) or None."""
        reserved = self.store.reserved_slots()
        if processes > 1:
            places = pick_places(self.pool, reserved, processes)
            if places is None:
                return None
            return ",".join(dict.fromkeys(d for d, _ in places)), [], places
        choice = pick_slots(self.pool, reserved, exclusive=exclusive)
        return None if choice is None else (choice[0], choice[1], [])

    def _start(self, run_id: str, exclusive: bool, processes: int = 1) -> _Child | None:
        t0 = time.perf_counter()
        placed = self._place(exclusive, self._here(processes))
        if placed is None:
            return None
        device, slots, places = placed
        key = self.pool.ledger_key  # the ledger's names for the pool's devices
        attempt = self.store.claim_run(run_id, scheduler_id=self.scheduler_id,
                                       device=key(device), slots=slots, log_path=None,
                                       places=[(key(d), s) for d, s in places],
                                       tag=self.claim_tag)
        if attempt is None:  # someone else claimed it, or took the slot first
            return None
        log_path = worker.attempt_log(run_id, attempt)
        env = worker.worker_environ(self.store.url, {
            **self.pool.worker_env(device), "SSLBENCH_SCHEDULER": self.scheduler_id,
            "SSLBENCH_ATTEMPT": str(attempt)})
        command = self.command(run_id)
        if processes > 1 and self.group is not None:
            env.update(self.group.env(attempt))  # the other ranks start their own workers
        elif processes > 1:
            command = worker.distributed_command(command, processes)
        try:
            proc = worker.spawn(command, env, log_path)
        except OSError as err:
            self.store.end_attempt(run_id, attempt, RunStatus.FAILED,
                                   error=f"cannot start the worker: {err}", failure_class="error")
            self.store.release(run_id)
            raise
        self.store.attach_process(run_id, attempt, proc.pid, log_path=str(log_path))
        child = _Child(run_id, attempt, proc, device, slots, log_path, time.monotonic(),
                       processes if self.group is None else 1, len(slots) + len(places))
        self._children[run_id] = child
        self._exclusive.discard(run_id)
        self._report.launched += 1
        self._report.bookkeeping_s += time.perf_counter() - t0
        where = "cpu" if self.pool.is_cpu else f"cuda {device}"
        self.echo(f"start  {run_id} attempt {attempt} on {where}"
                  f"{f' ({processes} processes)' if processes > 1 else ''}"
                  f"{' (alone: out-of-memory retry)' if exclusive else ''}")
        return child

    # ------------------------------------------------------------------------------ collect

    def _collect(self, pending: list[str]) -> bool:
        """Handle every worker that exited; returns whether any did."""
        done = [c for c in self._children.values() if c.proc.poll() is not None]
        for child in done:
            t0 = time.perf_counter()
            del self._children[child.run_id]
            self._report.busy_s += time.monotonic() - child.started
            decision = self._after_exit(child)
            if decision.action in ("retry", "retry-exclusive"):
                self._report.retried += 1
                if decision.action == "retry-exclusive":
                    self._exclusive.add(child.run_id)
            else:
                self._settle(pending, child.run_id, self.store.get_run(child.run_id).status,
                             decision.reason)
            self._report.bookkeeping_s += time.perf_counter() - t0
            self.echo(f"end    {child.run_id} attempt {child.attempt}: "
                      f"{self._report.outcomes.get(child.run_id, 'retrying')} "
                      f"({decision.reason}; {time.monotonic() - child.started:.1f} s)")
        return bool(done)

    def _after_exit(self, child: _Child) -> Decision:
        code = child.proc.returncode
        self.store.record_exit(child.run_id, child.attempt, code)
        record = self.store.get_run(child.run_id)
        if record.status == RunStatus.RUNNING and record.attempts == child.attempt:
            self._record_unrecorded_end(child, code)
        self.store.release(child.run_id)
        record = self.store.get_run(child.run_id)
        attempt = self.store.attempt_details(child.run_id)[-1]
        decision = decide(record.status, attempt["failure_class"], record.error or
                          attempt["error"], attempts=record.attempts,
                          attempt_limit=record.attempt_limit or DEFAULT_ATTEMPT_LIMIT,
                          policy=self.policy, stopping=self.stopping)
        if decision.action in ("retry", "retry-exclusive"):
            if not self.store.requeue(child.run_id, statuses=(record.status,)):
                return Decision("give-up", "changed by another process meanwhile")
        return decision

    def _record_unrecorded_end(self, child: _Child, code: int | None) -> None:
        """The worker ended without recording an end: killed, crashed, or stopped by us. Under
        torchrun the agent's exit code is 1 whatever happened: its process that failed first
        says why (the root cause it prints)."""
        tail = worker.log_tail(child.log_path)
        cause = code
        if child.processes > 1:
            cause = worker.root_cause_exit(child.log_path, code)
        what = f"worker pid {child.proc.pid} ended with {describe_exit(code)}"
        if cause != code:
            what += f" (torchrun: the first of its processes to fail, with {describe_exit(cause)})"
        text = (f"{what} without recording an end (log: {child.log_path})"
                + (f"\n{tail}" if tail else ""))
        if cause == -signal.SIGTERM:  # a stop request that came before the worker's handler
            status, cls = RunStatus.INTERRUPTED, None
        elif cause is not None and cause < 0:
            status, cls = RunStatus.KILLED, "killed"
        else:
            status, cls = RunStatus.FAILED, "error"
        self.store.end_attempt(child.run_id, child.attempt, status, error=text,
                               failure_class=cls, exit_code=code)
