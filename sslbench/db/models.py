"""The results-store schema: SQLAlchemy 2.0 typed models.

One row per run in ``runs``; its flattened config in ``params``; per-step metrics in ``metrics``
keyed by (run_id, key, step) so a replay after a resume overwrites instead of duplicating; one row
per (run, metric) in ``summaries`` (final / best / min / max / count) so listings and reports never
scan the metric history; checkpoints and other files in ``artifacts``; one row per execution
attempt in ``attempts`` (pid and process start time, host, device, exit status, failure class).
The schedulers (``sslbench.runs``) add ``schedulers`` (who is scheduling, alive since when, asked
to stop?) and ``reservations``, the device ledger: one row per (host, device, slot) in use.
``sslbench_meta`` holds the schema version and marks a database as an sslbench store.

All timestamps are timezone-aware UTC (SQLite stores them naive; :class:`UTCDateTime` restores
the zone on read). This module imports neither torch nor any other sslbench module.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Bumped on every schema change, together with a new migration (``sslbench/db/migrations``,
#: revision ``000N`` for version N) and a new ``tests/fixtures/store_v<N>.sqlite`` (written by
#: ``tests/fixtures/make_stores.py``): an older store is upgraded in place when it is opened, a
#: newer one is refused with a one-line fix.
#: 2: attempt process/exit details, attempt_limit, schedulers, reservations.
#: 3: runs.numerics_json.
#: 4: Alembic's revision kept in sslbench_alembic_version (Optuna's studies share the database).
#: 5: metrics clustered on their key (SQLite WITHOUT ROWID, no key-only index); runs indexed in
#:    listing order (created_at, run_id), also per kind and status, and per method and dataset.
#: 6: recipes (a run's config without its seed, with its method and dataset) and runs.recipe_id,
#:    which ix_runs_kind_status covers with the runs' tags; ix_runs_parent holds the children's
#:    kind and status; summaries clustered on their primary key (SQLite WITHOUT ROWID).
#: 7: ix_runs_kind_status_id: the runs of a kind and status in run-id order.
#: 8: tagsets (a run's tags but its Slurm jobs') and runs.tagset_id, which ix_runs_kind_status
#:    and ix_runs_kind_status_id hold instead of the tags' text.
SCHEMA_VERSION = 8
#: The value of ``sslbench_meta.app``: what tells an sslbench store from a foreign database.
APP_NAME = "sslbench"
META_TABLE = "sslbench_meta"


class _StrEnum(str, Enum):
    """A str-valued Enum whose members *are* their stored strings (``== "running"``, same hash,
    same JSON, same text in f-strings), so the database and callers passing plain strings keep
    working. ``enum.StrEnum`` does this from Python 3.11; sslbench supports 3.10."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class RunKind(_StrEnum):
    """What a run is: a pretraining, or an evaluation of one (its ``parent_id``)."""

    PRETRAIN = "pretrain"
    EVAL = "eval"


class RunStatus(_StrEnum):
    """Where a run is in its life; the values are what ``runs.status`` stores."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    KILLED = "killed"
    INTERRUPTED = "interrupted"
    #: Stopped early by a tuning study's pruner (``sslbench tune``); resumable like 'interrupted'.
    PRUNED = "pruned"

    @property
    def terminal(self) -> bool:
        """Whether the run is over (``ended_at`` set); 'queued' and 'running' are live."""
        return self not in (RunStatus.QUEUED, RunStatus.RUNNING)


RUN_KINDS = tuple(kind.value for kind in RunKind)
RUN_STATUSES = tuple(status.value for status in RunStatus)
#: Statuses after which a run is over (``ended_at`` is set); 'queued' and 'running' are live.
TERMINAL_STATUSES = tuple(status.value for status in RunStatus if status.terminal)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A DateTime that accepts only aware datetimes and always returns aware UTC datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware UTC datetime")
        value = value.astimezone(timezone.utc)
        # SQLite has no time zones: store naive UTC there, aware elsewhere.
        return value.replace(tzinfo=None) if getattr(dialect, "name", "") == "sqlite" else value

    def process_result_value(self, value: datetime | None,
                             dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Key/value facts about the store itself: ``app``, ``schema_version``, ``created_at``."""

    __tablename__ = META_TABLE
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Recipe(Base):
    """What the seeds of a sweep share: a config without its ``seed``, with the method and
    dataset of the run. ``key`` is the SHA-256 of the three (:func:`sslbench.db.values.recipe`);
    a row is written when the first run of the recipe is created and never changed or deleted.
    The reports group runs by it (with their tag set) instead of reading every run's config."""

    __tablename__ = "recipes"
    recipe_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    method: Mapped[str | None] = mapped_column(String(64))
    dataset: Mapped[str | None] = mapped_column(String(64))
    config_json: Mapped[str] = mapped_column(Text)


class TagSet(Base):
    """What the reports see of a run's tags: the tags but the Slurm jobs that ran it, unique and
    sorted (:func:`sslbench.db.values.tagset`); ``key`` is the SHA-256 of ``tags_json``. A row
    is written when a run first has that set, and never changed or deleted."""

    __tablename__ = "tagsets"
    tagset_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    tags_json: Mapped[str] = mapped_column(Text)


class Run(Base):
    """One pretraining or evaluation run; ``run_id`` is the hash of its resolved identity."""

    __tablename__ = "runs"
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    method: Mapped[str | None] = mapped_column(String(64))
    dataset: Mapped[str | None] = mapped_column(String(64))
    parent_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("runs.run_id", ondelete="SET NULL"))
    config_json: Mapped[str] = mapped_column(Text)
    command_json: Mapped[str] = mapped_column(Text, default="[]")
    env_json: Mapped[str] = mapped_column(Text, default="{}")
    tags_json: Mapped[str] = mapped_column(Text, default="[]")
    error: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: Attempts a scheduler or the reaper may start in all (NULL: the default budget).
    attempt_limit: Mapped[int | None] = mapped_column(Integer)
    #: The execution settings that change a run's numbers (CPU intra-op threads, CUDA
    #: precision/determinism flags), recorded as JSON at the run's first start and applied on
    #: every resume, so a resumed run computes as it began (NULL: not started since version 3).
    numerics_json: Mapped[str | None] = mapped_column(Text)
    #: The run's recipe, set when the run is created, from its config, method and dataset, none
    #: of which ever changes. Nullable only because SQLite adds a column to an older store so;
    #: the upgrade fills it for every run.
    recipe_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("recipes.recipe_id"))
    #: The run's tag set, set with its tags (``tags_json``) whenever they change. NULL only for
    #: a run that an sslbench older than schema 8 created since the upgrade: the next report
    #: gives it its set.
    tagset_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("tagsets.tagset_id"))

    __table_args__ = (
        # Pages of a kind and status in listing order; with the recipe and tag set, also the
        # reports' scan of the completed pretraining runs, without reading the table.
        Index("ix_runs_kind_status", "kind", "status", "created_at", "run_id", "recipe_id",
              "tagset_id"),
        # The same runs in run-id order, for the reports' scan of every completed pretraining
        # run: their summaries (keyed by run id, which is a hash) are then looked up in the
        # order they are stored in, not all over the table.
        Index("ix_runs_kind_status_id", "kind", "status", "run_id", "created_at", "recipe_id",
              "tagset_id"),
        # Covers counting (runs list's footer) under any filter on these four, and sorting a
        # method's runs for a page without reading the table.
        Index("ix_runs_method_dataset", "method", "dataset", "kind", "status", "created_at",
              "run_id"),
        # A run's children of a kind and status (eval --pending asks it of every completed
        # pretraining run): all three, or SQLite may pick ix_runs_kind_status, read every
        # completed evaluation for each run, and take seconds.
        Index("ix_runs_parent", "parent_id", "kind", "status"),
        # A recipe's runs: the one whose params a report reads for the whole recipe.
        Index("ix_runs_recipe", "recipe_id", "run_id"),
        Index("ix_runs_status_heartbeat", "status", "heartbeat_at"),
        Index("ix_runs_created", "created_at", "run_id"),
    )


class Param(Base):
    """One flattened config entry (dotted key). Numbers and bools are also in ``value_num``."""

    __tablename__ = "params"
    run_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value_type: Mapped[str] = mapped_column(String(8))
    value_text: Mapped[str | None] = mapped_column(Text)
    value_num: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_params_key_num", "key", "value_num"),)


class Metric(Base):
    """One logged value. NaN is stored as NULL (SQLite cannot hold NaN) and read back as NaN.

    Every read goes by run (then key, then step): the primary key is the only index, and on
    SQLite the table *is* that index (WITHOUT ROWID), so a point costs one B-tree insert."""

    __tablename__ = "metrics"
    run_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                      primary_key=True)
    epoch: Mapped[int | None] = mapped_column(Integer)
    value: Mapped[float | None] = mapped_column(Float)
    logged_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = {"sqlite_with_rowid": False}


class Summary(Base):
    """Final and best value of one metric of one run, refreshed on every ``log_metrics``.

    Read by run and key (the primary key): on SQLite the table *is* that index (WITHOUT
    ROWID), so a report's lookup of a run's summary is one B-tree search, not two."""

    __tablename__ = "summaries"
    run_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    goal: Mapped[str] = mapped_column(String(3))
    final: Mapped[float | None] = mapped_column(Float)
    final_step: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    best: Mapped[float | None] = mapped_column(Float)
    best_step: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    min: Mapped[float | None] = mapped_column(Float)
    max: Mapped[float | None] = mapped_column(Float)
    count: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_summaries_key_final", "key", "final"),
                      {"sqlite_with_rowid": False})


class Artifact(Base):
    """A file a run produced (checkpoint, exported backbone, log); unique per (run, path)."""

    __tablename__ = "artifacts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), ForeignKey("runs.run_id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("run_id", "path", name="uq_artifacts_run_path"),)


class Attempt(Base):
    """One execution of a run: opened on 'running', closed by the next terminal status."""

    __tablename__ = "attempts"
    run_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str | None] = mapped_column(String(16))
    failure_class: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    #: Start time of process ``pid`` (clock ticks since boot): tells our process from a reused pid.
    proc_start: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    device: Mapped[str | None] = mapped_column(String(64))
    scheduler_id: Mapped[str | None] = mapped_column(String(128))
    log_path: Mapped[str | None] = mapped_column(Text)


class Scheduler(Base):
    """One scheduler process (local, or one Slurm task); it heartbeats while it lives."""

    __tablename__ = "schedulers"
    scheduler_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    backend: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    proc_start: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    slots_json: Mapped[str] = mapped_column(Text, default="[]")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    stop_requested: Mapped[bool] = mapped_column(default=False)

    __table_args__ = (Index("ix_schedulers_host", "host", "ended_at"),)


class Reservation(Base):
    """The device ledger: slot ``slot`` of ``device`` on ``host`` is held by ``run_id``.

    The primary key makes a reservation atomic: two schedulers on one host can never hand the
    same slot to two runs. An exclusive run (an out-of-memory retry) holds every slot of its
    device. Rows are deleted when the attempt ends (or by the reaper, for a dead scheduler).
    """

    __tablename__ = "reservations"
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    device: Mapped[str] = mapped_column(String(64), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), ForeignKey("runs.run_id", ondelete="CASCADE"))
    scheduler_id: Mapped[str] = mapped_column(String(128))
    reserved_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_reservations_run", "run_id"),
                      Index("ix_reservations_scheduler", "scheduler_id"))
