"""What the schedulers need from the store: atomic claims, the device ledger, attempt details.

The rules that make several schedulers (on one host or many, SQLite or PostgreSQL) safe:

* **Claiming is a compare-and-set.** :meth:`SchedulingMixin.claim_run` moves a run from
  'queued' to 'running' with ``UPDATE ... WHERE status = 'queued'`` and, in the same write
  transaction, reserves its device slots (primary key (host, device, slot)) and opens its attempt.
  Of two schedulers claiming one run, exactly one sees its update match; a slot already reserved
  rolls the whole claim back. Nothing is ever run twice at once.
* **The worker adopts the attempt.** The scheduler's claim opens attempt *n* with no pid; the
  worker's own ``set_status(run, 'running')`` then adopts it (same attempt, its pid and process
  start time) instead of opening attempt *n + 1*.
* **Ending is a compare-and-set too.** :meth:`SchedulingMixin.end_attempt` only ends the attempt
  it names, and only while the run is still 'running' in it, so a late reaper cannot overwrite
  what a worker (or another reaper) already recorded.

The records returned here are plain frozen dataclasses; nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from sslbench.db.keyed import tagset_id
from sslbench.db.liveness import process_start_time
from sslbench.db.models import (
    TERMINAL_STATUSES,
    Attempt,
    Reservation,
    Run,
    RunStatus,
    Scheduler,
    utcnow,
)
from sslbench.db.records import RunRecord

#: Attempts a run gets when nobody set its ``attempt_limit``.
DEFAULT_ATTEMPT_LIMIT = 3


@dataclass(frozen=True)
class SchedulerInfo:
    """One row of ``schedulers``."""

    scheduler_id: str
    backend: str
    host: str
    pid: int
    proc_start: int | None
    slots: list[str]
    started_at: datetime
    heartbeat_at: datetime
    ended_at: datetime | None
    stop_requested: bool


@dataclass(frozen=True)
class LiveAttempt:
    """A run in status 'running' with its open (latest) attempt."""

    run_id: str
    kind: str
    attempt: int
    attempt_limit: int | None
    host: str | None
    pid: int | None
    proc_start: int | None
    heartbeat_at: datetime | None
    started_at: datetime
    scheduler_id: str | None
    device: str | None
    log_path: str | None


class _SlotsTaken(Exception):
    """Raised inside a claim transaction to roll it back."""


def _insert(session: Session) -> Callable[..., Any]:
    return sqlite_insert if session.get_bind().dialect.name == "sqlite" else pg_insert


def _within_budget() -> Any:
    return or_(Run.attempt_limit.is_(None) & (Run.attempts < DEFAULT_ATTEMPT_LIMIT),
               Run.attempts < Run.attempt_limit)


def _set_tags(session: Session, row: Run, tags: list[str]) -> None:
    """Give a run these tags, and their tag set (what the reports group it by)."""
    row.tags_json = json.dumps(tags)
    row.tagset_id = tagset_id(session, tags)


class SchedulingMixin:
    """Scheduler operations of :class:`sslbench.db.Store` (each one short transaction)."""

    _session: Any  # provided by Store

    # ------------------------------------------------------------------------- schedulers

    def register_scheduler(self, scheduler_id: str, *, backend: str, slots: Sequence[str],
                           pid: int | None = None) -> None:
        """Record a live scheduler (this process unless ``pid``)."""
        pid = os.getpid() if pid is None else pid
        now = utcnow()
        with self._session(write=True) as session:
            session.add(Scheduler(scheduler_id=scheduler_id, backend=backend,
                                  host=socket.gethostname(), pid=pid,
                                  proc_start=process_start_time(pid),
                                  slots_json=json.dumps(list(slots)), started_at=now,
                                  heartbeat_at=now, stop_requested=False))

    def scheduler_beat(self, scheduler_id: str) -> bool:
        """Heartbeat of a scheduler; returns whether someone asked it to stop."""
        with self._session(write=True) as session:
            row = session.get(Scheduler, scheduler_id)
            if row is None:
                return True
            row.heartbeat_at = utcnow()
            return bool(row.stop_requested)

    def end_scheduler(self, scheduler_id: str) -> None:
        """Mark the scheduler ended and free every slot it still holds."""
        with self._session(write=True) as session:
            session.execute(update(Scheduler).where(Scheduler.scheduler_id == scheduler_id)
                            .values(ended_at=utcnow()))
            session.execute(delete(Reservation).where(Reservation.scheduler_id == scheduler_id))

    def schedulers(self, *, running_only: bool = True) -> list[SchedulerInfo]:
        """Schedulers that have not ended (all with ``running_only=False``), oldest first."""
        stmt = select(Scheduler).order_by(Scheduler.started_at)
        if running_only:
            stmt = stmt.where(Scheduler.ended_at.is_(None))
        with self._session() as session:
            return [SchedulerInfo(
                scheduler_id=s.scheduler_id, backend=s.backend, host=s.host, pid=s.pid,
                proc_start=s.proc_start, slots=json.loads(s.slots_json),
                started_at=s.started_at, heartbeat_at=s.heartbeat_at, ended_at=s.ended_at,
                stop_requested=bool(s.stop_requested)) for s in session.scalars(stmt)]

    def request_stop(self, scheduler_ids: Sequence[str]) -> None:
        """Ask these schedulers to stop (they read the flag on their next heartbeat)."""
        if not scheduler_ids:
            return
        with self._session(write=True) as session:
            session.execute(update(Scheduler).where(Scheduler.scheduler_id.in_(scheduler_ids))
                            .values(stop_requested=True))

    # ----------------------------------------------------------------------- claims, ledger

    def claim_run(self, run_id: str, *, scheduler_id: str, device: str, slots: Sequence[int],
                  log_path: str | None = None, places: Sequence[tuple[str, int]] = (),
                  tag: str | None = None) -> int | None:
        """Atomically take a queued run within its attempt budget and reserve ``slots`` of
        ``device`` on this host for it, and the (device, slot) ``places`` too (a run of several
        processes on several GPUs; ``device`` then names them all, e.g. "0,1", for the attempt).
        ``tag`` becomes the run's last tag in the same transaction (a Slurm task's job: whoever
        reads the run's tags sees the job that claimed it, never a moment without it).
        Returns the new attempt number, or None when the run is not claimable (not queued,
        claimed by someone else, out of attempts) or a slot is taken.
        """
        host, now = socket.gethostname(), utcnow()
        try:
            with self._session(write=True) as session:
                moved = session.execute(
                    update(Run).where(Run.run_id == run_id, Run.status == RunStatus.QUEUED,
                                      _within_budget())
                    .values(status=RunStatus.RUNNING, pid=None, host=host, ended_at=None,
                            error=None, started_at=func.coalesce(Run.started_at, now),
                            heartbeat_at=now, updated_at=now, attempts=Run.attempts + 1))
                if moved.rowcount != 1:
                    return None
                wanted = [(device, s) for s in slots] + list(places)
                if wanted:
                    rows = [{"host": host, "device": d, "slot": int(s), "run_id": run_id,
                             "scheduler_id": scheduler_id, "reserved_at": now}
                            for d, s in wanted]
                    added = session.execute(_insert(session)(Reservation).values(rows)
                                            .on_conflict_do_nothing()
                                            .returning(Reservation.slot)).all()
                    if len(added) != len(rows):  # RETURNING: psycopg's rowcount is -1 here
                        raise _SlotsTaken
                if tag is not None:
                    row = session.get(Run, run_id)
                    tags = [t for t in json.loads(row.tags_json or "[]") if t != tag]
                    _set_tags(session, row, [*tags, tag])
                attempt = session.scalar(select(Run.attempts).where(Run.run_id == run_id))
                session.add(Attempt(run_id=run_id, attempt=attempt, host=host, pid=None,
                                    started_at=now, device=device, scheduler_id=scheduler_id,
                                    log_path=log_path))
                return int(attempt)
        except _SlotsTaken:
            return None

    def attach_process(self, run_id: str, attempt: int, pid: int, *,
                       log_path: str | None = None) -> None:
        """Record the worker process of a claimed attempt (pid, start time, log file)."""
        values: dict[str, Any] = {"pid": pid, "proc_start": process_start_time(pid)}
        if log_path is not None:
            values["log_path"] = log_path
        with self._session(write=True) as session:
            session.execute(update(Attempt).where(Attempt.run_id == run_id,
                                                  Attempt.attempt == attempt)
                            .values(**values))
            session.execute(update(Run).where(Run.run_id == run_id, Run.attempts == attempt,
                                              Run.status == RunStatus.RUNNING,
                                              Run.pid.is_(None))
                            .values(pid=pid))

    def release(self, run_id: str) -> None:
        """Free every device slot reserved for the run."""
        with self._session(write=True) as session:
            session.execute(delete(Reservation).where(Reservation.run_id == run_id))

    def reserved_slots(self, host: str | None = None) -> dict[str, dict[int, str]]:
        """``{device: {slot: run_id}}`` reserved on ``host`` (default: this host)."""
        host = host or socket.gethostname()
        out: dict[str, dict[int, str]] = {}
        with self._session() as session:
            for device, slot, run_id in session.execute(
                    select(Reservation.device, Reservation.slot, Reservation.run_id)
                    .where(Reservation.host == host)):
                out.setdefault(device, {})[slot] = run_id
        return out

    # ------------------------------------------------------------------------- attempts

    def end_attempt(self, run_id: str, attempt: int, status: RunStatus | str, *,
                    error: str | None = None, failure_class: str | None = None,
                    exit_code: int | None = None) -> bool:
        """End attempt ``attempt`` with ``status`` (a terminal status) if the run is still
        'running' in that attempt; returns whether it did. Records ``exit_code`` either way."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"end_attempt needs a terminal status, got {status!r}")
        now = utcnow()
        with self._session(write=True) as session:
            moved = session.execute(update(Run).where(
                Run.run_id == run_id, Run.status == RunStatus.RUNNING, Run.attempts == attempt)
                .values(status=status, error=error, ended_at=now, updated_at=now)).rowcount
            values: dict[str, Any] = {"exit_code": exit_code} if exit_code is not None else {}
            if moved:
                values.update(ended_at=now, status=status, error=error,
                              failure_class=failure_class)
            if values:
                session.execute(update(Attempt).where(Attempt.run_id == run_id,
                                                      Attempt.attempt == attempt)
                                .values(**values))
            return bool(moved)

    def record_exit(self, run_id: str, attempt: int, exit_code: int | None) -> None:
        """Record the exit code of an attempt's process (the attempt may be ended already)."""
        with self._session(write=True) as session:
            session.execute(update(Attempt).where(Attempt.run_id == run_id,
                                                  Attempt.attempt == attempt)
                            .values(exit_code=exit_code))

    def requeue(self, run_id: str, *,
                statuses: Sequence[str] = (RunStatus.FAILED, RunStatus.KILLED,
                                           RunStatus.INTERRUPTED),
                attempt_limit: int | None = None) -> bool:
        """Put a run that is in one of ``statuses`` back in the queue (optionally with a new
        attempt budget); returns whether it moved."""
        values: dict[str, Any] = {"status": RunStatus.QUEUED, "ended_at": None,
                                  "updated_at": utcnow()}
        if attempt_limit is not None:
            values["attempt_limit"] = attempt_limit
        with self._session(write=True) as session:
            return bool(session.execute(update(Run).where(
                Run.run_id == run_id, Run.status.in_(list(statuses))).values(**values)).rowcount)

    def set_attempt_limit(self, run_id: str, limit: int | None) -> None:
        with self._session(write=True) as session:
            session.execute(update(Run).where(Run.run_id == run_id)
                            .values(attempt_limit=limit))

    def attempt_details(self, run_id: str) -> list[dict[str, Any]]:
        """Every column of every attempt of the run, first to last (times as ISO text)."""
        with self._session() as session:
            rows = session.scalars(select(Attempt).where(Attempt.run_id == run_id)
                                   .order_by(Attempt.attempt))
            return [_attempt_dict(a) for a in rows]

    def live_attempts(self) -> list[LiveAttempt]:
        """Runs in status 'running', each with its latest attempt."""
        stmt = (select(Run, Attempt).join(Attempt, and_(Attempt.run_id == Run.run_id,
                                                        Attempt.attempt == Run.attempts),
                                          isouter=True)
                .where(Run.status == RunStatus.RUNNING).order_by(Run.started_at))
        with self._session() as session:
            return [_live(run, att) for run, att in session.execute(stmt)]

    # ---------------------------------------------------------------------------- tags

    def add_tags(self, run_id: str, tags: Sequence[str]) -> None:
        """Add tags to a run (kept unique, in order)."""
        with self._session(write=True) as session:
            row = session.get(Run, run_id)
            if row is None:
                return
            current = json.loads(row.tags_json or "[]")
            merged = list(dict.fromkeys([*current, *tags]))
            if merged != current:
                _set_tags(session, row, merged)

    def runs_tagged(self, tag: str) -> list[RunRecord]:
        """Runs carrying ``tag``, oldest first."""
        escaped = json.dumps(tag).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = (select(Run).where(Run.tags_json.like(f"%{escaped}%", escape="\\"))
                .order_by(Run.created_at, Run.run_id))
        with self._session() as session:
            return [r for r in (RunRecord.from_row(row) for row in session.scalars(stmt))
                    if tag in r.tags]

    def runs_by_id(self, run_ids: Sequence[str]) -> dict[str, RunRecord]:
        """The stored runs among ``run_ids`` (missing ids are left out), in one query each 500."""
        out: dict[str, RunRecord] = {}
        with self._session() as session:
            for chunk in _chunks(list(run_ids), 500):
                for row in session.scalars(select(Run).where(Run.run_id.in_(chunk))):
                    out[row.run_id] = RunRecord.from_row(row)
        return out


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _attempt_dict(a: Attempt) -> dict[str, Any]:
    return {"attempt": a.attempt, "status": a.status, "failure_class": a.failure_class,
            "exit_code": a.exit_code, "host": a.host, "pid": a.pid, "proc_start": a.proc_start,
            "device": a.device, "scheduler_id": a.scheduler_id, "log_path": a.log_path,
            "error": a.error, "started_at": _iso(a.started_at), "ended_at": _iso(a.ended_at)}


def _live(run: Run, att: Attempt | None) -> LiveAttempt:
    return LiveAttempt(
        run_id=run.run_id, kind=run.kind, attempt=run.attempts, attempt_limit=run.attempt_limit,
        host=(att.host if att is not None else None) or run.host,
        pid=(att.pid if att is not None else None) or run.pid,
        proc_start=att.proc_start if att is not None else None, heartbeat_at=run.heartbeat_at,
        started_at=att.started_at if att is not None else run.updated_at,
        scheduler_id=att.scheduler_id if att is not None else None,
        device=att.device if att is not None else None,
        log_path=att.log_path if att is not None else None)
