"""Keeping ``summaries`` (final / best / min / max / count of each metric of a run) current.

A batch of new steps is summarised on its own (:func:`of_values`) and merged with the stored
summary in O(1) (:func:`merge`), so logging stays fast however long the history grows; a replay
of a step that already exists recomputes the key from its history (:func:`from_history`), since
the overwritten value may have been the best or the final one. :mod:`sslbench.db.ingest` decides
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


def of_values(key: str, values: list[tuple[int, float | None]]) -> dict[str, Any]:
    """The summary of a series given as (step, value) pairs in increasing step order (None: a
    NaN, counted in ``count`` and ``final`` but never best / min / max; ties of the best go to
    the earliest step). One pass of C-level min / max, not a dict per value."""
    goal = metric_goal(key)
    final_step, final = values[-1]
    present = [v for _, v in values if v is not None]
    row = {"goal": goal, "final": final, "final_step": final_step, "best": None,
           "best_step": None, "min": None, "max": None, "count": len(values)}
    if present:
        low, high = min(present), max(present)
        best = high if goal == "max" else low
        row.update(min=low, max=high, best=best,
                   best_step=next(step for step, v in values if v == best))
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



def merge(previous: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """The summary of a history followed by values at later steps, from the two summaries
    (``later``'s first step after ``previous``'s ``final_step``): the same as appending those
    values one by one."""
    row = dict(previous, count=previous["count"] + later["count"], final=later["final"],
               final_step=later["final_step"])
    lows = [v for v in (previous["min"], later["min"]) if v is not None]
    highs = [v for v in (previous["max"], later["max"]) if v is not None]
    row["min"], row["max"] = (min(lows) if lows else None), (max(highs) if highs else None)
    best = later["best"]
    if best is not None and (previous["best"] is None or (
            best > previous["best"] if previous["goal"] == "max" else best < previous["best"])):
        row.update(best=best, best_step=later["best_step"])  # a tie keeps the earlier step
    return row
