"""The results store: one object, one short session per operation, plain data out.

Usage::

    store = Store.open()                    # $SSLBENCH_DB or $SSLBENCH_HOME/db/sslbench.sqlite
    run, created = store.upsert_run(run_id=cfg.run_id, kind=RunKind.PRETRAIN,
                                    config=cfg.to_dict(), command=sys.argv, env=environment())
    store.set_status(run.run_id, RunStatus.RUNNING)
    store.log_metrics(run.run_id, step, {"loss": 1.2, "online_top1": 41.0}, epoch=3)
    store.set_status(run.run_id, RunStatus.COMPLETED)

Kinds and statuses are :class:`~sslbench.db.models.RunKind` and
:class:`~sslbench.db.models.RunStatus` members or their plain strings (the members *are* those
strings). What training and evaluation write through is the narrower
:class:`sslbench.db.writer.RunWriter`, which a ``Store`` satisfies.

Every write is one short transaction (``BEGIN IMMEDIATE`` on SQLite), so a failure leaves nothing
half-written. A ``Store`` must not cross a ``fork``: open one per process.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, Engine, Table, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from sslbench.db import ownership, queries
from sslbench.db.engine import (
    WRITE_OPTION,
    build_engine,
    describe_db_error,
    init_schema,
    parse_url,
    prepare_sqlite_folder,
    resolve_url,
    safe_url,
    sqlite_path,
)
from sslbench.db.ingest import (
    CHUNK,
    Point,
    artifact_row,
    discard_after,
    prepare,
    upsert,
    write_points,
)
from sslbench.db.keyed import keyed_ids, tagset_ids
from sslbench.db.liveness import process_start_time
from sslbench.db.models import (
    RUN_KINDS,
    RUN_STATUSES,
    Artifact,
    Attempt,
    Metric,
    Param,
    Recipe,
    Run,
    RunKind,
    RunStatus,
    Summary,
    utcnow,
)
from sslbench.db.records import NewRun, RunRecord
from sslbench.db.scheduling import SchedulingMixin
from sslbench.db.values import encode_param, flatten, recipe, to_json, to_metric_value
from sslbench.errors import StoreError, UnknownRunError

if TYPE_CHECKING:  # the frames' functions import it (sslbench.db.queries)
    import pandas as pd


class Store(SchedulingMixin):
    """A connection to an sslbench results store (SQLite file or PostgreSQL database).

    The scheduler's operations (claims, the device ledger, attempt details) come from
    :class:`sslbench.db.scheduling.SchedulingMixin`.
    """

    #: Set by :meth:`open` when it upgraded an older store in place: the schema version found.
    upgraded_from: int | None = None
    #: The copy of the SQLite file :meth:`open` took before that upgrade (None otherwise).
    backup_path: Path | None = None

    def __init__(self, engine: Engine, url: str) -> None:
        self._engine = engine
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        self.url = url

    @classmethod
    def open(cls, url: str | None = None, *, create: bool = True,
             busy_timeout_s: float | None = None) -> Store:
        """Connect, create the schema if the database is empty, upgrade an older one in place.

        ``url``: explicit URL or SQLite path, else ``$SSLBENCH_DB``, else
        ``$SSLBENCH_HOME/db/sslbench.sqlite``. With ``create=False`` (read-only commands) a
        missing store is a StoreError and nothing is created on disk; an older store is
        upgraded all the same when it can be written. After an upgrade, ``upgraded_from`` and
        ``backup_path`` say what happened, for the caller to tell the user (nothing is printed).
        A store newer than this sslbench is a StoreError. ``busy_timeout_s``: how long a SQLite
        write waits for another writer's lock before failing (default 30 s).
        """
        text = resolve_url(url)
        parsed = parse_url(text)
        engine = (build_engine(parsed) if busy_timeout_s is None else
                  build_engine(parsed, busy_timeout_ms=int(busy_timeout_s * 1000)))
        path = sqlite_path(parsed) if engine.dialect.name == "sqlite" else None
        try:
            if path is not None:
                prepare_sqlite_folder(path, create)
            upgrade = init_schema(engine, parsed, create=create)
        except BaseException:
            engine.dispose()
            raise
        store = cls(engine, text)
        if upgrade is not None:
            store.upgraded_from, store.backup_path = upgrade.from_version, upgrade.backup_path
        return store

    def close(self) -> None:
        """Release the connections (the store can no longer be used)."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def display_url(self) -> str:
        """The URL with its password masked, for messages."""
        return safe_url(self.url)

    def __repr__(self) -> str:
        return f"Store({self.display_url!r})"

    @contextlib.contextmanager
    def _session(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error."""
        engine = self._write_engine if write else self._engine
        try:
            with Session(engine, expire_on_commit=False) as session, session.begin():
                yield session
        except DBAPIError as exc:
            raise StoreError(describe_db_error(exc, self.url)) from None

    @staticmethod
    def _require_run(session: Session, run_id: str) -> None:
        Store._require_runs(session, {run_id})

    @staticmethod
    def _require_runs(session: Session, run_ids: Iterable[str]) -> None:
        wanted = set(run_ids)
        found = set(session.scalars(select(Run.run_id).where(Run.run_id.in_(wanted))))
        for run_id in sorted(wanted - found)[:1]:
            raise UnknownRunError(f"no run {run_id!r} in the store: create it with upsert_run "
                                  "first (or list runs with `sslbench runs list`)")

    # ----------------------------------------------------------------------------- runs (writes)

    def upsert_run(self, *, run_id: str, kind: RunKind | str, config: Mapping[str, Any],
                   command: list[str], env: Mapping[str, Any], parent_id: str | None = None,
                   method: str | None = None, dataset: str | None = None,
                   tags: list[str] | None = None
                   ) -> tuple[RunRecord, bool]:
        """Create the run (status 'queued') with its flattened params, or return the stored one
        unchanged. Returns ``(record, created)``. ``method`` / ``dataset`` default to the
        config's values."""
        new = NewRun(run_id=run_id, kind=kind, config=config, command=command, env=env,
                     parent_id=parent_id, method=method, dataset=dataset, tags=tags)
        (created,) = self.upsert_runs([new])
        with self._session() as session:
            return queries.get_run(session, run_id), created

    def upsert_runs(self, runs: Sequence[NewRun]) -> list[bool]:
        """:meth:`upsert_run` for many runs in one write transaction (a sweep's grid): each run
        that is not stored yet is created with its params. Returns, run by run, whether it was
        created. Parents must be stored already or come earlier in ``runs``."""
        for run in runs:  # a caller's bug: user input is checked before it gets here
            if run.kind not in RUN_KINDS:
                raise ValueError(f"unknown run kind {run.kind!r}: use one of "
                                 f"{', '.join(RUN_KINDS)}")
        now = utcnow()
        table = cast(Table, Run.__table__)
        with self._session(write=True) as session:
            insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else pg_insert
            ours = {run.run_id for run in runs}
            parents = {r.parent_id for r in runs if r.parent_id is not None} - ours
            self._require_parents(session, parents, runs)
            recipes = [run.recipe_row() for run in runs]
            recipe_ids = keyed_ids(session, Recipe, recipes)
            tag_sets = tagset_ids(session, [run.tags or () for run in runs])
            new: set[str] = set()
            stmt = insert(table).on_conflict_do_nothing().returning(table.c.run_id)
            for i in range(0, len(runs), CHUNK // 4):
                # RETURNING (one row per run created), not rowcount: psycopg reports -1 for
                # INSERT ... ON CONFLICT DO NOTHING.
                rows = [run.row(now, recipe_ids[recipe["key"]], tag_set)
                        for run, recipe, tag_set in zip(runs[i:i + CHUNK // 4],
                                                        recipes[i:i + CHUNK // 4],
                                                        tag_sets[i:i + CHUNK // 4])]
                new.update(session.scalars(stmt, rows))
            param_rows = [dict(zip(("value_type", "value_text", "value_num"),
                                   encode_param(leaf)), run_id=run.run_id, key=key)
                          for run in runs if run.run_id in new
                          for key, leaf in flatten(run.config)]
            for i in range(0, len(param_rows), CHUNK):
                session.execute(cast(Table, Param.__table__).insert(), param_rows[i:i + CHUNK])
        return [run.run_id in new for run in runs]

    def _fill_recipes(self) -> None:
        """Give runs without a recipe theirs: runs that an sslbench older than schema 6, still
        running when the store was upgraded, created since (it does not know the column). One
        indexed look (``ix_runs_recipe`` holds them first) when there are none."""
        missing = select(Run.run_id).where(Run.recipe_id.is_(None))
        with self._session() as session:
            if session.scalar(missing.limit(1)) is None:
                return
        with self._session(write=True) as session:
            rows = session.execute(select(Run.run_id, Run.config_json, Run.method, Run.dataset)
                                   .where(Run.recipe_id.is_(None))).all()
            keys = [recipe(json.loads(config), method, dataset)
                    for _, config, method, dataset in rows]
            ids = keyed_ids(session, Recipe, [
                {"key": key, "config_json": text, "method": row.method, "dataset": row.dataset}
                for (key, text), row in zip(keys, rows)])
            session.execute(update(Run), [{"run_id": row.run_id, "recipe_id": ids[key]}
                                          for (key, _), row in zip(keys, rows)])

    def _fill_tagsets(self) -> None:
        """Give runs without a tag set theirs: runs that an sslbench older than schema 8, still
        running when the store was upgraded, created since (it does not know the column). The
        reports find them as they read the runs' tag sets, so this costs nothing until then."""
        with self._session(write=True) as session:
            rows = session.execute(select(Run.run_id, Run.tags_json)
                                   .where(Run.tagset_id.is_(None))).all()
            ids = tagset_ids(session, [json.loads(tags or "[]") for _, tags in rows])
            session.execute(update(Run), [{"run_id": row.run_id, "tagset_id": tag_set}
                                          for row, tag_set in zip(rows, ids)])

    @staticmethod
    def _require_parents(session: Session, parents: set[str], runs: Sequence[NewRun]) -> None:
        found = set(session.scalars(select(Run.run_id).where(Run.run_id.in_(parents))))
        for run in runs:
            if run.parent_id in parents - found:
                raise UnknownRunError(f"parent run {run.parent_id!r} of {run.run_id!r} is not in "
                                      "the store: record the pretraining run first")

    def set_status(self, run_id: str, status: RunStatus | str, *, error: str | None = None,
                   pid: int | None = None, failure_class: str | None = None,
                   claim: int | None = None) -> None:
        """Move a run to ``status`` and record the attempt.

        'running' takes ownership of the run for process ``pid`` (default: this one) and opens a
        new attempt (its pid and process start time, see :mod:`sslbench.db.liveness`), sets
        ``started_at`` the first time and clears ``ended_at``. When the run is already running:
        its open attempt is adopted if it is this pid's, or if ``claim`` names it (a scheduler
        claimed the run and started this process for attempt ``claim``); a live owner makes
        this a :class:`~sslbench.db.ownership.RunBusyError` naming it; a dead owner's attempt is
        closed as 'killed' first. See :mod:`sslbench.db.ownership`.

        'queued' clears ``ended_at``; a terminal status sets ``ended_at`` and closes the open
        attempt -- unless another live process owns the run by now (this one was presumed dead
        and taken over), which the call then leaves alone. ``error`` (a traceback is fine)
        replaces the run's error text; None clears it.
        """
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}: use one of "
                             f"{', '.join(RUN_STATUSES)}")
        status = RunStatus(status)
        now, pid = utcnow(), pid if pid is not None else os.getpid()
        with self._session(write=True) as session:
            row = session.scalars(select(Run).where(Run.run_id == run_id).with_for_update()).first()
            if row is None:
                self._require_run(session, run_id)
                return
            current = ownership.open_attempt(session, row)
            if status is RunStatus.RUNNING:
                self._take_ownership(session, row, current, pid, claim, now)
                return
            if (current is not None and current.pid not in (None, pid)
                    and ownership.owner_dead(session, row, current) is None):
                return  # taken over by a live process: its result is the run's, not ours
            row.status, row.error, row.updated_at = status, error, now
            if status.terminal:
                row.ended_at = now
                session.execute(update(Attempt).where(
                    Attempt.run_id == run_id, Attempt.attempt == row.attempts,
                    Attempt.ended_at.is_(None)).values(
                    ended_at=now, status=status, error=error, failure_class=failure_class))
            else:  # 'queued' again: the run is live, waiting for its next attempt
                row.ended_at = None

    @staticmethod
    def _take_ownership(session: Session, row: Run, current: Attempt | None, pid: int,
                        claim: int | None, now: Any) -> None:
        """The 'running' half of :meth:`set_status` (inside its transaction, row locked)."""
        host, started = socket.gethostname(), process_start_time(pid)
        if current is not None:
            mine = current.pid == pid or (claim is not None and current.attempt == claim)
            if not mine:
                reason = ownership.owner_dead(session, row, current, now=now)
                if reason is None:
                    raise ownership.RunBusyError(ownership.busy_message(row, current))
                current.ended_at, current.status = now, RunStatus.KILLED
                current.failure_class = "lost"
                current.error = f"taken over by pid {pid} on {host}: {reason}"
                current = None
        row.status, row.error, row.updated_at = RunStatus.RUNNING, None, now
        row.started_at = row.started_at or now
        row.ended_at, row.heartbeat_at = None, now
        row.pid, row.host = pid, host
        if current is not None:  # adopt the attempt a scheduler opened for this process
            current.pid, current.host, current.proc_start = pid, host, started
            return
        row.attempts += 1
        session.add(Attempt(run_id=row.run_id, attempt=row.attempts, host=host, pid=pid,
                            proc_start=started, started_at=now))

    def heartbeat(self, run_id: str) -> None:
        """Record that the run's process is alive now."""
        now = utcnow()
        with self._session(write=True) as session:
            result = session.execute(update(Run).where(Run.run_id == run_id)
                                     .values(heartbeat_at=now, updated_at=now))
            if cast(CursorResult[Any], result).rowcount == 0:
                self._require_run(session, run_id)

    def adopt_numerics(self, run_id: str, proposed: Mapping[str, Any]) -> dict[str, Any]:
        """The run's numerics settings (``Run.numerics_json``): the first caller's ``proposed``
        is stored (sorted-key JSON); every later one gets the stored mapping back unchanged, so
        a resume computes as the run began. Returns the mapping as stored (JSON-decoded: tuples
        come back as lists)."""
        with self._session(write=True) as session:
            self._require_run(session, run_id)
            # One conditional UPDATE: of two racing first starts, the row lock lets one win.
            session.execute(update(Run).where(Run.run_id == run_id, Run.numerics_json.is_(None))
                            .values(numerics_json=to_json(proposed)))
            stored = session.scalar(select(Run.numerics_json).where(Run.run_id == run_id))
        return dict(json.loads(stored or "{}"))  # never None: set above if it was

    def delete_run(self, run_id: str) -> None:
        """Delete a run with its params, metrics, summaries, artifacts rows and attempts
        (children keep existing with ``parent_id`` set to NULL). Files are not touched."""
        with self._session(write=True) as session:
            full = queries.resolve_run_id(session, run_id)
            session.execute(update(Run).where(Run.parent_id == full).values(parent_id=None))
            for model in (Param, Metric, Summary, Artifact, Attempt):
                session.execute(delete(model).where(model.run_id == full))
            session.execute(delete(Run).where(Run.run_id == full))

    # -------------------------------------------------------------------- metrics and artifacts

    def log_metrics(self, run_id: str, step: int, metrics: Mapping[str, Any], *,
                    epoch: int | None = None) -> None:
        """Upsert ``metrics`` at ``step`` (a replay overwrites the value; the epoch too unless the
        replay gives none) and bring their summaries up to date, in one short write transaction
        (:func:`sslbench.db.ingest.write_points`). NaN is stored as NULL, read back as NaN, and
        ignored by best/min/max."""
        now = utcnow()
        self.write_batch([Point(run_id, key, int(step), to_metric_value(key, value), epoch, now)
                          for key, value in metrics.items()])

    def log_series(self, run_id: str, key: str, values: Iterable[Any], *, start: int = 0) -> None:
        """Upsert one metric at consecutive steps ``start, start + 1, ...`` (a spectrum, a
        histogram) in one write transaction."""
        now = utcnow()
        self.write_batch([Point(run_id, key, start + i, to_metric_value(key, value), None, now)
                          for i, value in enumerate(values)])

    def write_batch(self, points: Sequence[Point] = (), *,
                    artifacts: Sequence[Mapping[str, Any]] = (),
                    heartbeats: Mapping[str, Any] | None = None) -> None:
        """Write what a run logged since the last batch in one transaction: metric points (of
        any runs; see :mod:`sslbench.db.ingest`), artifact rows (as :meth:`log_artifact` makes
        them) and ``heartbeats`` (``{run_id: time}``). Every run named must exist."""
        batch = prepare(points)  # before the write lock: see sslbench.db.ingest
        runs = batch.runs | {a["run_id"] for a in artifacts} | set(heartbeats or {})
        if not runs:
            return
        with self._session(write=True) as session:
            self._require_runs(session, runs)
            write_points(session, batch, utcnow())
            upsert(session, Artifact, [dict(a) for a in artifacts], ("run_id", "path"),
                   ("kind", "size", "sha256", "created_at"))
            for run_id, at in (heartbeats or {}).items():
                session.execute(update(Run).where(Run.run_id == run_id)
                                .values(heartbeat_at=at, updated_at=at))

    def truncate_metrics(self, run_id: str, after_step: int) -> None:
        """Delete the run's metric points past ``after_step`` (what a resumed run recomputes
        from its checkpoint) and recompute the summaries of their keys."""
        with self._session(write=True) as session:
            self._require_run(session, run_id)
            discard_after(session, run_id, after_step)

    def flush(self) -> None:
        """Nothing to do: every write of a Store is done when its call returns (the buffered
        writer of :mod:`sslbench.db.buffered` is where this waits)."""

    def log_artifact(self, run_id: str, kind: str, path: str, *, size: int | None = None,
                     sha256: str | None = None) -> None:
        """Record a file of the run; re-logging the same path updates kind, size and hash.
        ``size`` defaults to the file's size when it exists."""
        self.write_batch(artifacts=[artifact_row(run_id, kind, path, size=size, sha256=sha256)])

    # -------------------------------------------------------------------------------- reads

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this id or unique id prefix (>= 4 characters); else UnknownRunError."""
        with self._session() as session:
            return queries.get_run(session, run_id)

    def resolve_run_id(self, run_id: str) -> str:
        """The full id of a run id or unique prefix; else UnknownRunError."""
        with self._session() as session:
            return queries.resolve_run_id(session, run_id)

    def find_runs(self, *, kind: queries.StrFilter = None, status: queries.StrFilter = None,
                  method: queries.StrFilter = None, dataset: queries.StrFilter = None,
                  parent_id: str | None = None, limit: int | None = None,
                  offset: int = 0, newest: bool = False) -> list[RunRecord]:
        """Runs matching every given filter (each one value or a sequence), oldest first;
        ``limit`` of them from ``offset`` (None: all), counted from the newest run with
        ``newest``."""
        with self._session() as session:
            return queries.find_runs(session, kind=kind, status=status, method=method,
                                     dataset=dataset, parent_id=parent_id, limit=limit,
                                     offset=offset, newest=newest)

    def count_runs(self, **filters: Any) -> int:
        """How many runs :meth:`find_runs` would list without a limit."""
        with self._session() as session:
            return queries.count_runs(session, **filters)

    def pending_evaluations(self, protocols: Sequence[str]) -> list[tuple[str, str]]:
        """(run id, protocol) for each completed pretraining run lacking a completed evaluation
        by that protocol (see :func:`sslbench.db.queries.pending_evaluations`)."""
        with self._session() as session:
            return queries.pending_evaluations(session, protocols)

    def runs_frame(self, *, params: Iterable[str] | None = None,
                   summaries: Iterable[str] | None = None, limit: int | None = None,
                   offset: int = 0, **filters: Any) -> pd.DataFrame:
        """One row per run; see :func:`sslbench.db.queries.runs_frame` for the columns."""
        with self._session() as session:
            return queries.runs_frame(
                session, params=None if params is None else list(params),
                summaries=None if summaries is None else list(summaries), limit=limit,
                offset=offset, **filters)

    def recipe_runs(self, *, params: Iterable[str], summaries: Iterable[str],
                    since: datetime | None = None, before: datetime | None = None,
                    run_ids: bool = True, parts: Sequence[str] = ("final", "best"),
                    tags: Sequence[str] | None = None,
                    parsed: dict[Any, pd.DataFrame] | None = None, **filters: Any
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The runs grouped by recipe (config without its seed, method, dataset, tags);
        see :func:`sslbench.db.queries.recipe_runs`."""
        def query() -> tuple[pd.DataFrame, pd.DataFrame]:
            with self._session() as session:
                return queries.recipe_runs(
                    session, params=list(params), summaries=list(summaries), since=since,
                    before=before, run_ids=run_ids, parts=parts, tags=tags, parsed=parsed,
                    **filters)

        self._fill_recipes()
        try:
            return query()
        except queries.UnnumberedRunsError:  # runs that an older sslbench created
            self._fill_tagsets()
            return query()

    def metrics_frame(self, run_id: str, key: str | None = None) -> pd.DataFrame:
        """The metric history: columns run_id, key, step, epoch, value, sorted by key, step."""
        with self._session() as session:
            return queries.metrics_frame(session, queries.resolve_run_id(session, run_id), key)

    def summary(self, run_id: str) -> dict[str, float]:
        """Final value (at the largest step) of every metric of the run."""
        return {key: stats["final"] for key, stats in self.summary_stats(run_id).items()}

    def summary_stats(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Every summary field (final, final_step, best, best_step, min, max, count, goal)."""
        with self._session() as session:
            full = queries.resolve_run_id(session, run_id)
            return queries.summaries(session, [full]).get(full, {})

    def final_summaries(self, run_ids: Iterable[str]) -> dict[str, dict[str, float]]:
        """``{run_id: {key: final}}`` for many runs in one query (runs without metrics: {})."""
        ids = list(run_ids)
        with self._session() as session:
            found = queries.summaries(session, ids)
        return {rid: {k: s["final"] for k, s in found.get(rid, {}).items()} for rid in ids}

    def params(self, run_id: str) -> dict[str, Any]:
        """The flattened config, decoded to Python values, by dotted key."""
        with self._session() as session:
            return queries.params(session, queries.resolve_run_id(session, run_id))

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        """Files of the run: kind, path, size, sha256, created_at (ISO)."""
        with self._session() as session:
            return queries.artifacts(session, queries.resolve_run_id(session, run_id))

    def attempts(self, run_id: str) -> list[dict[str, Any]]:
        """Execution attempts of the run, first to last."""
        with self._session() as session:
            return queries.attempts(session, queries.resolve_run_id(session, run_id))
