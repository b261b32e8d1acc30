"""Plain, immutable records handed out by the store (never live ORM rows)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sslbench.db.models import Run, RunKind, RunStatus
from sslbench.db.values import recipe, to_json


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _json_number(value: float | None) -> float | None:
    """NaN/inf are not JSON: they become None."""
    return None if value is None or not math.isfinite(value) else value


@dataclass(frozen=True)
class RunRecord:
    """One run as stored. Timestamps are timezone-aware UTC (or None)."""

    run_id: str
    kind: str
    status: str
    method: str | None
    dataset: str | None
    parent_id: str | None
    config: dict[str, Any]
    command: list[str]
    env: dict[str, Any]
    error: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    heartbeat_at: datetime | None
    tags: list[str] = field(default_factory=list)
    host: str | None = None
    pid: int | None = None
    attempts: int = 0
    updated_at: datetime | None = None
    attempt_limit: int | None = None
    #: The settings that change the run's numbers, as recorded at its first start ({}: none yet).
    numerics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Run) -> RunRecord:
        """Copy an ORM row into a record (decoding the JSON columns)."""
        return cls(
            run_id=row.run_id, kind=row.kind, status=row.status, method=row.method,
            dataset=row.dataset, parent_id=row.parent_id, config=json.loads(row.config_json),
            command=json.loads(row.command_json), env=json.loads(row.env_json), error=row.error,
            created_at=row.created_at, started_at=row.started_at, ended_at=row.ended_at,
            heartbeat_at=row.heartbeat_at, tags=json.loads(row.tags_json), host=row.host,
            pid=row.pid, attempts=row.attempts, updated_at=row.updated_at,
            attempt_limit=row.attempt_limit,
            numerics=json.loads(row.numerics_json) if row.numerics_json is not None else {},
        )

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end (or None while not both are known)."""
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    def to_dict(self, summary: dict[str, float] | None = None) -> dict[str, Any]:
        """A JSON-able dict: identity, status, config, ``summary`` (final metrics), env, times."""
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "status": self.status,
            "method": self.method,
            "dataset": self.dataset,
            "parent_id": self.parent_id,
            "config": self.config,
            "summary": {k: _json_number(v) for k, v in (summary or {}).items()},
            "env": self.env,
            "command": list(self.command),
            "tags": list(self.tags),
            "error": self.error,
            "host": self.host,
            "pid": self.pid,
            "attempts": self.attempts,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
            "heartbeat_at": _iso(self.heartbeat_at),
            "duration_s": self.duration_s,
            "numerics": self.numerics,
        }


@dataclass(frozen=True)
class NewRun:
    """A run to create (:meth:`sslbench.db.Store.upsert_runs`); ``method`` / ``dataset``
    default to the config's values."""

    run_id: str
    kind: RunKind | str
    config: Mapping[str, Any]
    command: list[str]
    env: Mapping[str, Any]
    parent_id: str | None = None
    method: str | None = None
    dataset: str | None = None
    tags: list[str] | None = None

    @property
    def method_name(self) -> str | None:
        return self.method if self.method is not None else self.config.get("method")

    @property
    def dataset_name(self) -> str | None:
        return self.dataset if self.dataset is not None else self.config.get("dataset")

    def recipe_row(self) -> dict[str, Any]:
        """The ``recipes`` row of the run's recipe (:func:`sslbench.db.values.recipe`)."""
        key, text = recipe(self.config, self.method_name, self.dataset_name)
        return {"key": key, "method": self.method_name, "dataset": self.dataset_name,
                "config_json": text}

    def row(self, now: datetime, recipe_id: int, tagset_id: int) -> dict[str, Any]:
        """The ``runs`` row of the new run (status 'queued', no attempt yet) of recipe
        ``recipe_id`` and tag set ``tagset_id``."""
        return {
            "run_id": self.run_id, "kind": RunKind(self.kind), "status": RunStatus.QUEUED,
            "method": self.method_name, "dataset": self.dataset_name, "recipe_id": recipe_id,
            "tagset_id": tagset_id,
            "parent_id": self.parent_id, "config_json": to_json(self.config),
            "command_json": json.dumps(list(self.command)),
            "tags_json": json.dumps(list(self.tags or [])), "env_json": to_json(self.env),
            "host": self.env.get("host"), "attempts": 0, "created_at": now, "updated_at": now,
        }
