"""Pure pandas steps shared by the paper reports: per-run cells -> seed statistics -> a wide
stat frame (see :mod:`sslbench.report.render`) -> published values and deltas beside each cell.

No store access and no formatting here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from sslbench.report.labels import family_key, method_key
from sslbench.report.render import PAPER_STATS, STATS, column_labels

#: Row levels with a non-alphabetical order.
_LEVEL_KEYS: dict[str, Callable[[Any], Any]] = {
    "method": method_key, "projector": family_key,
    "probe": lambda p: ({"online": 0, "offline": 1}.get(p, 2), p),
}


def seed_stats(cells: pd.DataFrame, keys: Sequence[str], value: str = "value") -> pd.DataFrame:
    """``keys`` + ``mean``, ``std`` (sample, ddof = 1; NaN for one seed) and ``n`` of ``value``
    over the rows of each group (typically one row per run, i.e. per seed)."""
    stats = cells.groupby(list(keys), dropna=False)[value].agg(mean="mean", std="std",
                                                              n="count")
    return stats.reset_index()


def row_key(levels: Sequence[str]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """Sort key for index tuples: methods and projector families in the paper's order, the
    other levels by value."""
    keys: list[Callable[[Any], Any]] = [_LEVEL_KEYS.get(level, lambda v: (0, v))
                                        for level in levels]
    return lambda row: tuple(k(v) for k, v in zip(keys, row))


def wide(stats: pd.DataFrame, rows: Sequence[str], column: str, *,
         extra_rows: Iterable[tuple[Any, ...]] = (), extra_columns: Iterable[Any] = (),
         column_order: Sequence[Any] | None = None) -> pd.DataFrame:
    """Long stats (``rows`` + ``column`` + mean/std/n) -> a stat frame: index ``rows`` (sorted
    by :func:`row_key`), columns ``(column value, stat)`` (sorted, or the present ones of
    ``column_order`` first in that order); ``extra_rows`` / ``extra_columns`` are added empty
    (n = 0) so that missing cells show."""
    rows = list(rows)
    by_row: dict[tuple[Any, ...], dict[tuple[Any, str], float]] = {}
    for rec in stats.to_dict("records"):
        key = tuple(rec[level] for level in rows)
        by_row.setdefault(key, {}).update({(rec[column], s): rec[s] for s in STATS})
    for key in extra_rows:
        by_row.setdefault(tuple(key), {})
    labels = sorted(set(stats[column]) | set(extra_columns))
    if column_order is not None:
        labels = [c for c in column_order if c in labels] + [
            c for c in labels if c not in column_order]
    columns = pd.MultiIndex.from_product([labels, STATS], names=[column, "stat"])
    ordered = sorted(by_row, key=row_key(rows))
    index = pd.MultiIndex.from_tuples(ordered, names=rows) if ordered else pd.MultiIndex(
        levels=[[]] * len(rows), codes=[[]] * len(rows), names=rows)
    frame = pd.DataFrame([[by_row[r].get(c, math.nan) for c in columns] for r in ordered],
                         index=index, columns=columns, dtype="float64")
    n_columns = [c for c in columns if c[1] == "n"]
    frame[n_columns] = frame[n_columns].fillna(0).astype("int64")
    return frame


def add_paper(frame: pd.DataFrame, lookup: Callable[[tuple[Any, ...], Any], float | None]
              ) -> pd.DataFrame:
    """``frame`` with ``paper`` (``lookup(row key, column label)``, None/NaN when the paper has
    no such cell) and ``delta`` (ours minus paper) beside every cell."""
    labels = column_labels(frame)
    out = frame.copy()
    keys = [k if isinstance(k, tuple) else (k,) for k in frame.index]
    for label in labels:
        paper = [lookup(k, label) for k in keys]
        out[(label, "paper")] = np.array([math.nan if p is None else p for p in paper], float)
        out[(label, "delta")] = out[(label, "mean")] - out[(label, "paper")]
    order = pd.MultiIndex.from_product([labels, (*STATS, *PAPER_STATS)],
                                       names=frame.columns.names)
    return out.reindex(columns=order)


def agreement(frame: pd.DataFrame, tolerance: float) -> dict[str, Any]:
    """How our cells compare with the paper's where both exist: ``compared`` cells,
    ``within`` of them with ``|Δ| <= tolerance``, ``tolerance``, the ``max_abs_delta`` and the
    cell it is at (``at``: row labels and column label), ``mean_delta``."""
    found = []
    for key, row in frame.iterrows():
        for label in column_labels(frame):
            delta = row.get((label, "delta"), math.nan)
            if not math.isnan(delta):
                found.append((float(delta), key, label))
    if not found:
        return {"compared": 0, "within": 0, "tolerance": tolerance}
    deltas = np.array([d for d, _, _ in found])
    worst = max(found, key=lambda item: abs(item[0]))
    at = [str(k) for k in (worst[1] if isinstance(worst[1], tuple) else (worst[1],))]
    return {"compared": len(found), "within": int((np.abs(deltas) <= tolerance).sum()),
            "tolerance": tolerance, "mean_delta": float(deltas.mean()),
            "max_abs_delta": abs(worst[0]), "at": [*at, str(worst[2])]}


def agreement_text(summary: dict[str, Any], unit: str = "points") -> str:
    """One sentence for a caption (``""`` when nothing could be compared)."""
    if not summary.get("compared"):
        return "No cell of ours has a published counterpart."
    return (f"{summary['within']} of {summary['compared']} cells with a published value are "
            f"within ±{summary['tolerance']:g} {unit} of it (mean Δ {summary['mean_delta']:+.2f}"
            f"; largest |Δ| {summary['max_abs_delta']:.2f} at {' / '.join(summary['at'])}).")


def linear_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, float] | None:
    """Least-squares line ``y = slope * x + intercept`` with R² (the squared correlation);
    None when fewer than two points or ``x`` is constant."""
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    if len(xs) < 2 or np.ptp(xs) == 0:
        return None
    dx, dy = xs - xs.mean(), ys - ys.mean()
    slope = float((dx * dy).sum() / (dx * dx).sum())
    intercept = float(ys.mean() - slope * xs.mean())
    ss_res = float(((ys - (slope * xs + intercept)) ** 2).sum())
    ss_tot = float((dy * dy).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return {"slope": slope, "intercept": intercept, "r2": r2, "points": int(len(xs))}
