"""Run listings for ``sslbench runs list`` / ``sslbench runs show``: queries, no formatting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from sslbench.db import Store

#: Metrics shown as columns of ``runs list`` when some run has them.
LIST_METRICS = ("online_top1", "linear_top1", "knn_top1", "loss")
LIST_PARAMS = ("backbone", "projector", "dim", "epochs", "seed")


def runs_list_frame(store: Store, *, limit: int | None = None, offset: int = 0,
                    newest: bool = False, **filters: Any) -> pd.DataFrame:
    """One row per run, oldest first (``limit`` runs from ``offset``, None: all; counted from
    the newest run with ``newest``): id, kind,
    status, method, dataset, the main params, the final value of :data:`LIST_METRICS`, creation
    time and duration (s). Empty columns dropped."""
    frame = store.runs_frame(params=LIST_PARAMS, summaries=LIST_METRICS, limit=limit,
                             offset=offset, newest=newest, **filters)
    out = frame[["run_id", "kind", "status", "method", "dataset", "parent_id"]].copy()
    for key in LIST_PARAMS:
        out[key] = _integers_as_int(frame[f"param.{key}"])
    for key in LIST_METRICS:
        out[key] = frame[f"final.{key}"]
    out["created_at"] = frame["created_at"]
    out["duration_s"] = (frame["ended_at"] - frame["started_at"]).dt.total_seconds()
    keep = [c for c in out.columns if c in ("run_id", "kind", "status") or out[c].notna().any()]
    return out[keep]


def _integers_as_int(column: pd.Series) -> pd.Series:
    """A column of whole numbers with gaps (a run without the param) stays integral (nullable
    Int64) instead of turning float: 16, not 16.00."""
    present = column.dropna()
    if len(present) and all(_whole(v) for v in present):
        return pd.array([None if pd.isna(v) else int(v) for v in column], dtype="Int64")
    return column


def _whole(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and value.is_integer()


def runs_list_json(store: Store, *, limit: int | None = None, offset: int = 0,
                   newest: bool = False, **filters: Any) -> list[dict[str, Any]]:
    """The matching runs (``limit`` from ``offset``, None: all; counted from the newest run
    with ``newest``) as :meth:`RunRecord.to_dict` (config and final summary included)."""
    records = store.find_runs(limit=limit, offset=offset, newest=newest, **filters)
    finals = store.final_summaries([r.run_id for r in records])
    return [r.to_dict(finals.get(r.run_id, {})) for r in records]


def run_show_json(store: Store, run_id: str) -> dict[str, Any]:
    """One run (id or unique prefix) with params, summary stats, artifacts, attempts and the ids
    of its child runs (evaluations)."""
    record = store.get_run(run_id)
    out = record.to_dict(store.summary(record.run_id))
    out["params"] = store.params(record.run_id)
    out["summary_stats"] = store.summary_stats(record.run_id)
    out["artifacts"] = store.artifacts(record.run_id)
    out["attempts"] = store.attempts(record.run_id)
    out["children"] = [r.run_id for r in store.find_runs(parent_id=record.run_id)]
    return out
