"""Rows named by the hash of what they hold (recipes, tag sets): written once, by whoever first
needs one, and never changed, so a key always means the same row."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from sslbench.db.models import Recipe, TagSet
from sslbench.db.values import tagset


def keyed_ids(session: Session, model: type[Recipe] | type[TagSet],
              rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """``{key: id}`` of ``rows`` of ``model``'s table (each with its ``key``), inserting those not
    stored yet (a concurrent writer's insert of the same key is kept: the row is the same)."""
    table = cast(Table, model.__table__)
    insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else pg_insert
    unique = list({row["key"]: row for row in rows}.values())
    id_column = table.primary_key.columns[0]
    ids: dict[str, int] = {}
    for i in range(0, len(unique), 500):
        chunk = unique[i:i + 500]
        session.execute(insert(table).on_conflict_do_nothing(), chunk)
        found = session.execute(select(table.c.key, id_column).where(
            table.c.key.in_([row["key"] for row in chunk])))
        ids.update((key, int(row_id)) for key, row_id in found)
    return ids


def tagset_ids(session: Session, tag_lists: Sequence[Iterable[str]]) -> list[int]:
    """The ids of the tag sets of these runs' tags (:func:`sslbench.db.values.tagset`), in
    their order, inserting the sets not stored yet."""
    sets = [tagset(tags) for tags in tag_lists]
    ids = keyed_ids(session, TagSet, [{"key": key, "tags_json": text} for key, text in sets])
    return [ids[key] for key, _ in sets]


def tagset_id(session: Session, tags: Iterable[str]) -> int:
    """The id of the tag set of ``tags``."""
    return tagset_ids(session, [tags])[0]
