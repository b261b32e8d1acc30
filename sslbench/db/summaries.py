"""Keeping ``summaries`` (final / best / min / max / count of each metric of a run) current.

A first value starts a summary (:func:`first_value`) and each new step updates it in O(1)
(:func:`append_value`), so logging stays fast however long the history grows; a replay of a step
that already exists recomputes the key from its history (:func:`from_history`), since the
overwritten value may have been the best or the final one. :mod:`sslbench.db.ingest` decides
which applies. "Best" follows :func:`metric_goal`; ties go to
the earliest step; NaN values (stored as NULL) count in ``count`` and ``final`` but never in
best / min / max.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sslbench.db.models import Metric
from sslbench.db.values import metric_goal

FIELDS = ("goal", "final", "final_step", "best", "best_step", "min", "max", "count")


def first_value(key: str, step: int, value: float | None) -> dict[str, Any]:
    """The summary of a series whose only value is ``value`` at ``step``."""
    present = value is not None
    return {"goal": metric_goal(key), "final": value, "final_step": step, "best": value,
            "best_step": step if present else None, "min": value, "max": value, "count": 1}


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

