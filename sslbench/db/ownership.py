"""Who owns a running run, and whether that owner still lives: one owner per run, always.

A run in status 'running' is owned by the process of its open attempt (its latest attempt while
it has no ``ended_at``). Before a scheduler's worker has started, the attempt has no pid yet and
its scheduler owns it. The owner is alive when

* on this host: its process runs -- pid *and* process start time (:mod:`sslbench.db.liveness`),
  so a reused pid does not keep a dead run alive; a scheduler likewise;
* on another host: its heartbeat is younger than the lease (``STALE_AFTER_S`` for runs,
  ``SCHEDULER_STALE_S`` for schedulers), since its process cannot be asked directly.

Starting a run that a live owner holds is refused (:class:`RunBusyError`, naming host, pid and
since when); a dead owner's attempt is closed as 'killed' and the new process takes over. The
same judgements drive the reaper (:mod:`sslbench.runs.control`). Torch-free.
"""

from __future__ import annotations

import socket
from datetime import datetime, timezone

from sqlalchemy.orm import Session

from sslbench.db.liveness import process_alive
from sslbench.db.models import Attempt, Run, RunStatus, Scheduler
from sslbench.db.scheduling import LiveAttempt, SchedulerInfo
from sslbench.errors import SSLBenchError

#: A run on another host whose heartbeat is older than this is presumed dead (workers beat
#: every 30 s from a side thread, and so do ``train`` and ``eval``).
STALE_AFTER_S = 300.0
#: A scheduler on another host whose heartbeat is older than this is presumed dead.
SCHEDULER_STALE_S = 60.0


class RunBusyError(SSLBenchError):
    """The run is owned by another live process."""


def age_s(when: datetime | None, now: datetime) -> float:
    return float("inf") if when is None else (now - when).total_seconds()


def scheduler_alive(info: SchedulerInfo | Scheduler, *, now: datetime | None = None,
                    host: str | None = None) -> bool:
    """Whether a scheduler still runs (see the module docstring)."""
    now = now or datetime.now(timezone.utc)
    if info.host == (host or socket.gethostname()):
        return process_alive(info.pid, info.proc_start)
    return age_s(info.heartbeat_at, now) < SCHEDULER_STALE_S


def run_dead(att: LiveAttempt, *, live_schedulers: set[str], now: datetime,
             host: str, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why a running run is dead, or None while it may be alive."""
    if att.scheduler_id is not None and att.scheduler_id in live_schedulers:
        return None
    if att.host == host:
        if att.pid is None:
            return "claimed by a scheduler that died before starting its worker"
        if not process_alive(att.pid, att.proc_start):
            return f"its process {att.pid} on {host} is gone"
        return None
    age = age_s(att.heartbeat_at, now)
    if age > stale_after_s:
        return f"no heartbeat from {att.host} for {age:.0f} s"
    return None


def open_attempt(session: Session, run: Run) -> Attempt | None:
    """The run's open attempt (its latest, not ended), or None."""
    if run.status != RunStatus.RUNNING or not run.attempts:
        return None
    attempt = session.get(Attempt, (run.run_id, run.attempts))
    return attempt if attempt is not None and attempt.ended_at is None else None


def owner_dead(session: Session, run: Run, attempt: Attempt, *,
               now: datetime | None = None) -> str | None:
    """Why the owner of ``attempt`` is dead, or None while it may be alive."""
    now, host = now or datetime.now(timezone.utc), socket.gethostname()
    live: set[str] = set()
    if attempt.scheduler_id is not None:
        sched = session.get(Scheduler, attempt.scheduler_id)
        if sched is not None and sched.ended_at is None and scheduler_alive(sched, now=now,
                                                                            host=host):
            live.add(attempt.scheduler_id)
    view = LiveAttempt(run_id=run.run_id, kind=run.kind, attempt=attempt.attempt,
                       attempt_limit=run.attempt_limit, host=attempt.host or run.host,
                       pid=attempt.pid, proc_start=attempt.proc_start,
                       heartbeat_at=run.heartbeat_at, started_at=attempt.started_at,
                       scheduler_id=attempt.scheduler_id, device=attempt.device,
                       log_path=attempt.log_path)
    return run_dead(view, live_schedulers=live, now=now, host=host)


def busy_message(run: Run, attempt: Attempt) -> str:
    """One line naming a live owner and what to do."""
    since = attempt.started_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    who = (f"pid {attempt.pid} on {attempt.host}" if attempt.pid is not None
           else f"scheduler {attempt.scheduler_id} on {attempt.host}")
    return (f"run {run.run_id} is already running: owned by {who} since {since} (attempt "
            f"{attempt.attempt}); wait for it, or stop it with `sslbench runs stop "
            f"{run.run_id}`")
