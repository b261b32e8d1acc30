"""Crash recovery and stopping: the reaper (``sslbench runs reap``) and ``sslbench runs stop``.

**Reaper.** A run stuck in 'running' after its process died (kill -9, the kernel's OOM killer,
a reboot, a preempted node) is found and ended as 'killed' (failure class ``lost``), its device
slots are freed, and it is put back in the queue while it has attempts left. A run is dead when

* its scheduler is not alive (a live scheduler handles its own workers), and
* on this host: its process is gone -- pid *and* process start time, so a reused pid does not
  keep a dead run alive; on another host: its heartbeat is older than ``stale_after_s``.

A scheduler is alive when, on this host, its process is; elsewhere, when its heartbeat (every
second or so) is younger than ``SCHEDULER_STALE_S``. These judgements live in
:mod:`sslbench.db.ownership`, which also refuses to start a run that a live process owns.
Dead schedulers are ended and their slots freed. Every sweep reaps before planning, and every
scheduler reaps every few seconds.

**Stop.** Live schedulers get the store's stop flag (read on their next heartbeat, from any host)
and, on this host, SIGTERM at once; they forward SIGTERM to their workers, which finish the step,
checkpoint and end as 'interrupted'. Runs not under a scheduler on this host get SIGTERM directly.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sslbench.db.liveness import process_alive
from sslbench.db.models import RunStatus
from sslbench.db.ownership import STALE_AFTER_S, run_dead, scheduler_alive
from sslbench.db.scheduling import DEFAULT_ATTEMPT_LIMIT, LiveAttempt


@dataclass(frozen=True)
class Reaped:
    run_id: str
    requeued: bool
    reason: str


def reap(store: Any, *, stale_after_s: float = STALE_AFTER_S) -> list[Reaped]:
    """End dead schedulers and dead runs; re-queue the runs that have attempts left."""
    now, host = datetime.now(timezone.utc), socket.gethostname()
    live: set[str] = set()
    for info in store.schedulers():
        if scheduler_alive(info, now=now, host=host):
            live.add(info.scheduler_id)
        else:
            store.end_scheduler(info.scheduler_id)
    out = []
    for att in store.live_attempts():
        reason = run_dead(att, live_schedulers=live, now=now, host=host,
                          stale_after_s=stale_after_s)
        if reason is None:
            continue
        if not store.end_attempt(att.run_id, att.attempt, RunStatus.KILLED,
                                 failure_class="lost",
                                 error=f"reaped: {reason} (attempt {att.attempt})"):
            continue  # it ended on its own meanwhile
        store.release(att.run_id)
        limit = att.attempt_limit or DEFAULT_ATTEMPT_LIMIT
        requeued = att.attempt < limit and store.requeue(att.run_id,
                                                                 statuses=(RunStatus.KILLED,))
        out.append(Reaped(att.run_id, requeued, reason))
    return out


# --------------------------------------------------------------------------------- stop

@dataclass
class StopReport:
    schedulers: list[str] = field(default_factory=list)
    signalled: list[str] = field(default_factory=list)   # runs sent SIGTERM here
    elsewhere: list[str] = field(default_factory=list)   # runs on other hosts, not signalled
    remaining: list[str] = field(default_factory=list)   # still running after the wait


def _signal_run(att: LiveAttempt) -> bool:
    """SIGTERM a run's process (its whole group when it leads one); True if sent."""
    if att.pid is None or not process_alive(att.pid, att.proc_start):
        return False
    try:
        if os.getpgid(att.pid) == att.pid:
            os.killpg(att.pid, signal.SIGTERM)
        else:
            os.kill(att.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop(store: Any, *, run_ids: Sequence[str] | None = None, wait_s: float = 0.0
         ) -> StopReport:
    """Stop every scheduler and run (or only ``run_ids``), gracefully; wait up to ``wait_s``
    for the runs to leave 'running'."""
    host, now = socket.gethostname(), datetime.now(timezone.utc)
    report = StopReport()
    live = {s.scheduler_id: s for s in store.schedulers() if scheduler_alive(s, now=now)}
    attempts = store.live_attempts()
    if run_ids is None:
        store.request_stop(list(live))
        report.schedulers = list(live)
        for info in live.values():
            if info.host == host:
                try:
                    os.kill(info.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
        targets = [a for a in attempts if a.scheduler_id not in live]
    else:
        wanted = set(run_ids)
        targets = [a for a in attempts if a.run_id in wanted]
    for att in targets:
        if att.host != host:
            report.elsewhere.append(att.run_id)
        elif _signal_run(att):
            report.signalled.append(att.run_id)
    watched = {a.run_id for a in attempts} if run_ids is None else set(run_ids)
    deadline = time.monotonic() + wait_s
    while True:
        running = [a.run_id for a in store.live_attempts() if a.run_id in watched]
        if not running or time.monotonic() >= deadline:
            report.remaining = running
            return report
        time.sleep(0.5)
