"""Keeping ``summaries`` (final / best / min / max / count of each metric of a run) current.

Appending a new step updates a summary in O(1) (:func:`append_value`), so logging stays fast
however long the history grows; a replay of a step that already exists (after a resume) or a
first value recomputes the key from its history (:func:`from_history`), since the overwritten
value may have been the best or the final one. "Best" follows :func:`metric_goal`; ties go to
the earliest step; NaN values (stored as NULL) count in ``count`` and ``final`` but never in
best / min / max.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sslbench.db.models import Metric, Summary
from sslbench.db.values import metric_goal

FIELDS = ("goal", "final", "final_step", "best", "best_step", "min", "max", "count")


def append_value(previous: dict[str, Any], step: int, value: float | None) -> dict[str, Any]:
    """The summary after adding ``value`` at a ``step`` the history did not hold yet."""
    row = dict(previous)
    row["count"] = previous["count"] + 1
    if step > previous["final_step"]:
        row.update(final=value, final_step=step)
    if value is None:
        return row
    row["min"] = value if previous["min"] is None else min(previous["min"], value)
    row["max"] = value if previous["max"] is None else max(previous["max"], value)
    best, best_step = previous["best"], previous["best_step"]
    if best is None:
        better = True
    elif value == best:
        better = step < best_step
    else:
        better = value > best if previous["goal"] == "max" else value < best
    if better:
        row.update(best=value, best_step=step)
    return row


def from_history(session: Session, run_id: str, key: str) -> dict[str, Any]:
    """The summary of ``key`` recomputed from every stored value (indexed queries)."""
    where = (Metric.run_id == run_id, Metric.key == key)
    count, low, high = session.execute(
        select(func.count(), func.min(Metric.value), func.max(Metric.value)).where(*where)).one()
    final_step, final = session.execute(
        select(Metric.step, Metric.value).where(*where).order_by(Metric.step.desc()).limit(1)
    ).one()
    goal = metric_goal(key)
    order = Metric.value.desc() if goal == "max" else Metric.value.asc()
    best = session.execute(select(Metric.step, Metric.value).where(
        *where, Metric.value.is_not(None)).order_by(order, Metric.step.asc()).limit(1)).first()
    best_step, best_value = best if best is not None else (None, None)
    return {"goal": goal, "final": final, "final_step": final_step, "best": best_value,
            "best_step": best_step, "min": low, "max": high, "count": count}


def appended_summaries(session: Session, run_id: str, step: int,
                       values: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    """Summaries of the keys for which ``step`` is new, updated in O(1). Call it *before*
    upserting the values (it reads which steps exist); the other keys need :func:`from_history`
    after the upsert."""
    keys = list(values)
    replayed = set(session.scalars(select(Metric.key).where(
        Metric.run_id == run_id, Metric.key.in_(keys), Metric.step == step)))
    columns = [getattr(Summary, name) for name in FIELDS]
    stored = session.execute(select(Summary.key, *columns).where(
        Summary.run_id == run_id, Summary.key.in_(keys)))
    out = {}
    for row in stored:
        if row.key not in replayed:
            previous = {name: getattr(row, name) for name in FIELDS}
            out[row.key] = append_value(previous, step, values[row.key])
    return out
