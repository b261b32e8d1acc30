"""Writing metric points in batches: the one path every metric takes into the store.

``Store.log_metrics`` / ``log_series`` (one call's points) and the background writer of
:mod:`sslbench.db.buffered` (every point logged since its last write, of one or many runs) both
end in :func:`write_points`, inside one write transaction:

1. the batch is reduced to one point per (run, key, step), the last one logged winning, as the
   upsert would leave it;
   and each series of the batch is summarised on its own (:func:`prepare`, O(1) a point,
   before the transaction: the write lock is held for the database work only);
2. the stored summaries of the (run, key) series it touches are read in one query;
3. the points are upserted (a replayed step overwrites its value, and its epoch unless the
   replay gives none);
4. each series whose new points all lie past its summary's ``final_step`` (every write of a
   training run, which appends) has its summary merged with the batch's in O(1)
   (:func:`sslbench.db.summaries.merge`, the history never read); a series with a replayed or
   back-filled step, where an overwritten value may have been the best or the final one, is
   recomputed from its history (:func:`sslbench.db.summaries.from_history`).

Nothing here knows about threads or buffering.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from sslbench.db.models import Metric, Summary, utcnow
from sslbench.db.summaries import FIELDS as SUMMARY_FIELDS
from sslbench.db.summaries import from_history, merge, of_values

#: Rows per INSERT statement: stays under SQLite's bound-variable limit (32,766) and keeps
#: PostgreSQL's statements small.
CHUNK = 2000


class Point(NamedTuple):
    """One metric value as logged: NaN already None (:func:`sslbench.db.values.to_metric_value`)."""

    run_id: str
    key: str
    step: int
    value: float | None
    epoch: int | None
    logged_at: datetime


def upsert(session: Session, model: Any, rows: Sequence[dict[str, Any]], keys: tuple[str, ...],
           update_columns: tuple[str, ...], keep_if_null: tuple[str, ...] = ()) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET update_columns (SQLite and PostgreSQL), in
    chunks of :data:`CHUNK` rows; columns in ``keep_if_null`` keep their stored value when the
    new one is NULL."""
    if not rows:
        return
    stmt = _upsert_statement(session.get_bind().dialect.name, cast(Table, model.__table__),
                             keys, update_columns, keep_if_null)
    for i in range(0, len(rows), CHUNK):
        session.execute(stmt, list(rows[i:i + CHUNK]))


@functools.lru_cache(maxsize=64)
def _upsert_statement(dialect: str, table: Table, keys: tuple[str, ...],
                      update_columns: tuple[str, ...], keep_if_null: tuple[str, ...]) -> Any:
    """Built once per shape (building one costs more than executing it on a small batch); Core,
    not the ORM's bulk path (a third of the time)."""
    stmt = (sqlite_insert if dialect == "sqlite" else pg_insert)(table)
    new: dict[str, Any] = {c: stmt.excluded[c] for c in update_columns}
    for column in keep_if_null:
        new[column] = func.coalesce(stmt.excluded[column], table.c[column])
    return stmt.on_conflict_do_update(index_elements=list(keys), set_=new)


@dataclass(frozen=True)
class Batch:
    """Points ready to write (:func:`prepare`): one per (run, key, step), the last logged, and
    each (run, key) series' own summary, computed before any lock is taken."""

    points: list[Point]
    #: (run, key) -> (first step of the batch, the summary of the batch's points alone)
    series: dict[tuple[str, str], tuple[int, dict[str, Any]]]

    @property
    def runs(self) -> set[str]:
        return {run_id for run_id, _ in self.series}


def prepare(points: Iterable[Point]) -> Batch:
    """Deduplicate ``points`` (logging order: the last wins, as the upsert would leave it) and
    summarise each series of the batch (O(1) a point). Pure: no database."""
    latest: dict[tuple[str, str, int], Point] = {}
    for point in points:
        latest[(point.run_id, point.key, point.step)] = point
    values: dict[tuple[str, str], list[tuple[int, float | None]]] = {}
    for point in sorted(latest.values(), key=lambda p: p.step):
        values.setdefault((point.run_id, point.key), []).append((point.step, point.value))
    series = {name: (pairs[0][0], of_values(name[1], pairs)) for name, pairs in values.items()}
    return Batch(list(latest.values()), series)


def write_points(session: Session, batch: Batch, now: datetime) -> int:
    """Upsert a prepared batch and bring the summaries of its series up to date (see the
    module docstring), inside the caller's transaction. The runs must exist. Returns the number
    of distinct points written."""
    if not batch.points:
        return 0
    stored = _stored_summaries(session, list(batch.series))
    summaries, replayed = [], []
    for (run_id, key), (first_step, own) in batch.series.items():
        previous = stored.get((run_id, key))
        if previous is not None and first_step <= previous["final_step"]:
            replayed.append((run_id, key))
            continue
        row = own if previous is None else merge(previous, own)
        summaries.append({"run_id": run_id, "key": key, "updated_at": now, **row})
    _upsert_metrics(session, batch.points)
    summaries += [{"run_id": run_id, "key": key, "updated_at": now,
                   **from_history(session, run_id, key)} for run_id, key in replayed]
    upsert(session, Summary, summaries, ("run_id", "key"), (*SUMMARY_FIELDS, "updated_at"))
    return len(batch.points)


#: The metrics upsert in the driver's own SQL, through its executemany: the hot path
#: (SQLAlchemy's per-row parameter processing cost ten times the insert itself). On PostgreSQL
#: a statement over arrays (unnest) was no faster: psycopg dumps list parameters in Python.
_METRICS_UPSERT = ("INSERT INTO metrics (run_id, key, step, epoch, value, logged_at) VALUES "
                   "({0}, {0}, {0}, {0}, {0}, {0}) ON CONFLICT (run_id, key, step) DO UPDATE SET "
                   "value = excluded.value, logged_at = excluded.logged_at, "
                   "epoch = coalesce(excluded.epoch, metrics.epoch)")


def _upsert_metrics(session: Session, points: list[Point]) -> None:
    """Upsert the points (one per (run, key, step)), timestamps stored as
    :class:`~sslbench.db.models.UTCDateTime` stores them."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    stamps: dict[datetime, Any] = {}
    for point in points:
        if point.logged_at not in stamps:
            stamps[point.logged_at] = _stored_time(point.logged_at, sqlite)
    rows = [(p.run_id, p.key, p.step, p.epoch, p.value, stamps[p.logged_at]) for p in points]
    sql = _METRICS_UPSERT.format("?" if sqlite else "%s")
    connection = session.connection()
    for i in range(0, len(rows), CHUNK):
        connection.exec_driver_sql(sql, rows[i:i + CHUNK])


def _stored_time(value: datetime, sqlite: bool) -> Any:
    """What UTCDateTime binds: naive UTC text on SQLite (SQLAlchemy's format), aware UTC
    elsewhere."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass a timezone-aware UTC datetime")
    value = value.astimezone(timezone.utc)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds") if sqlite else value


def _stored_summaries(session: Session, series: list[tuple[str, str]]
                      ) -> dict[tuple[str, str], dict[str, Any]]:
    """The stored summary of each (run, key) in ``series`` that has one."""
    columns = [getattr(Summary, name) for name in SUMMARY_FIELDS]
    out = {}
    for i in range(0, len(series), 500):
        chunk = series[i:i + 500]
        runs = sorted({run_id for run_id, _ in chunk})
        keys = sorted({key for _, key in chunk})
        # (run_id IN ..) AND (key IN ..) uses the primary key; the pairs are filtered here.
        stmt = select(Summary.run_id, Summary.key, *columns).where(
            Summary.run_id.in_(runs), Summary.key.in_(keys))
        wanted = set(chunk)
        for row in session.execute(stmt):
            if (row.run_id, row.key) in wanted:
                out[(row.run_id, row.key)] = {name: getattr(row, name) for name in SUMMARY_FIELDS}
    return out


def artifact_row(run_id: str, kind: str, path: str, *, size: int | None = None,
                 sha256: str | None = None) -> dict[str, Any]:
    """The ``artifacts`` row of a file; ``size`` defaults to the file's size when it exists."""
    if size is None and os.path.isfile(path):
        size = os.path.getsize(path)
    return {"run_id": run_id, "kind": kind, "path": str(path), "size": size, "sha256": sha256,
            "created_at": utcnow()}


def discard_after(session: Session, run_id: str, step: int) -> list[str]:
    """Delete the run's points past ``step`` and recompute the summaries of the keys that had
    some (deleted entirely when no point is left). Returns those keys."""
    where = (Metric.run_id == run_id, Metric.step > step)
    keys = list(session.scalars(select(Metric.key).where(*where).distinct()))
    if not keys:
        return []
    session.execute(delete(Metric).where(*where))
    left = set(session.scalars(select(Metric.key).where(
        Metric.run_id == run_id, Metric.key.in_(keys)).distinct()))
    gone = [key for key in keys if key not in left]
    if gone:
        session.execute(delete(Summary).where(Summary.run_id == run_id, Summary.key.in_(gone)))
    now = utcnow()
    rows = [{"run_id": run_id, "key": key, "updated_at": now,
             **from_history(session, run_id, key)} for key in sorted(left)]
    upsert(session, Summary, rows, ("run_id", "key"), (*SUMMARY_FIELDS, "updated_at"))
    return keys

