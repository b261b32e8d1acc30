"""Logging that never stalls a training step: a :class:`~sslbench.db.writer.RunWriter` that
buffers in the process and writes from a background thread.

``log_metrics``, ``log_series``, ``log_artifact`` and ``heartbeat`` check their arguments (a
metric that is not a number fails at the call, on the caller's thread), append to an in-memory
buffer and return: a few microseconds, never a database round trip. A background thread writes
the buffer in one transaction (:meth:`sslbench.db.Store.write_batch`) every ``batch_points``
points or every ``interval_s`` seconds, whichever comes first.

Guarantees:

- :meth:`BufferedWriter.flush` returns once everything logged before it is in the store. The
  training loop flushes before every checkpoint, so a checkpoint never runs ahead of the store: a
  kill -9 loses at most the points logged since the last checkpoint, which the resumed run
  recomputes (it first deletes whatever was written past its checkpoint's step,
  :meth:`~sslbench.db.Store.truncate_metrics`; the points are keyed by (run, key, step), so a
  replay can never duplicate one). ``set_status`` and ``summary`` flush first too.
- A store that cannot be written (a server down, a SQLite file locked by someone else) is
  retried with exponential backoff (0.05 s doubling to 5 s) while the caller goes on logging,
  nothing dropped. The buffer is bounded: when the store has been failing for longer than
  ``outage_s`` and someone waits on it (a flush, a checkpoint), or the buffer holds
  ``max_points`` points, the call raises :class:`StoreUnavailableError`, one line saying what
  was lost and that the last checkpoint is intact. A store merely slower than the logging (no
  failure) makes ``log_metrics`` wait for room instead.

The thread opens its own connection to the store (``Store.open(url)``; a Store is not shared
between threads that write at once) with a short SQLite lock wait, so that a lock held elsewhere
is retried here with backoff rather than waited out in one 30 s statement. Torch-free.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sslbench.db.ingest import Point, artifact_row
from sslbench.db.models import RunStatus
from sslbench.db.values import to_metric_value
from sslbench.errors import SSLBenchError, StoreError, one_line

if TYPE_CHECKING:
    from sslbench.db.store import Store

#: Defaults: write every 1000 points or 2 s (a transaction costs about what 100 points do);
#: give up on a store failing for 300 s, or when 1,000,000 points (about 200 MB) wait.
#: ``SSLBENCH_LOG_BATCH``, ``SSLBENCH_LOG_INTERVAL_S``,
#: ``SSLBENCH_STORE_OUTAGE_S`` and ``SSLBENCH_LOG_BUFFER`` override them.
BATCH_POINTS, INTERVAL_S, OUTAGE_S, MAX_POINTS = 1000, 2.0, 300.0, 1_000_000
#: How long one write of the background thread waits for a SQLite lock before it backs off.
LOCK_WAIT_S = 2.0
BACKOFF_S = (0.05, 5.0)


class StoreUnavailableError(StoreError):
    """The store could not be written for longer than the writer's bound: the run stops."""


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise StoreError(f"{name}={text!r} is not a number: unset it or give one") from None
    if not value > 0 or not math.isfinite(value):
        raise StoreError(f"{name}={text!r} must be a positive number")
    return value


@dataclass
class Limits:
    """When the writer writes and when it gives up (see the module docstring)."""

    batch_points: int = BATCH_POINTS
    interval_s: float = INTERVAL_S
    outage_s: float = OUTAGE_S
    max_points: int = MAX_POINTS
    lock_wait_s: float = LOCK_WAIT_S

    @classmethod
    def from_env(cls) -> Limits:
        return cls(int(_env_number("SSLBENCH_LOG_BATCH", BATCH_POINTS)),
                   _env_number("SSLBENCH_LOG_INTERVAL_S", INTERVAL_S),
                   _env_number("SSLBENCH_STORE_OUTAGE_S", OUTAGE_S),
                   int(_env_number("SSLBENCH_LOG_BUFFER", MAX_POINTS)))


@dataclass
class _Buffer:
    """What was logged and not written yet, and the sequence number of its last entry."""

    points: list[tuple[str, str, int, float | None, int | None, float]] = field(
        default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: dict[str, float] = field(default_factory=dict)
    seq: int = 0

    def __len__(self) -> int:
        return len(self.points) + len(self.artifacts) + len(self.heartbeats)

    def take(self, other: _Buffer) -> None:
        """Append ``other`` (logged later) to this one."""
        self.points += other.points
        self.artifacts += other.artifacts
        self.heartbeats.update(other.heartbeats)
        self.seq = max(self.seq, other.seq)


def _when(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, timezone.utc)


class BufferedWriter:
    """``with BufferedWriter(store) as writer:`` a RunWriter whose writes leave the caller's
    thread at once (see the module docstring). ``store`` is used directly for ``set_status``
    and ``summary``; the background thread opens its own connection to ``store.url``."""

    def __init__(self, store: Store, limits: Limits | None = None) -> None:
        self._store = store
        self.limits = limits or Limits.from_env()
        self._cond = threading.Condition()
        self._buffer = _Buffer()
        self._seq = 0            # of the last entry logged
        self._written = 0        # every entry up to this one is in the store
        self._failing_since: float | None = None
        self._error = ""
        self._wanted = 0         # a flush waits for this entry: write now
        self._closing = False    # stop once the buffer is written
        self._drop = False       # stop now
        self._pending = 0        # points logged and not written yet
        self._thread = threading.Thread(target=self._loop, daemon=True, name="store-writer")

    # ------------------------------------------------------------------- the caller's side

    def __enter__(self) -> BufferedWriter:
        self._thread.start()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(flush=exc_type is None)

    def close(self, *, flush: bool = True) -> None:
        """Write what is left (``flush``) and stop the thread; without ``flush`` what is
        buffered is dropped (after a failure: the resumed run recomputes it)."""
        try:
            if flush and self._thread.is_alive():
                self.flush()
        finally:
            with self._cond:
                self._closing, self._drop = True, not flush
                self._cond.notify_all()
            self._thread.join(timeout=self.limits.lock_wait_s + 1)

    def log_metrics(self, run_id: str, step: int, metrics: Mapping[str, Any], *,
                    epoch: int | None = None) -> None:
        """Buffer ``metrics`` at ``step`` (written within ``interval_s``; a replay overwrites)."""
        now = time.time()
        rows = [(run_id, key, int(step), to_metric_value(key, value), epoch, now)
                for key, value in metrics.items()]
        self._append(rows)

    def log_series(self, run_id: str, key: str, values: Iterable[Any], *,
                   start: int = 0) -> None:
        """Buffer one metric at consecutive steps (a spectrum, a histogram)."""
        now = time.time()
        self._append([(run_id, key, start + i, to_metric_value(key, v), None, now)
                      for i, v in enumerate(values)])

    def log_artifact(self, run_id: str, kind: str, path: str, *, size: int | None = None,
                     sha256: str | None = None) -> None:
        """Buffer the record of a file the run produced."""
        row = artifact_row(run_id, kind, path, size=size, sha256=sha256)
        with self._cond:
            self._buffer.artifacts.append(row)
            self._mark()

    def heartbeat(self, run_id: str) -> None:
        """Buffer a heartbeat (only the latest one of each run is written)."""
        with self._cond:
            self._buffer.heartbeats[run_id] = time.time()
            self._mark()

    def flush(self) -> None:
        """Return once everything logged so far is in the store; raise
        StoreUnavailableError when the store has been failing for longer than ``outage_s``."""
        with self._cond:
            target = self._seq
            self._wanted = max(self._wanted, target)
            self._cond.notify_all()
            while self._written < target:
                self._raise_if_out()
                if not self._thread.is_alive():
                    raise RuntimeError("the store writer thread is not running")
                self._cond.wait(timeout=0.05)

    def set_status(self, run_id: str, status: RunStatus | str, *, error: str | None = None,
                   failure_class: str | None = None) -> None:
        """Flush, then move the run to ``status`` (see :meth:`sslbench.db.Store.set_status`)."""
        self.flush()
        self._store.set_status(run_id, status, error=error, failure_class=failure_class)

    def summary(self, run_id: str) -> dict[str, float]:
        """Flush, then the final value of every metric of the run."""
        self.flush()
        return self._store.summary(run_id)

    def truncate_metrics(self, run_id: str, after_step: int) -> None:
        """Flush, then delete the run's points past ``after_step`` (a resume's first write)."""
        self.flush()
        self._store.truncate_metrics(run_id, after_step)

    @property
    def pending_points(self) -> int:
        """Points logged and not written yet (in the buffer or in the write under way)."""
        with self._cond:
            return self._pending

    def _append(self, rows: list[tuple[str, str, int, float | None, int | None, float]]) -> None:
        if not rows:
            return
        with self._cond:
            while self._pending and self._pending + len(rows) > self.limits.max_points:
                if self._failing_since is not None:
                    raise self._unavailable()
                self._wanted = max(self._wanted, self._seq)  # slower than us: wait for room
                self._cond.notify_all()
                self._cond.wait(timeout=0.05)
            self._buffer.points += rows
            self._pending += len(rows)
            self._mark()

    def _mark(self) -> None:
        """A new entry (called holding the lock): number it, wake the thread when a batch is
        full."""
        self._seq += 1
        self._buffer.seq = self._seq
        if len(self._buffer.points) >= self.limits.batch_points:
            self._cond.notify_all()

    def _raise_if_out(self) -> None:
        since = self._failing_since
        if since is not None and time.monotonic() - since > self.limits.outage_s:
            raise self._unavailable()

    def _unavailable(self) -> StoreUnavailableError:
        since = self._failing_since
        waited = 0.0 if since is None else time.monotonic() - since
        return StoreUnavailableError(
            f"the store {self._store.display_url} could not be written for {waited:.0f} s "
            f"({self._error}); {self._pending} metric points logged since the last write are "
            f"lost (bound: {self.limits.outage_s:g} s or {self.limits.max_points} points): the "
            "run stops here with its last checkpoint intact; re-run the same command once the "
            "store is back, and it resumes from that checkpoint")

    # ------------------------------------------------------------------ the thread's side

    def _loop(self) -> None:
        store: Store | None = None
        batch = _Buffer()
        delay = BACKOFF_S[0]
        try:
            while True:
                with self._cond:
                    self._wait_for_work(batch)
                    if self._drop or (self._closing and not len(batch)
                                      and not len(self._buffer)):
                        return
                    batch.take(self._buffer)
                    self._buffer = _Buffer()
                if not len(batch):
                    continue
                try:
                    store = store or self._open()
                    self._write(store, batch)
                except SSLBenchError as err:
                    self._failed(err)
                    time.sleep(delay)
                    delay = min(2 * delay, BACKOFF_S[1])
                    continue
                delay = BACKOFF_S[0]
                with self._cond:
                    self._written, self._failing_since = batch.seq, None
                    self._pending -= len(batch.points)
                    self._cond.notify_all()
                batch = _Buffer()
        finally:
            if store is not None:
                store.close()

    def _wait_for_work(self, batch: _Buffer) -> None:
        """Wait (holding the lock) until a batch is full, a flush asks, the interval passes or
        the writer closes; a batch that failed is retried at once (its backoff was slept)."""
        deadline = time.monotonic() + self.limits.interval_s
        while not (len(batch) or self._closing or self._wanted > self._written
                   or len(self._buffer.points) >= self.limits.batch_points):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(timeout=left)

    def _open(self) -> Store:
        from sslbench.db.store import Store

        return Store.open(self._store.url, create=False,
                          busy_timeout_s=self.limits.lock_wait_s)

    @staticmethod
    def _write(store: Store, batch: _Buffer) -> None:
        times = {at: _when(at) for at in {row[-1] for row in batch.points}}
        points = [Point(run_id, key, step, value, epoch, times[at])
                  for run_id, key, step, value, epoch, at in batch.points]
        store.write_batch(points, artifacts=batch.artifacts,
                          heartbeats={r: _when(t) for r, t in batch.heartbeats.items()})

    def _failed(self, err: SSLBenchError) -> None:
        with self._cond:
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            self._error = one_line(err)
            self._cond.notify_all()
